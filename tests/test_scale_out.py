"""Scale-out: units of work cut from row groups, scored by several replicas, committed exactly once by the
workers; the duplicate-id check spread over many files and buckets without ids on the driver."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from ray import cloudpickle as ray_cloudpickle

from lingua2_batch import Compressor
from lingua2_batch.pipeline import InputError, JobConfig, JobError, run_job
from lingua2_batch.pipeline import idcheck, stages
from lingua2_batch.pipeline.job import plan_run, worker_context
from lingua2_batch.pipeline.lease import Lease
from lingua2_batch.pipeline.stages import Replica
from lingua2_batch.storage.fs import resolve
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import SlowReplica, corpus_texts, local_job_settings, read_output

pytestmark = pytest.mark.timeout(600)
N_ROWS = 32


class RecordingReplica(SlowReplica):
    """Notes which replica process scored each unit (in a folder named by the test). Scoring waits until
    both replicas have a unit, so that a fast first one cannot take every unit before the driver has seen
    the second ready (start-up times vary, and a loaded machine stretches them): the first one's calls hold
    its share of units in flight, so the next unit can only go to the second."""

    DELAY_S = 0.2

    def __init__(self, context, use_gpu):
        super().__init__(context, use_gpu)
        self.folder = Path(context.config.output).parent / "scored-by"
        self.folder.mkdir(exist_ok=True)

    def score(self, context, records_to_score):
        (self.folder / f"scoring-{os.getpid()}").touch()
        deadline = time.monotonic() + 120
        while len(list(self.folder.glob("scoring-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        table = super().score(context, records_to_score)
        (self.folder / f"{os.getpid()}-{uuid.uuid4().hex}").touch()
        return table


ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import the tests package


def _big_file(tmp_path) -> list[str]:
    """``in/big.parquet``: N_ROWS records in row groups of 4 (so units of 8 rows cut it into 4). Returns its texts."""
    texts = corpus_texts(N_ROWS)
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [f"r{i:03d}" for i in range(N_ROWS)], "text": texts}), tmp_path / "in" / "big.parquet",
                   row_group_size=4)
    return texts


def _assert_output_is_in_process_compression(tmp_path, model, texts) -> None:
    """The job's output holds every row of ``big.parquet`` once, in order, compressed as in process."""
    table = read_output(str(tmp_path / "out"))
    assert table.column("id").to_pylist() == [f"r{i:03d}" for i in range(N_ROWS)]
    expected = Compressor(model).compress_batch(texts, rate=0.5)
    assert table.column("compressed_text").to_pylist() == [r.compressed_prompt for r in expected]


def _settings(tmp_path, model, **values):
    return {**local_job_settings, "input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "model": model,
            "rate": 0.5, "score_num_cpus": 0.25, "prepare_num_cpus": 0.25, **values}


@pytest.mark.parametrize("prepare_in", ["tasks", "replica"])
def test_a_big_file_is_cut_into_units_scored_by_two_replicas_and_committed_once(ray_local, scratch_model, tmp_path,
                                                                                prepare_in):
    texts = _big_file(tmp_path)
    config = JobConfig.from_mapping(_settings(tmp_path, scratch_model, unit_rows=8, min_replicas=2, max_replicas=2,
                                              prepare_in=prepare_in))
    report = run_job(config, replica_class=RecordingReplica)
    assert report.summary["units"]["total"] == 4 and report.summary["units"]["committed"] == 4
    parts = sorted(p.name for p in (tmp_path / "out" / "big").iterdir())
    assert parts == [f"part-{i:05d}.parquet" for i in range(4)]
    assert [pq.ParquetFile(tmp_path / "out" / "big" / p).metadata.num_rows for p in parts] == [8, 8, 8, 8]
    scorers = {name.split("-")[0] for name in os.listdir(tmp_path / "scored-by") if not name.startswith("scoring-")}
    assert len(scorers) == 2, "both replicas should have scored units"
    _assert_output_is_in_process_compression(tmp_path, scratch_model, texts)


class StartRecordingReplica(Replica):
    """Notes each replica's start (in a folder named by the test)."""

    def __init__(self, context, use_gpu):
        super().__init__(context, use_gpu)
        folder = Path(context.config.output).parent / "started"
        folder.mkdir(exist_ok=True)
        (folder / uuid.uuid4().hex).touch()


