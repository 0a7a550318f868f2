"""Incremental runs: only new or changed records (by id and content hash) are compressed; unchanged
ones are carried over from the previous output; a different model or option set carries nothing."""

from __future__ import annotations

import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray import cloudpickle as ray_cloudpickle

from lingua2_batch.model.scratch import shipped_corpus_texts
from lingua2_batch.pipeline import InputError, JobConfig, run_job
from lingua2_batch.pipeline.stages import Replica
from lingua2_batch.pipeline.summary_text import format_summary
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import local_job_settings, read_output

pytestmark = pytest.mark.timeout(300)
N, FILES = 400, 4


class RefusingReplica(Replica):
    """Fails every unit sent to it to score."""

    def score(self, context, records_to_score):
        raise RuntimeError(f"a replica was sent {len(records_to_score.rows)} records to score")


ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import the tests package


def short_texts(n: int) -> list[str]:
    paragraphs = [p.strip() for t in shipped_corpus_texts() for p in t.split("\n\n") if len(p.strip()) > 40]
    return [f"Item {i}: {paragraphs[i % len(paragraphs)][:400]}" for i in range(n)]


def write(folder, ids, texts):
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(ids) // FILES)
    for k in range(FILES):
        pq.write_table(pa.table({"id": ids[k * per:(k + 1) * per], "text": texts[k * per:(k + 1) * per]}),
                       folder / f"part-{k}.parquet")


def config(tmp_path, output, **values):
    return JobConfig.from_mapping({**local_job_settings, "batch_size": 32, "prepare_batch_size": 64,
                                   "input": str(tmp_path / "in"), "output": str(output),
                                   "model": values.pop("model"), "rate": 0.5, **values})


