"""The batch job's throughput on a local Ray cluster next to in-process ``Compressor.compress_batch`` on
the same rows: how much Ray Data's plumbing (serialisation, scheduling, the driver's writer) costs.

``bench_job()`` returns a dict; ``lingua2-batch bench-job`` prints its ``lines`` as JSON lines.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def _corpus(rows: int) -> list[str]:
    from ..model.scratch import shipped_corpus_texts

    texts = shipped_corpus_texts()
    return [texts[i % len(texts)] for i in range(rows)]


def bench_job(rows: int = 360, repeats: int = 1, workdir: str | None = None, files: int = 4,
              model: str | None = None, rate: float = 0.5, num_cpus: int | None = None) -> dict[str, Any]:
    """Time ``compress_batch`` in this process, then the Ray job over the same rows (Parquet on local
    disk, ``files`` input files). Both on CPU with the scratch sentencepiece checkpoint unless ``model``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from ..compressor import Compressor
    from ..model.scratch import build_checkpoint
    from .config import JobConfig
    from .job import run_job

    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="lingua2-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    if model is None:
        model_dir = base / "model"
        if not (model_dir / "config.json").exists():
            build_checkpoint(model_dir, "sentencepiece")
        model = str(model_dir)
    texts = _corpus(rows)
    corpus = base / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir()
    per_file = -(-rows // files)
    for index in range(files):
        part = texts[index * per_file:(index + 1) * per_file]
        ids = [f"r{index * per_file + i}" for i in range(len(part))]
        pq.write_table(pa.table({"id": ids, "text": part}), corpus / f"part-{index:05d}.parquet")

    compressor = Compressor(model, device="cpu")
    compressor.compress_batch(texts[:4], rate=rate)  # warm-up
    in_process = []
    tokens = 0
    for _ in range(repeats):
        started = time.perf_counter()
        results = compressor.compress_batch(texts, rate=rate)
        in_process.append(time.perf_counter() - started)
        tokens = sum(r.origin_tokens for r in results)
    del compressor

    started_ray = time.perf_counter()
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus or os.cpu_count(), logging_level=logging.WARNING)
    ray_start_s = time.perf_counter() - started_ray
    job_times, summaries = [], []
    for attempt in range(repeats):
        output = base / f"out-{attempt}"
        shutil.rmtree(output, ignore_errors=True)
        config = JobConfig.from_mapping({
            "input": str(corpus), "output": str(output), "model": model, "rate": rate, "num_gpus": 0,
            "read_num_cpus": 0.25, "prepare_num_cpus": 0.5, "score_num_cpus": 1, "batch_size": 128,
            "min_replicas": 1, "max_replicas": 1,
        })
        started = time.perf_counter()
        report = run_job(config)
        job_times.append(time.perf_counter() - started)
        summaries.append(report.summary)
    best_in, best_job = min(in_process), min(job_times)
    result = {
        "rows": rows,
        "origin_tokens": tokens,
        "model": model,
        "in_process": {"seconds": best_in, "rows_per_s": rows / best_in, "tokens_per_s": tokens / best_in},
        "ray_job": {"seconds": best_job, "rows_per_s": rows / best_job, "tokens_per_s": tokens / best_job,
                    "ray_init_s": ray_start_s, "replicas": 1, "input_files": files,
                    "rows_written": summaries[-1]["rows"]["written"]},
        "ray_overhead_ratio": best_job / best_in,
    }
    result["lines"] = [
        {"measured": "compress_batch throughput (in process)", "on": f"{rows} rows, {tokens} tokens, CPU",
         "rows_per_s": result["in_process"]["rows_per_s"], "tokens_per_s": result["in_process"]["tokens_per_s"]},
        {"measured": "Ray batch job throughput (local cluster, 1 replica, incl. actor start and writes)",
         "on": f"{rows} rows in {files} Parquet files", "rows_per_s": result["ray_job"]["rows_per_s"],
         "tokens_per_s": result["ray_job"]["tokens_per_s"],
         "reference_rows_per_s": result["in_process"]["rows_per_s"]},
        {"measured": "Ray overhead (job time / in-process time)", "ratio": result["ray_overhead_ratio"]},
    ]
    if workdir is None:
        shutil.rmtree(base, ignore_errors=True)
    return result


def bench_incremental(rows: int = 10_000, files: int = 10, changed_share: float = 0.01,
                      workdir: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """A nightly run's cost: a full run, a rerun with nothing changed, and an incremental rerun after
    ``changed_share`` of the texts changed (spread over every file). One JSON-able line per run."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from ..model.scratch import build_checkpoint, shipped_corpus_texts
    from .config import JobConfig
    from .job import run_job

    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="lingua2-bench-incremental-"))
    shutil.rmtree(base / "in", ignore_errors=True)
    shutil.rmtree(base / "out", ignore_errors=True)
    (base / "in").mkdir(parents=True)
    if model is None:
        model = str(build_checkpoint(base / "model", "sentencepiece"))
    passages = [p.strip() for t in shipped_corpus_texts() for p in t.split("\n\n") if p.strip()]
    texts = [f"Record {i}. {passages[i % len(passages)]}" for i in range(rows)]
    per_file = -(-rows // files)

    def write(corpus: list[str]) -> None:
        for index in range(files):
            part = corpus[index * per_file:(index + 1) * per_file]
            ids = [f"doc-{index * per_file + i:07d}" for i in range(len(part))]
            pq.write_table(pa.table({"id": ids, "text": part}), base / "in" / f"part-{index:03d}.parquet")

    if not ray.is_initialized():
        ray.init(logging_level=logging.WARNING)
    settings = {"input": str(base / "in"), "output": str(base / "out"), "model": model, "rate": 0.5,
                "id_column": "id", "incremental": True, "num_gpus": 0, "read_num_cpus": 0.25,
                "prepare_num_cpus": 0.5, "score_num_cpus": 1}
    lines = []

    def run(label: str) -> None:
        started = time.perf_counter()
        summary = run_job(JobConfig.from_mapping(settings)).summary
        lines.append({"measured": "incremental job run", "run": label, "rows": rows, "files": files,
                      "seconds": round(time.perf_counter() - started, 2), "model_work": summary["model_work"],
                      "rows_written": summary["rows"]["written"], "carried_over": summary["rows"]["carried_over"],
                      "unaccounted": summary["rows"]["unaccounted"]})

    write(texts)
    run("full")
    run("rerun, nothing changed")
    step = max(1, round(1 / changed_share))
    write([text + " (amended)" if i % step == 0 else text for i, text in enumerate(texts)])
    run(f"rerun, {changed_share:.0%} of texts changed")
    return lines
