"""Faults on a real local multi-node Ray cluster (``ray.cluster_utils.Cluster``: several raylets on this
machine, as Ray's own tests do) with the S3 test server: a scoring replica killed mid-batch, a worker
node lost mid-job, the S3 endpoint down for a while, the driver killed and the job rerun. After each,
every input row is in the output exactly once. Also: a GPU node the cluster lacks is asked of the autoscaler.

Every fault case reads its corpus from, and writes its output to, the S3 test server.
Scoring is slowed down (``SlowReplica``, a test subclass of the scoring replica) so that faults land mid-job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lingua2_batch.pipeline import JobConfig, run_job
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import (
    SlowReplica, corpus_texts, local_job_settings, make_corpus, read_output, start_multinode_cluster,
)

pytestmark = pytest.mark.timeout(400)
REPO = Path(__file__).resolve().parents[1]
N_ROWS = 40


@pytest.fixture(scope="module")
def cluster(s3_server):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    cluster, worker = start_multinode_cluster(head_cpus=1, worker_cpus=2)
    ray.init(address=cluster.address, logging_level="WARNING")
    yield {"cluster": cluster, "worker": worker}
    ray.shutdown()
    cluster.shutdown()


def _settings(**values):
    # small units, so that each file is several units and faults land between unit commits
    return {**local_job_settings, "batch_size": 4, "prepare_batch_size": 4, "max_task_retries": 10, "unit_rows": 4,
            **values}


def _check_every_row_once(table, n=N_ROWS):
    ids = table.column("id").to_pylist()
    assert len(ids) == n and sorted(ids) == [f"doc-{i:06d}" for i in range(n)]
    assert table.column("error").null_count == n


def _wait_for(predicate, timeout=120, interval=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def _committed_units(fs, output: str) -> int:
    """Units whose part the job has committed so far (entries under ``_manifest/`` on S3)."""
    fs.invalidate_cache()
    manifest = f"{output}/_manifest"
    return len([p for p in fs.find(manifest) if p.endswith(".json")]) if fs.exists(manifest) else 0


def _parts(fs, output: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(p for p in fs.find(output) if p.endswith(".parquet") and "/_" not in p[len(output):])


def _in_thread(config):
    outcome = {}

    def target():
        try:
            outcome["report"] = run_job(config, replica_class=SlowReplica)
        except BaseException as error:  # noqa: BLE001
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _score_actor_pids():
    from ray.util.state import list_actors

    return [a.pid for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
            if "SlowReplica" in (a.class_name or "") and a.pid]


@pytest.mark.parametrize("prepare_in", ["tasks", "replica"])
def test_scoring_replica_killed_mid_batch(cluster, s3_server, scratch_model, prepare_in):
    fs = s3_server.filesystem()
    source, output = f"corpus/killed-replica-{prepare_in}-in", f"corpus/killed-replica-{prepare_in}-out"
    make_corpus(source, corpus_texts(N_ROWS), files=2, filesystem=fs, row_group_size=4)
    config = JobConfig.from_mapping(_settings(input=f"s3://{source}", output=f"s3://{output}", model=scratch_model,
                                              prepare_in=prepare_in))
    thread, outcome = _in_thread(config)
    _wait_for(lambda: _score_actor_pids())
    time.sleep(1.5)  # it is now inside a batch (each takes >= 0.4 s)
    killed = _score_actor_pids()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    thread.join(300)
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["report"].summary
    assert summary["rows"]["read"] == summary["rows"]["written"] == N_ROWS
    assert summary["retries"].get("actor_restarts", 1) >= 1
    _check_every_row_once(read_output(output, filesystem=fs))


def test_s3_endpoint_down_for_a_while(cluster, s3_server, scratch_model):
    fs = s3_server.filesystem()
    make_corpus("corpus/outage-in", corpus_texts(N_ROWS), files=4, filesystem=fs, row_group_size=4)
    config = JobConfig.from_mapping(_settings(input="s3://corpus/outage-in", output="s3://corpus/outage-out",
                                              model=scratch_model, io_retry_seconds=120))
    thread, outcome = _in_thread(config)
    _wait_for(lambda: _committed_units(fs, "corpus/outage-out") > 0, timeout=180)
    assert thread.is_alive(), "the job finished before the outage; nothing was tested"
    s3_server.stop()
    time.sleep(6)
    assert thread.is_alive(), "the job cannot have committed its remaining files while S3 was down"
    s3_server.start()
    thread.join(300)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["report"].summary["rows"]["written"] == N_ROWS
    _check_every_row_once(read_output("corpus/outage-out", filesystem=fs))


DRIVER_SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
from lingua2_batch.pipeline import JobConfig, run_job
from tests.pipeline_fixtures import SlowReplica
report = run_job(JobConfig.from_mapping(json.load(open({config!r}))), replica_class=SlowReplica)
print(json.dumps(report.summary))
"""