def test_no_more_replicas_start_than_there_are_units_to_score(ray_local, scratch_model, tmp_path):
    texts = _big_file(tmp_path)
    # one unit of work: one replica, although three are allowed and two are required
    config = JobConfig.from_mapping(_settings(tmp_path, scratch_model, unit_rows=N_ROWS, min_replicas=2,
                                              max_replicas=3))
    report = run_job(config, replica_class=StartRecordingReplica)
    assert report.summary["units"]["total"] == 1 and report.summary["replicas_started"] == 1
    time.sleep(1.0)  # a replica Ray was still starting would have noted its start by now
    assert len(os.listdir(tmp_path / "started")) == 1
    assert len(report.summary["replicas_ready_s"]) == 1
    _assert_output_is_in_process_compression(tmp_path, scratch_model, texts)


class OverlapRecordingReplica(Replica):
    """Notes, per scoring call, how many of this replica's calls were running at once (in a folder named by
    the test). A call waits a little for a second one to start, so that overlap does not hang on timing."""

    def __init__(self, context, use_gpu):
        super().__init__(context, use_gpu)
        self.folder = Path(context.config.output).parent / "overlap"
        self.folder.mkdir(exist_ok=True)
        self.lock, self.running = threading.Lock(), 0

    def score(self, context, records_to_score):
        with self.lock:
            self.running += 1
        deadline = time.monotonic() + 10
        while self.running < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        (self.folder / f"{self.running}-{uuid.uuid4().hex}").touch()
        try:
            return super().score(context, records_to_score)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("prepare_in", ["tasks", "replica"])
def test_a_replica_works_on_two_units_at_once(ray_local, scratch_model, tmp_path, prepare_in):
    """``replica_concurrency: 2``: one replica, a threaded actor, scores two
    units side by side, and the output is still the core's, record for record."""
    texts = _big_file(tmp_path)
    config = JobConfig.from_mapping(_settings(tmp_path, scratch_model, unit_rows=8, replica_concurrency=2,
                                              prepare_in=prepare_in))
    report = run_job(config, replica_class=OverlapRecordingReplica)
    assert report.summary["units"]["committed"] == 4
    side_by_side = [int(name.split("-")[0]) for name in os.listdir(tmp_path / "overlap")]
    assert len(side_by_side) == 4 and max(side_by_side) == 2, side_by_side
    _assert_output_is_in_process_compression(tmp_path, scratch_model, texts)


class ThreadRecordingReplica(OverlapRecordingReplica):
    """Also notes the torch threads each scoring call runs with."""

    def score(self, context, records_to_score):
        (self.folder / f"threads-{torch.get_num_threads()}").touch()
        return super().score(context, records_to_score)


def test_a_replica_of_two_cpus_works_on_two_units_at_once_on_a_core_each(ray_local, scratch_model, tmp_path):
    """Left unset, ``replica_concurrency`` is 2 for a CPU replica of two CPUs: it scores two units side by side,
    each forward pass on one of its cores (torch threads split, not oversubscribed), output unchanged."""
    texts = _big_file(tmp_path)
    # the replica holds both of the cluster's CPUs; the id check and commits run beside it on none
    config = JobConfig.from_mapping(_settings(tmp_path, scratch_model, unit_rows=8, prepare_in="replica",
                                              score_num_cpus=2, prepare_num_cpus=0, read_num_cpus=0))
    assert config.replica_concurrency is None
    report = run_job(config, replica_class=ThreadRecordingReplica)
    assert report.summary["units"]["committed"] == 4
    names = os.listdir(tmp_path / "overlap")
    assert {n for n in names if n.startswith("threads-")} == {"threads-1"}, names
    assert max(int(n.split("-")[0]) for n in names if not n.startswith("threads-")) == 2, names
    _assert_output_is_in_process_compression(tmp_path, scratch_model, texts)


@pytest.mark.parametrize("cpus, device, configured, expected", [
    (1.0, "cpu", None, 1), (0.25, "cpu", None, 1), (2.0, "cpu", None, 2), (8.0, "cpu", None, 2),
    (1.0, "cuda", None, 2), (8.0, "cpu", 1, 1), (1.0, "cpu", 3, 3),
])
def test_replica_concurrency_default_overlaps_where_there_is_something_to_overlap(cpus, device, configured, expected):
    config = JobConfig.from_mapping({"input": "in", "output": "out", "model": "m", "score_num_cpus": cpus,
                                     "replica_concurrency": configured})
    assert stages.replica_concurrency(config, device) == expected


