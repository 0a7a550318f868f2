"""Test Ray clusters share the machine: they start, and work, while Ray's default ports are taken (as
they are when another Ray runs here)."""

from __future__ import annotations

import socket

import pytest

from tests.pipeline_fixtures import start_local_ray, start_multinode_cluster

pytestmark = pytest.mark.timeout(300)
RAY_DEFAULT_PORTS = (6379, 8265, 10001, 52365)  # GCS, dashboard, Ray client, dashboard agent


def _hold(port: int) -> socket.socket | None:
    """Listen on ``port``; None when something else already does (the condition this test wants)."""
    sock = socket.socket()
    try:
        sock.bind(("0.0.0.0", port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None


def test_test_clusters_start_while_default_ports_are_taken():
    import ray

    held = [_hold(port) for port in RAY_DEFAULT_PORTS]
    try:
        if ray.is_initialized():
            ray.shutdown()
        cluster, _ = start_multinode_cluster(head_cpus=1, worker_cpus=1)
        try:
            ray.init(address=cluster.address)
            assert ray.get(ray.remote(lambda: 42).remote()) == 42
            assert len([n for n in ray.nodes() if n["Alive"]]) == 2
            assert not cluster.webui_url.endswith(":8265")
        finally:
            ray.shutdown()
            cluster.shutdown()
        start_local_ray(num_cpus=1)
        try:
            assert ray.get(ray.remote(lambda: 7).remote()) == 7
            assert not ray.get_runtime_context().gcs_address.endswith(":6379")
        finally:
            ray.shutdown()
    finally:
        for sock in held:
            if sock is not None:
                sock.close()