def test_driver_killed_then_rerun_finishes(cluster, s3_server, scratch_model, tmp_path):
    fs = s3_server.filesystem()
    output = "corpus/killed-driver-out"
    make_corpus("corpus/killed-driver-in", corpus_texts(N_ROWS), files=2, filesystem=fs, row_group_size=4)
    settings = _settings(input="s3://corpus/killed-driver-in", output=f"s3://{output}", model=scratch_model,
                         ray_address=cluster["cluster"].address, lease_ttl_s=5)
    (tmp_path / "job.json").write_text(json.dumps(settings))
    (tmp_path / "driver.py").write_text(DRIVER_SCRIPT.format(repo=str(REPO), config=str(tmp_path / "job.json")))
    command = [sys.executable, str(tmp_path / "driver.py")]
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    _wait_for(lambda: _committed_units(fs, output) >= 2, timeout=180)
    os.killpg(driver.pid, signal.SIGKILL)  # while units are being committed
    driver.wait(30)
    committed_before = _committed_units(fs, output)
    assert 2 <= committed_before < 10 and not fs.exists(f"{output}/_SUCCESS")
    assert json.loads(fs.cat_file(f"{output}/_summary.json"))["status"] == "running"  # not a stale "succeeded"
    assert fs.exists(f"{output}/_lease.json")  # the dead run's lease: it expires after lease_ttl_s
    time.sleep(6)

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["units"]["total"] == 10
    assert summary["units"]["skipped_already_done"] >= committed_before
    assert summary["units"]["processed_this_run"] == 10 - summary["units"]["skipped_already_done"]
    assert summary["rows"]["written"] == N_ROWS and summary["rows"]["unaccounted"] == 0
    assert _parts(fs, output) == [f"{output}/part-{f:03d}/part-{u:05d}.parquet" for f in range(2) for u in range(5)]
    assert not fs.exists(f"{output}/_staging") and not fs.exists(f"{output}/_lease.json")
    _check_every_row_once(read_output(output, filesystem=fs))


def test_worker_node_lost_mid_job(cluster, s3_server, scratch_model):
    fs = s3_server.filesystem()
    make_corpus("corpus/lost-node-in", corpus_texts(N_ROWS), files=4, filesystem=fs, row_group_size=4)
    # 1.5 CPUs per replica: it only fits on the 2-CPU worker node, never on the 1-CPU head
    config = JobConfig.from_mapping(_settings(input="s3://corpus/lost-node-in", output="s3://corpus/lost-node-out",
                                              model=scratch_model, score_num_cpus=1.5))
    thread, outcome = _in_thread(config)
    _wait_for(lambda: _committed_units(fs, "corpus/lost-node-out") > 0, timeout=180)
    assert thread.is_alive(), "the job finished before the node was lost; nothing was tested"
    cluster["cluster"].remove_node(cluster["worker"], allow_graceful=False)
    time.sleep(2)
    cluster["worker"] = cluster["cluster"].add_node(num_cpus=2)  # a replacement, as an autoscaler adds one
    thread.join(300)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["report"].summary["rows"]["written"] == N_ROWS
    _check_every_row_once(read_output("corpus/lost-node-out", filesystem=fs))


def test_a_replica_the_cluster_cannot_hold_yet_is_asked_of_the_autoscaler(cluster, scratch_model, tmp_path):
    """GPU nodes that scale from zero: an autoscaler adds nodes only for demand, and before the replicas exist
    nothing asks for a GPU, so the job asks the autoscaler for one replica's resources while it waits. The test
    plays the autoscaler on Ray's request channel (the one Ray's autoscaler reads): asked for a GPU, it adds a
    node with one (the replica still scores on the CPU: ``device: cpu``)."""
    from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    def requested() -> list[dict]:
        raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
        return json.loads(raw) if raw else []

    make_corpus(str(tmp_path / "in"), corpus_texts(8), files=1)
    config = JobConfig.from_mapping(_settings(input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                                              model=scratch_model, num_gpus=1, device="cpu", wait_for_resources_s=60))
    thread, outcome = _in_thread(config)
    requests: list[list[dict]] = []
    gpu_node = None
    try:
        deadline = time.time() + 60
        while thread.is_alive() and gpu_node is None and time.time() < deadline:
            bundles = requested()
            if bundles:
                requests.append(bundles)
                gpu_node = cluster["cluster"].add_node(num_cpus=1, num_gpus=1)
            time.sleep(0.2)
        thread.join(300)
    finally:
        if gpu_node is not None:
            cluster["cluster"].remove_node(gpu_node)
    assert requests == [[{"CPU": 0.5, "GPU": 1.0}]]  # one replica's resources
    assert "error" not in outcome, outcome.get("error")
    assert requested() == []  # withdrawn after the wait
    assert outcome["report"].summary["rows"]["written"] == 8 and outcome["report"].summary["rows"]["errored"] == 0