@contextlib.contextmanager
def _one_scored_unit(tmp_path, model):
    """An 8-record input of one unit, planned (its lease held until the block ends), prepared and scored in
    this process: what a commit task receives, as (config, context, unit, rows, results)."""
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(8)], "text": corpus_texts(8)}),
                   tmp_path / "in" / "a.parquet")
    config = JobConfig.from_mapping(_settings(tmp_path, model))
    plan, lease = plan_run(config)
    try:
        context, unit = worker_context(plan), plan.units[0]
        rows, prepared = stages.prepare_unit(context, unit, None)
        yield config, context, unit, rows, stages.Replica(context, False).score(context, prepared)
    finally:
        lease.release()


def test_a_unit_committed_twice_leaves_one_part(ray_local, scratch_model, tmp_path):
    """A duplicated or retried commit task (its worker died after the copy, a speculative copy ran): the part's
    name is the unit's, so the second commit replaces the first with the same rows."""
    import ray

    with _one_scored_unit(tmp_path, scratch_model) as (config, context, unit, rows, results):
        commit = ray.remote(stages.commit_unit)
        entries = ray.get([commit.remote(context, unit, rows, results) for _ in range(3)])  # three at once
    assert {e["output"] for e in entries} == {"a/part-00000.parquet"}
    files = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == ["_lease.json.lock", "_manifest/a/part-00000.json", "a/part-00000.parquet"]
    assert pq.read_table(tmp_path / "out" / "a" / "part-00000.parquet").num_rows == 8
    # and the job, run now, finds the unit done and commits the job without model work
    report = run_job(config)
    assert report.summary["model_work"] is False and report.summary["rows"]["written"] == 8


def test_a_commit_task_of_a_run_that_lost_the_lease_writes_nothing(ray_local, scratch_model, tmp_path):
    """Another run took the lease over (this one's heartbeats had failed for a whole TTL): this run's commit
    tasks, still running, must not put parts or entries into the output the other run now writes."""
    with _one_scored_unit(tmp_path, scratch_model) as (config, context, unit, rows, results):
        breaker = Lease(resolve(config.output), "breaking-run", 60.0, io_deadline_s=10)
        breaker.acquire(break_lease=True)
        try:
            with pytest.raises(JobError, match=f"run {context.run_id} lost the lease .* to breaking-run"):
                stages.commit_unit(context, unit, rows, results)
        finally:
            breaker.release()
    assert [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()] == ["_lease.json.lock"]


def test_a_part_is_moved_into_place_only_if_the_check_after_its_upload_passes(tmp_path):
    """The lease check runs between the part's upload to staging (the long step) and its move into place
    (a rename, or a server-side copy): a lease lost during the upload stops the move and the staged file goes."""
    from lingua2_batch.pipeline.output import write_part

    output = resolve(str(tmp_path / "out"))
    table = pa.table({"id": ["r0", "r1"]})
    seen_staged: list[list[str]] = []

    def lease_lost_meanwhile() -> None:
        seen_staged.append([p.name for p in (tmp_path / "out" / "_staging").rglob("*") if p.is_file()])
        raise JobError("lost the lease")

    with pytest.raises(JobError, match="lost the lease"):
        write_part(output, "run-1", "a/part-00000.parquet", table, 10, before_move=lease_lost_meanwhile)
    assert len(seen_staged) == 1 and len(seen_staged[0]) == 1  # checked once, the upload done
    assert [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
    final = write_part(output, "run-1", "a/part-00000.parquet", table, 10)
    assert pq.read_table(final).column("id").to_pylist() == ["r0", "r1"]


def _commit_then_die_once(context, unit, rows, scored, marker):
    """``commit_unit`` whose worker process dies the first time, after the part is committed and before its
    manifest entry is written (the worst moment); Ray retries the task in a new worker."""
    real = stages.write_part

    def write_then_die(*args, **kwargs):
        final = real(*args, **kwargs)
        if not os.path.exists(marker):
            Path(marker).touch()
            os._exit(1)
        return final

    stages.write_part = write_then_die
    try:
        return stages.commit_unit(context, unit, rows, scored)
    finally:
        stages.write_part = real


def test_a_commit_whose_worker_dies_is_retried_into_one_part(ray_local, scratch_model, tmp_path):
    import ray

    with _one_scored_unit(tmp_path, scratch_model) as (config, context, unit, rows, results):
        commit = ray.remote(_commit_then_die_once).options(max_retries=2)
        entry = ray.get(commit.remote(context, unit, rows, results, str(tmp_path / "died")))
    assert (tmp_path / "died").exists(), "the first attempt's worker should have died"
    assert entry["output"] == "a/part-00000.parquet" and entry["rows"] == 8
    files = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")
                   if p.is_file() and "_staging" not in p.parts)
    assert files == ["_lease.json.lock", "_manifest/a/part-00000.json", "a/part-00000.parquet"]
    report = run_job(config)  # the job finds the unit committed once, and clears the dead attempt's staging
    assert report.summary["model_work"] is False and report.summary["rows"]["written"] == 8
    assert read_output(str(tmp_path / "out")).column("id").to_pylist() == [f"r{i}" for i in range(8)]
    assert not (tmp_path / "out" / "_staging").exists() or not any((tmp_path / "out" / "_staging").rglob("*.parquet"))


