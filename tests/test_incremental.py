"""Incremental runs: only new or changed records (by id and content hash) are compressed; unchanged
ones are carried over from the previous output; a different model or option set carries nothing."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lingua2_batch.model.scratch import shipped_corpus_texts
from lingua2_batch.pipeline import InputError, JobConfig, run_job
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import local_job_settings, read_output

pytestmark = pytest.mark.timeout(300)
N, FILES = 400, 4


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
