"""Which columns the job writes (every input column with ``passthrough_columns: ['*']``, the text itself with
``keep_text``) and the overwrite guard (an output made with other options is refused unless ``overwrite``),
on a local Ray."""

from __future__ import annotations

import json
import logging
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lingua2_batch import Compressor
from lingua2_batch.pipeline import InputError, JobConfig, run_job
from lingua2_batch.pipeline.job import plan_run
from lingua2_batch.pipeline.report import load_run, report_html
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import corpus_texts, local_job_settings, make_corpus, read_output

pytestmark = pytest.mark.timeout(300)
N_ROWS = 12
EXTRA = {
    "url": [f"https://example.org/{i}" for i in range(N_ROWS)],
    "title": [f"Title {i}" for i in range(N_ROWS)],
    "metadata": [{"source": "web", "year": 2000 + i} for i in range(N_ROWS)],
}


def _config(**values) -> JobConfig:
    return JobConfig.from_mapping({**local_job_settings, **values})


def test_all_columns_pass_through_and_the_text_is_optional(ray_local, scratch_model, tmp_path):
    texts = corpus_texts(N_ROWS)
    make_corpus(str(tmp_path / "in"), texts, files=2, extra=EXTRA)
    run_job(_config(input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=scratch_model, rate=0.5,
                    passthrough_columns=["*"]))
    table = read_output(str(tmp_path / "out"))
    assert table.column_names[:5] == ["id", "lang", "url", "title", "metadata"]
    assert "text" not in table.column_names
    assert table.column("metadata").to_pylist() == EXTRA["metadata"]
    assert table.schema.field("metadata").type == pa.struct([("source", pa.string()), ("year", pa.int64())])
    assert table.column("url").to_pylist() == EXTRA["url"]

    run_job(_config(input=str(tmp_path / "in"), output=str(tmp_path / "kept"), model=scratch_model, rate=0.5,
                    passthrough_columns="*", keep_text=True))
    kept = read_output(str(tmp_path / "kept"))
    assert kept.column_names[:6] == ["id", "text", "lang", "url", "title", "metadata"]
    assert kept.column("text").to_pylist() == texts
    assert kept.column("compressed_text").to_pylist() == table.column("compressed_text").to_pylist()


def test_all_columns_refuses_an_input_column_named_like_an_output_column(ray_local, scratch_model, tmp_path):
    make_corpus(str(tmp_path / "in"), corpus_texts(4), files=1, extra={"ratio": [1.0] * 4})
    with pytest.raises(InputError, match=r"\['ratio'\].*clash with output columns"):
        run_job(_config(input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=scratch_model,
                        passthrough_columns=["*"]))
    assert not (tmp_path / "out" / "_lease.json").exists()


def test_all_columns_must_be_in_every_file(ray_local, scratch_model, tmp_path):
    make_corpus(str(tmp_path / "in"), corpus_texts(4), files=1, extra={"url": EXTRA["url"][:4]})
    make_corpus(str(tmp_path / "in"), corpus_texts(4), files=1, prefix="second")
    with pytest.raises(InputError, match=r"second-000\.parquet: no pass-through column 'url'"):
        run_job(_config(input=str(tmp_path / "in"), output=str(tmp_path / "out"), model=scratch_model,
                        passthrough_columns=["*"]))