def test_duplicate_ids_across_many_files_and_buckets(ray_local, scratch_model, tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    for k in range(12):
        ids = [f"id-{k}-{i}" for i in range(5)] + (["shared-7"] if k in (3, 9) else [])
        pq.write_table(pa.table({"id": ids, "text": ["Some words to compress here."] * len(ids)}),
                       tmp_path / "in" / f"f{k:02d}.parquet")
    monkeypatch.setattr(idcheck, "_IDS_PER_BUCKET", 7)  # ~9 buckets: the repeated id meets itself across tasks
    monkeypatch.setattr(idcheck, "_IDS_PER_READ_TASK", 12)  # files 3 and 9 are read by different tasks
    with pytest.raises(InputError, match="1 ids appear more than once.*'shared-7'"):
        run_job(JobConfig.from_mapping(_settings(tmp_path, scratch_model)))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.parquet"))


class CountingReplica(stages.Replica):
    """Notes how many records each scoring call was given, and which columns came with them."""

    def score(self, context, records_to_score):
        folder = Path(context.config.output).parent / "scored-records"
        folder.mkdir(exist_ok=True)
        (folder / uuid.uuid4().hex).write_text(f"{type(records_to_score).__name__} {len(records_to_score.items)}")
        return super().score(context, records_to_score)


@pytest.mark.parametrize("prepare_in", ["tasks", "replica"])
def test_carried_records_and_pass_through_columns_never_reach_a_replica(ray_local, scratch_model, tmp_path, prepare_in):
    """An incremental rerun after one text changed: the replica scores that one record only; the unit's
    other rows (their ids, a pass-through column, the carried results) go from prepare to commit around it
    (with ``prepare_in: replica`` the replica reads them, but scores and returns only the changed one), and
    the unit with no changed record reaches no replica at all when a task prepares it."""
    texts = corpus_texts(16)
    ids = [f"r{i:02d}" for i in range(16)]
    payload = [os.urandom(256) for _ in range(16)]
    (tmp_path / "in").mkdir()

    def write(values):
        pq.write_table(pa.table({"id": ids, "text": values, "payload": payload}), tmp_path / "in" / "a.parquet",
                       row_group_size=8)

    write(texts)
    config = JobConfig.from_mapping(_settings(tmp_path, scratch_model, unit_rows=8, incremental=True,
                                              passthrough_columns=["payload"], prepare_in=prepare_in))
    run_job(config, replica_class=CountingReplica)
    before = read_output(str(tmp_path / "out"))
    shutil.rmtree(tmp_path / "scored-records")
    texts[11] = texts[11] + " A sentence added since."
    write(texts)
    report = run_job(config, replica_class=CountingReplica)
    calls = sorted(p.read_text() for p in (tmp_path / "scored-records").iterdir())
    # one unit had nothing to score: prepared by a task, it goes straight to its commit; a replica that
    # prepares its own units is called for it and scores nothing
    assert calls == (["PreparedRecords 1"] if prepare_in == "tasks" else ["PreparedRecords 0", "PreparedRecords 1"])
    assert report.summary["rows"]["carried_over"] == 15
    after = read_output(str(tmp_path / "out"))
    assert after.column("id").to_pylist() == ids and after.column("payload").to_pylist() == payload
    fresh = Compressor(scratch_model).compress_batch([texts[11]], rate=0.5)[0].compressed_prompt
    expected = before.column("compressed_text").to_pylist()
    expected[11] = fresh
    assert after.column("compressed_text").to_pylist() == expected
    assert after.column("error").null_count == 16
