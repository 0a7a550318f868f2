"""The acceptance run: `ray job submit` of jobs/compress_corpus.py, as the README shows it, to a fresh
two-node local cluster (`ray start --head` + `ray start --address=...`) compresses a multi-file Parquet corpus
from the S3 test server back into it; every row accounted for, outputs equal to the core's.

The cluster's Python has the dependencies but not the package: its nodes run a virtual environment that
sees the test venv's site-packages only as a plain path (no ``.pth`` processing, so not the editable install
of this checkout), started outside the repository with no PYTHONPATH. A job submitted without a runtime
environment cannot import ``lingua2_batch`` there; the documented ``--working-dir`` is what brings it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from lingua2_batch import Compressor
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import corpus_texts, free_port, make_corpus, read_output, upload_folder

pytestmark = pytest.mark.timeout(900)
REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
N_ROWS = 30


def _python_without_the_package(folder: Path) -> Path:
    """A virtual environment whose Python imports this venv's packages but not ``lingua2_batch``."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "test-venv-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory, s3_server):
    port, dashboard = free_port(), free_port()
    temp = tmp_path_factory.mktemp("ray")
    python = _python_without_the_package(tmp_path_factory.mktemp("cluster-venv") / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    # `python` on the cluster (the job's entrypoint, every worker) is that environment's
    env.update(s3_server.env, PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}",
               # the dashboard (job submission) gives up after 30 s by default: a shared machine can be slower
               RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT="300")
    ray_cli = [str(python), "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]
    ports = [f"--{name}={free_port()}" for name in ("ray-client-server-port", "node-manager-port", "object-manager-port",
                                                    "metrics-export-port", "dashboard-agent-listen-port",
                                                    "dashboard-agent-grpc-port", "runtime-env-agent-port")]
    head = [*ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1", f"--dashboard-port={dashboard}",
            "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}", *ports,
            "--disable-usage-stats"]
    cwd = tmp_path_factory.mktemp("cluster-cwd")  # not the repository: nothing importable by accident
    subprocess.run(head, check=True, env=env, capture_output=True, timeout=180, cwd=cwd)
    try:
        worker_ports = [f"--{name}={free_port()}" for name in ("node-manager-port", "object-manager-port",
                                                               "metrics-export-port", "dashboard-agent-listen-port",
                                                               "dashboard-agent-grpc-port", "runtime-env-agent-port")]
        subprocess.run([*ray_cli, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2",
                        "--node-ip-address=127.0.0.1", *worker_ports, "--disable-usage-stats"],
                       check=True, env=env, capture_output=True, timeout=180, cwd=cwd)
        address = f"http://127.0.0.1:{dashboard}"
        _wait_for_dashboard(address, 330)
        yield {"address": address, "gcs": f"127.0.0.1:{port}", "env": env}
    finally:
        _stop_cluster(str(temp), port)


def _wait_for_dashboard(address: str, limit_s: float) -> None:
    """`ray start` returns before the dashboard (which takes job submissions) answers."""
    import urllib.request

    deadline = time.monotonic() + limit_s
    while True:
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=10):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _stop_cluster(temp: str, port: int) -> None:
    """Stop only this test's Ray processes (other Ray clusters may run on this machine, so no `ray stop`):
    those whose command line names this cluster's temp dir or GCS port, and their children, by pid."""
    import psutil

    ours = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info.get("cmdline") or [])
        if process.pid != os.getpid() and (temp in cmdline or f"127.0.0.1:{port}" in cmdline or f"--gcs_server_port={port}" in cmdline):
            ours.append(process)
    for process in list(ours):
        try:
            ours += process.children(recursive=True)
        except psutil.Error:
            pass
    for process in ours:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(ours, timeout=10)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass


def test_the_cluster_python_does_not_have_the_package(two_node_cluster, tmp_path):
    command = [RAY, "job", "submit", "--address", two_node_cluster["address"], "--",
               "python", "-c", "import torch, ray; import lingua2_batch"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180, env=two_node_cluster["env"],
                          cwd=tmp_path)
    assert proc.returncode != 0
    assert "No module named 'lingua2_batch'" in proc.stdout + proc.stderr, (proc.stdout[-3000:], proc.stderr[-2000:])


def test_ray_job_submit_two_nodes_s3_round_trip(two_node_cluster, s3_server, scratch_model, tmp_path):
    fs = s3_server.filesystem()
    texts = corpus_texts(N_ROWS)
    make_corpus("corpus/submit-in", texts, files=3, filesystem=fs)
    upload_folder(fs, scratch_model, "corpus/models/submit-scratch")
    config = {"input": "s3://corpus/submit-in/", "output": "s3://corpus/submit-out/",
              "model": "s3://corpus/models/submit-scratch", "rate": 0.5, "passthrough_columns": ["lang"],
              "num_gpus": 0, "read_num_cpus": 0.25, "prepare_num_cpus": 0.25, "score_num_cpus": 0.5,
              "min_replicas": 1, "max_replicas": 2, "batch_size": 8}
    (tmp_path / "job.yaml").write_text(json.dumps(config))
    env_vars = {**s3_server.env, "LINGUA2_MODEL_CACHE": str(tmp_path / "model-cache")}
    runtime_env = {"excludes": [".venv", ".git", "*.pyc", "__pycache__"], "env_vars": env_vars}
    # as the README shows it: the working directory carries the package and the entrypoint
    command = [RAY, "job", "submit", "--address", two_node_cluster["address"], "--working-dir", str(REPO),
               "--runtime-env-json", json.dumps(runtime_env), "--",
               "python", "jobs/compress_corpus.py", "--config", str(tmp_path / "job.yaml"), "--quiet"]
    started = time.time()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=360, env=two_node_cluster["env"])
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-2000:])
    assert "succeeded" in proc.stdout.lower()
    table = read_output("corpus/submit-out", filesystem=fs)
    expected = Compressor(scratch_model).compress_batch(texts, rate=0.5)
    assert table.num_rows == N_ROWS
    assert table.column("id").to_pylist() == [f"doc-{i:06d}" for i in range(N_ROWS)]
    assert table.column("compressed_text").to_pylist() == [r.compressed_prompt for r in expected]
    assert table.column("compressed_tokens").to_pylist() == [r.compressed_tokens for r in expected]
    with fs.open("corpus/submit-out/_SUCCESS", "rb") as handle:
        summary = json.loads(handle.read())
    assert summary["rows"]["read"] == summary["rows"]["written"] == N_ROWS and summary["rows"]["unaccounted"] == 0
    # both nodes took part in the cluster
    nodes = subprocess.run([RAY, "list", "nodes", "--address", two_node_cluster["address"], "--format", "json"],
                           capture_output=True, text=True, env=two_node_cluster["env"], timeout=60)
    if nodes.returncode == 0:
        assert len([n for n in json.loads(nodes.stdout) if n.get("state") == "ALIVE"]) == 2
    print(f"ray job submit round trip: {time.time() - started:.1f} s")