def test_rerun_with_another_rate_needs_overwrite(ray_local, scratch_model, tmp_path, caplog):
    texts = corpus_texts(N_ROWS)
    make_corpus(str(tmp_path / "in"), texts, files=2)
    paths = {"input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "model": scratch_model}
    with caplog.at_level(logging.INFO, logger="lingua2_batch.job"):
        run_job(_config(**paths, rate=0.5))
    # the job names the cluster it runs on: the one this process joined
    joined = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Ray: cluster at ")]
    assert joined and joined[0].startswith(f"Ray: cluster at {ray_local.get_runtime_context().gcs_address} (1 node(s)")
    first = read_output(str(tmp_path / "out"))
    # the same input spelt otherwise is the same input: a rerun with nothing to do, not "another input"
    for spelling in (f"{tmp_path}/in/", f"file://{tmp_path}/in", f"{tmp_path}/./in"):
        rerun = run_job(_config(**{**paths, "input": spelling}, rate=0.5)).summary
        assert rerun["files"]["skipped_already_done"] == 2 and not rerun["model_work"], spelling
    with pytest.raises(InputError, match="--overwrite"):
        run_job(_config(**paths, rate=0.3))
    assert read_output(str(tmp_path / "out")).equals(first)  # refused before anything was written
    assert not (tmp_path / "out" / "_lease.json").exists()

    report = run_job(_config(**paths, rate=0.3, overwrite=True))
    assert report.summary["status"] == "succeeded" and report.summary["rows"]["written"] == N_ROWS
    expected = Compressor(scratch_model).compress_batch(texts, rate=0.3)
    table = read_output(str(tmp_path / "out"))
    assert table.column("compressed_text").to_pylist() == [r.compressed_prompt for r in expected]
    assert table.column("compressed_tokens").to_pylist() == [r.compressed_tokens for r in expected]
    assert table.column("compressed_text").to_pylist() != first.column("compressed_text").to_pylist()
    assert {pq.read_metadata(p).num_rows for p in (tmp_path / "out").rglob("part-*.parquet")} == {N_ROWS // 2}


def test_the_output_says_what_precision_scored_it_and_a_gpu_default_does_not_reuse_cpu_scores(
        ray_local, scratch_model, tmp_path):
    """An unset dtype scores in float32 on CPU replicas and bfloat16 on GPU ones: the plan resolves it before
    the job key, so outputs of one precision are neither reused nor silently replaced by a run in the other,
    and each part's entry and the summary name it."""
    make_corpus(str(tmp_path / "in"), corpus_texts(N_ROWS), files=2)
    paths = {"input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "model": scratch_model}
    report = run_job(_config(**paths))
    assert report.summary["precision"] == "float32"
    entries = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "_manifest").rglob("*.json"))]
    assert len(entries) == 2 and {e["precision"] for e in entries} == {"float32"}

    # GPU replicas (planning needs no GPU): another precision, so another key, refused without --overwrite
    gpu_settings = {**local_job_settings, **paths, "num_gpus": None, "device": "cuda"}
    with pytest.raises(InputError, match="scored in float32, this run would score in bfloat16-mixed"):
        plan_run(JobConfig.from_mapping(gpu_settings))
    assert not (tmp_path / "out" / "_lease.json").exists()
    plan, lease = plan_run(JobConfig.from_mapping({**gpu_settings, "overwrite": True}))
    lease.release()
    assert (plan.scoring_dtype, plan.replica_gpus) == ("bfloat16", 1.0) and not plan.done

    # neither num_gpus nor device set: the plan asks the cluster (this one has no GPUs), and the output is current
    plan, lease = plan_run(JobConfig.from_mapping({**gpu_settings, "device": None}))
    lease.release()
    assert (plan.scoring_dtype, plan.replica_gpus, plan.todo) == ("float32", 0.0, [])
    assert plan.gcs_address == ray_local.get_runtime_context().gcs_address

    # a reduced precision asked for on CPU replicas reaches them, and the output says so
    report = run_job(_config(**paths, dtype="bf16", overwrite=True))
    assert report.summary["precision"] == "bfloat16-mixed"
    assert "<tr><th>precision</th><td>bfloat16-mixed</td></tr>" in report_html(load_run(str(tmp_path / "out")))
    expected = Compressor(scratch_model, dtype="bfloat16").compress_batch(corpus_texts(N_ROWS), rate=0.5)
    assert read_output(str(tmp_path / "out")).column("compressed_text").to_pylist() == \
        [r.compressed_prompt for r in expected]


def test_the_cluster_check_waits_only_for_what_more_nodes_could_fix(ray_local, scratch_model, tmp_path):
    """A replica bigger than the cluster may fit once an autoscaler adds nodes: the job waits
    ``wait_for_resources_s`` for it. A precision that cannot run where the replicas will (float16 on this
    GPU-less cluster's CPU replicas) is refused at once, whatever the wait allows."""
    from lingua2_batch.pipeline.preflight import PreflightError

    make_corpus(str(tmp_path / "in"), corpus_texts(4), files=1)
    paths = {"input": str(tmp_path / "in"), "model": scratch_model}
    started = time.monotonic()
    with pytest.raises(PreflightError, match="float16 needs GPUs"):
        run_job(_config(**paths, output=str(tmp_path / "a"), num_gpus=None, dtype="float16", wait_for_resources_s=120))
    assert time.monotonic() - started < 60  # not the 120 s wait
    started = time.monotonic()
    with pytest.raises(PreflightError, match="asks for 64 CPUs"):
        run_job(_config(**paths, output=str(tmp_path / "b"), score_num_cpus=64, wait_for_resources_s=3))
    assert time.monotonic() - started >= 3  # it waited for nodes that never came
    for output in ("a", "b"):
        assert not (tmp_path / output / "_SUCCESS").exists() and not (tmp_path / output / "_lease.json").exists()
