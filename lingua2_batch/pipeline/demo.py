"""``lingua2-batch demo``: the whole batch job on this machine, offline, in about a minute.

Builds the scratch sentencepiece checkpoint (random weights, tokenizer trained on the shipped corpus)
into a cache folder if it is not there, writes the shipped corpus as a small Parquet dataset (3 files),
runs the compress job on local folders with a local Ray of its own (never a running cluster), prints the
summary (text, or JSON with ``--json``) and writes the run report (``_report.html``) next to the output.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

PUBLISHED = ("microsoft/llmlingua-2-xlm-roberta-large-meetingbank",
             "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank")


def demo_dir(workdir: str | None) -> Path:
    if workdir:
        return Path(workdir).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "lingua2_batch" / "demo"


def write_demo_corpus(folder: Path, files: int = 3) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..model.scratch import CORPUS_DIR, shipped_corpus_texts

    texts = shipped_corpus_texts()
    names = [p.stem for p in sorted(CORPUS_DIR.glob("*.txt"))]
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(texts) // files)
    for index in range(files):
        chunk = slice(index * per_file, (index + 1) * per_file)
        table = pa.table({"id": names[chunk], "text": texts[chunk],
                          "source": ["lingua2_batch/data/corpus"] * len(texts[chunk])})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        path = folder / f"part-{index:05d}.parquet"
        # an unchanged file keeps its modification time, so a rerun with --keep-output has nothing to do
        if not path.exists() or path.read_bytes() != buffer.getvalue():
            path.write_bytes(buffer.getvalue())
    return len(texts)


def ensure_scratch_model(folder: Path) -> Path:
    from ..model.scratch import build_checkpoint

    if not (folder / "config.json").exists():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        build_checkpoint(partial, "sentencepiece")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    return folder


def run_demo(workdir: str | None = None, keep_output: bool = False, as_json: bool = False) -> int:
    from .config import JobConfig
    from .job import JobError, run_job
    from .report import render_report
    from .summary_text import format_summary

    base = demo_dir(workdir)
    model = ensure_scratch_model(base / "model-scratch-sentencepiece")
    corpus, output = base / "corpus", base / "compressed"
    rows = write_demo_corpus(corpus)
    if not keep_output:
        shutil.rmtree(output, ignore_errors=True)
    say = lambda text: print(text, file=sys.stderr)  # noqa: E731 - the summary alone goes to stdout
    say(f"lingua2-batch demo: model = scratch checkpoint at {model}")
    say("  (random weights, tokenizer trained on the shipped corpus: it shows the job working end to end,")
    say("   its choice of words to keep is NOT meaningful; no hub access is needed)")
    say(f"  corpus = {rows} shipped documents as Parquet in {corpus}; output -> {output}")
    config = JobConfig.from_mapping({
        "input": str(corpus), "output": str(output), "model": str(model), "rate": 0.5,
        "passthrough_columns": ["source"], "num_gpus": 0, "read_num_cpus": 0.25, "prepare_num_cpus": 0.5,
        "score_num_cpus": 0.5, "batch_size": 8,
        "ray_address": "local",  # its own Ray, whatever clusters run here (a demo must not land on them)
    })
    try:
        report = run_job(config)
    except JobError as error:
        say(f"lingua2-batch demo: the job failed: {error}")
        return 1
    html_report = render_report(str(output))
    print(json.dumps(report.summary, indent=2, default=str) if as_json else format_summary(report.summary, html_report))
    say("For real compression, point the same job at a published checkpoint (a hub id, a local copy, or an")
    say("s3:// prefix for air-gapped clusters), e.g.:")
    say(f"  lingua2-batch compress --input {corpus} --output <out> --model {PUBLISHED[0]}")
    say(f"  (or --model {PUBLISHED[1]}; add --compat llmlingua for llmlingua 0.2.2's exact output)")
    return 0 if report.unaccounted == 0 else 1
