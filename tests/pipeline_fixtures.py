"""Fixtures for the batch-job tests: a scratch checkpoint, a local Ray cluster per module, an S3 protocol
server on loopback (moto's standalone server, as Ray's own Data tests use) reached through the standard
AWS environment variables, and small Parquet corpora.

Import with ``from tests.pipeline_fixtures import *`` in a test module.
"""

from __future__ import annotations

import glob
import logging
import os
import socket
from pathlib import Path

import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray import cloudpickle as ray_cloudpickle

from lingua2_batch.model.scratch import build_checkpoint, shipped_corpus_texts
from lingua2_batch.pipeline.stages import Replica

__all__ = [
    "SlowReplica", "scratch_model", "s3_server", "ray_local", "make_corpus", "read_output", "free_port", "S3Server",
    "local_job_settings", "corpus_texts", "upload_folder", "start_local_ray", "start_multinode_cluster",
]

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
}
# fractional CPUs so read, prepare and one scoring replica fit on a 2-CPU test cluster
# prepare tasks beside the replicas: the path GPU replicas take (a CPU replica's default is to prepare itself)
local_job_settings = {"num_gpus": 0, "read_num_cpus": 0.25, "prepare_num_cpus": 0.5, "score_num_cpus": 0.5,
                      "batch_size": 8, "prepare_batch_size": 16, "io_retry_seconds": 60, "prepare_in": "tasks"}


class SlowReplica(Replica):
    """A scoring replica that takes at least ``DELAY_S`` per scoring call, so faults land mid-job."""

    DELAY_S = 0.4

    def finish(self, prepared):
        time.sleep(self.DELAY_S)
        return super().finish(prepared)


# Ray workers unpickle test classes by value: they need not import the tests package
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def scratch_model(tmp_path_factory) -> str:
    # checkpoints copied from s3:// prefixes go to a per-session cache, not ~/.cache
    os.environ.setdefault("LINGUA2_MODEL_CACHE", str(tmp_path_factory.mktemp("model-cache")))
    return str(build_checkpoint(tmp_path_factory.mktemp("scratch-model"), "sentencepiece"))


def corpus_texts(n: int) -> list[str]:
    texts = shipped_corpus_texts()
    return [texts[i % len(texts)] if i < len(texts) else f"Record {i}. " + texts[i % len(texts)][: 300 + i % 200]
            for i in range(n)]


def make_corpus(fs_root: str, texts: list[str], files: int = 3, filesystem=None, extra: dict | None = None,
                prefix: str = "part", row_group_size: int | None = None) -> list[str]:
    """Write ``texts`` as ``files`` Parquet files (columns id, text, lang) under ``fs_root``, each in row
    groups of ``row_group_size`` rows (one row group when None)."""
    per_file = -(-len(texts) // files)
    paths = []
    for index in range(files):
        part = texts[index * per_file:(index + 1) * per_file]
        start = index * per_file
        columns = {"id": [f"doc-{start + i:06d}" for i in range(len(part))], "text": part,
                   "lang": ["en"] * len(part)}
        for name, values in (extra or {}).items():
            columns[name] = values[start:start + len(part)]
        path = f"{fs_root.rstrip('/')}/{prefix}-{index:03d}.parquet"
        if filesystem is None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
        else:
            with filesystem.open(path, "wb") as handle:
                pq.write_table(pa.table(columns), handle, row_group_size=row_group_size)
        paths.append(path)
    return paths


def read_output(location: str, filesystem=None) -> pa.Table:
    """All output Parquet files a reader sees (none under a ``_*`` or ``.*`` name), in name order."""
    def data(path: str) -> bool:
        return "/_" not in path[len(location):] and "/." not in path[len(location):]

    if filesystem is None:
        files = sorted(p for p in glob.glob(os.path.join(location, "**", "*.parquet"), recursive=True) if data(p))
        tables = [pq.read_table(p) for p in files]
    else:
        files = sorted(p for p in filesystem.find(location) if p.endswith(".parquet") and data(p))
        tables = []
        for p in files:
            with filesystem.open(p, "rb") as handle:
                tables.append(pq.read_table(handle))
    return pa.concat_tables(tables) if tables else pa.table({})


class S3Server:
    """moto's standalone S3 server on 127.0.0.1; ``stop()``/``start()`` simulate an outage (bucket
    contents survive: moto keeps them in this process)."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self._cls = ThreadedMotoServer
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self):
        self.server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def env(self) -> dict[str, str]:
        return {**FAKE_AWS, "AWS_ENDPOINT_URL": self.endpoint, "AWS_ENDPOINT_URL_S3": self.endpoint}

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


@pytest.fixture(scope="module")
def s3_server():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = S3Server()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    server.start()
    # moto keeps its buckets in this process across server restarts: every module starts from empty
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{server.endpoint}/moto-api/reset", method="POST")).close()
    fs = server.filesystem()
    fs.mkdir("corpus")
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def start_local_ray(num_cpus: int = 2, env: dict[str, str] | None = None):
    """A fresh local Ray on free ports (its dashboard's too: another Ray on this machine holds the
    defaults), its workers given ``env``."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_port=free_port(),
             logging_level=logging.WARNING, runtime_env={"env_vars": env} if env else None)
    return ray


def start_multinode_cluster(head_cpus: int = 1, worker_cpus: int = 2):
    """Several raylets on this machine (``ray.cluster_utils.Cluster``), every port free rather than Ray's
    defaults (dashboard 8265, agent 52365 take no retries there). Returns (cluster, worker node)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": head_cpus, "include_dashboard": True, "dashboard_port": free_port(),
        "dashboard_agent_listen_port": free_port()})
    worker = cluster.add_node(num_cpus=worker_cpus)  # Cluster gives worker nodes a random agent port
    cluster.wait_for_nodes()
    return cluster, worker


@pytest.fixture(scope="module")
def ray_local(request):
    """A fresh local Ray (2 CPUs) for the module. If the module also uses ``s3_server``, request it
    first so the workers inherit the S3 environment."""
    env = {k: os.environ[k] for k in list(FAKE_AWS) + ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"] if k in os.environ}
    ray = start_local_ray(2, env)
    yield ray
    ray.shutdown()


def upload_folder(fs, local: str, remote: str) -> None:
    for path in Path(local).rglob("*"):
        if path.is_file():
            fs.put_file(str(path), f"{remote.rstrip('/')}/{path.relative_to(local).as_posix()}")