def test_incremental_run_compresses_only_new_and_changed(ray_local, scratch_model, tmp_path):
    ids = [f"id{i:05d}" for i in range(N)]
    texts = short_texts(N)
    write(tmp_path / "in", ids, texts)
    first = run_job(config(tmp_path, tmp_path / "out", model=scratch_model, incremental=True))
    assert first.summary["rows"]["carried_over"] == 0 and first.summary["rows"]["written"] == N

    # 1% of records change (all in the last file), 4 new records are appended to that file
    changed = [N - 1, N - 5, N - 9, N - 13]
    for i in changed:
        texts[i] = texts[i] + " (revised)"
    ids += [f"new{i}" for i in range(4)]
    texts += [f"A brand new record number {i}. It talks about the budget." for i in range(4)]
    per = -(-N // FILES)
    last = slice((FILES - 1) * per, None)
    pq.write_table(pa.table({"id": ids[last], "text": texts[last]}), tmp_path / "in" / f"part-{FILES - 1}.parquet")

    second = run_job(config(tmp_path, tmp_path / "out", model=scratch_model, incremental=True))
    rows = second.summary["rows"]
    assert second.summary["files"]["skipped_already_done"] == FILES - 1
    assert rows["written"] == N + 4 and rows["unaccounted"] == 0
    assert rows["processed_this_run"] == per + 4
    assert rows["carried_over"] == per - len(changed)  # the rest of the last file was not rescored
    assert rows["compressed_this_run"] == len(changed) + 4  # what the model did; the summary line says it
    assert f"({len(changed) + 4} compressed this run, {per - len(changed)} carried over)" in \
        format_summary(second.summary)

    fresh = run_job(config(tmp_path, tmp_path / "fresh", model=scratch_model))
    assert fresh.summary["rows"]["carried_over"] == 0
    incremental_table, fresh_table = read_output(str(tmp_path / "out")), read_output(str(tmp_path / "fresh"))
    for column in ("id", "compressed_text", "origin_tokens", "compressed_tokens", "ratio", "n_chunks", "content_hash"):
        assert incremental_table.column(column).to_pylist() == fresh_table.column(column).to_pylist(), column

    # into a new prefix, from the previous one: every unchanged record carried over
    third = run_job(config(tmp_path, tmp_path / "out3", model=scratch_model, previous=str(tmp_path / "out")))
    assert third.summary["rows"]["carried_over"] == N + 4
    assert read_output(str(tmp_path / "out3")).column("compressed_text").to_pylist() == \
        fresh_table.column("compressed_text").to_pylist()

    # a different option is refused over this output unless asked, then invalidates the carry-over (and the skip)
    with pytest.raises(InputError, match="--overwrite"):
        run_job(config(tmp_path, tmp_path / "out", model=scratch_model, incremental=True, rate=0.3))
    other = run_job(config(tmp_path, tmp_path / "out", model=scratch_model, incremental=True, rate=0.3,
                           overwrite=True))
    assert other.summary["rows"]["carried_over"] == 0
    assert other.summary["files"]["skipped_already_done"] == 0
    assert other.summary["rows"]["processed_this_run"] == N + 4


def test_a_rerun_of_rewritten_unchanged_files_sends_nothing_to_a_replica(ray_local, scratch_model, tmp_path):
    """A nightly export that rewrites every file with the same records: every unit is to do (the files
    changed), every row is carried over, and no unit needs a replica (the replicas here refuse to score)."""
    ids, texts = [f"id{i:05d}" for i in range(40)], short_texts(40)
    write(tmp_path / "in", ids, texts)
    run_job(config(tmp_path, tmp_path / "out", model=scratch_model, incremental=True))
    before = read_output(str(tmp_path / "out"))
    for name in os.listdir(tmp_path / "in"):  # the same rows, written again: the files' fingerprints change
        pq.write_table(pq.read_table(tmp_path / "in" / name), tmp_path / "in" / name, compression="gzip")
    rerun = run_job(config(tmp_path, tmp_path / "out", model=scratch_model, incremental=True),
                    replica_class=RefusingReplica)
    assert rerun.summary["files"]["processed_this_run"] == FILES
    assert rerun.summary["rows"]["carried_over"] == 40 and rerun.summary["rows"]["processed_this_run"] == 40
    assert rerun.summary["rows"]["errored"] == 0
    assert read_output(str(tmp_path / "out")).to_pylist() == before.to_pylist()


def _snapshot(folder) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_a_dry_run_says_what_a_run_would_do_and_writes_nothing(ray_local, scratch_model, tmp_path, capsys):
    import json

    from lingua2_batch.cli import main
    from lingua2_batch.pipeline.lease import Lease
    from lingua2_batch.storage.fs import resolve

    ids, texts = [f"id{i:05d}" for i in range(40)], short_texts(40)
    write(tmp_path / "in", ids, texts)  # four files of ten rows
    output = tmp_path / "out"
    run_job(config(tmp_path, output, model=scratch_model))
    changed = ["A changed first record. " + texts[0]] + texts[1:10]
    pq.write_table(pa.table({"id": ids[:10], "text": changed}), tmp_path / "in" / "part-0.parquet")
    (tmp_path / "in" / "part-3.parquet").unlink()  # part-3 is gone; part-1 and part-2 are as they were
    pq.write_table(pa.table({"id": ["new0", "new1"], "text": texts[:2]}), tmp_path / "in" / "part-9.parquet")
    before = _snapshot(output)
    arguments = ["compress", "--input", str(tmp_path / "in"), "--output", str(output), "--model", scratch_model,
                 "--rate", "0.5", "--num-gpus", "0", "--dry-run"]
    assert main(arguments + ["--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["units"] == {"total": 4, "current": 2, "to_compress": 2}  # part-0 (changed), part-9 (new)
    assert plan["files"] == {"total": 4, "to_compress": 2, "skipped_inputs": 0}
    assert plan["rows"] == {"total": 32, "to_compress": 12}
    assert plan["parts_to_retire"] == 1 and plan["precision"] == "float32"  # part-3's
    assert (plan["replicas_to_start"], plan["gpus_per_replica"]) == (1, 0.0)  # max_replicas 1
    assert plan["lease"] is None and plan["files_with_previous_parts"] is None
    assert _snapshot(output) == before  # nothing written: no lease, no summary, no staging

    # the text form, with another run holding the lease; an option change is refused as a run would be
    holder = Lease(resolve(str(output)), "other-run", ttl_s=60, io_deadline_s=10)
    holder.acquire()
    try:
        assert main(arguments) == 0
        text = capsys.readouterr().out
        assert text.startswith("dry run: nothing was written") and "held by run other-run" in text
        assert "a run now would be refused" in text
        assert main(arguments + ["--break-lease"]) == 0
        assert "--break-lease: a run now would take it over" in capsys.readouterr().out
        assert main(arguments + ["--incremental", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["files_with_previous_parts"] == 3  # not part-3's: it is gone
        assert "2 units current, 2 to compress (12 rows in 2 files), 1 parts to retire" in text
        assert "1 scoring replica to start (0 GPU each)" in text
        assert main(arguments[:-4] + ["0.3", "--num-gpus", "0", "--dry-run"]) == 2
        assert "--overwrite" in capsys.readouterr().err
    finally:
        holder.release()
    assert _snapshot(output) == before
    # and a run does what the dry run said
    summary = run_job(config(tmp_path, output, model=scratch_model)).summary
    assert (summary["units"]["processed_this_run"], summary["rows"]["processed_this_run"]) == (2, 12)
    assert summary["units"]["skipped_already_done"] == 2 and summary["rows"]["written"] == 32
    assert summary["parts_retired"] == 1
    # a rerun whose only work is retiring the parts of a deleted input says so: it is no "nothing to do"
    (tmp_path / "in" / "part-9.parquet").unlink()
    summary = run_job(config(tmp_path, output, model=scratch_model)).summary
    assert (summary["parts_retired"], summary["model_work"], summary["rows"]["written"]) == (1, False, 30)
    assert "retired     1 parts of inputs that are gone" in format_summary(summary)
