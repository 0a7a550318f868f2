"""The output lease under contention, on a local folder and on S3 (moto's server on loopback): two runs taking
over one expired lease, a heartbeat after another run broke the lease, a release after losing it, a write
whose reply was lost. Every write is conditional, so each case has exactly one holder."""

from __future__ import annotations

import errno
import http.client
import http.server
import json
import logging
import threading
import time
import uuid

import pytest

from lingua2_batch.pipeline.errors import JobError, LeaseHeldError
from lingua2_batch.pipeline.lease import LEASE, Lease
from lingua2_batch.storage import fs as fs_module
from lingua2_batch.storage.fs import resolve
from tests.pipeline_fixtures import *  # noqa: F401,F403
from tests.pipeline_fixtures import free_port

pytestmark = pytest.mark.timeout(120)
TTL_S = 60.0  # no heartbeat fires during a test: each renewal below is called by the test itself


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    if request.param == "local":
        return resolve(str(tmp_path / "out"))
    request.getfixturevalue("s3_server")
    return resolve(f"s3://corpus/lease-{uuid.uuid4().hex[:8]}")


def _holder(output) -> str | None:
    path = output.join(LEASE)
    output.fs.invalidate_cache()
    return json.loads(output.fs.cat_file(path))["run_id"] if output.fs.exists(path) else None


def _plant_expired_lease(output) -> None:
    output.fs.makedirs(output.path, exist_ok=True)
    output.fs.pipe_file(output.join(LEASE), json.dumps({"run_id": "dead-run", "expires_at": time.time() - 5}).encode())


class RacingLease(Lease):
    """Reads the lease, then waits until every other racer has read it too: all of them see the expired lease
    before any of them writes, the interleaving in which a delete-then-create take-over lets two runs win."""

    barrier: threading.Barrier

    def _read(self):
        found = super()._read()
        try:
            self.barrier.wait(timeout=10)
        except threading.BrokenBarrierError:
            pass  # later reads (after the race) go alone
        return found


def _race(leases: list[Lease]) -> Lease:
    """Every lease's ``acquire`` at once; exactly one must win, and the other's refusal name it."""
    outcomes: dict[str, object] = {}

    def take(lease: Lease) -> None:
        try:
            lease.acquire()
            outcomes[lease.run_id] = "held"
        except LeaseHeldError as error:
            outcomes[lease.run_id] = error

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [run for run, outcome in outcomes.items() if outcome == "held"]
    assert len(outcomes) == 2 and len(winners) == 1, outcomes
    loser = next(run for run in outcomes if run != winners[0])
    assert winners[0] in str(outcomes[loser])  # the refusal names the run that won
    return next(lease for lease in leases if lease.run_id == winners[0])


def test_two_runs_taking_over_an_expired_lease_one_wins(output):
    _plant_expired_lease(output)
    RacingLease.barrier = threading.Barrier(2)
    winner = _race([RacingLease(output, f"run-{i}", TTL_S, io_deadline_s=10) for i in range(2)])
    assert _holder(output) == winner.run_id
    winner.check()
    winner.release()
    assert _holder(output) is None


def test_on_a_filesystem_without_locks_two_runs_creating_the_lease_one_wins(tmp_path, monkeypatch, caplog):
    """Some FUSE mounts refuse ``flock``: the comparison then runs unlocked, and both racers may see no lease;
    the create itself must still let only one of them in."""
    def no_locks(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    compared = threading.Barrier(2)
    reads = iter(range(2))
    original_read = fs_module._read_bytes

    def read_then_wait_for_the_other(fs, path):  # the first two reads (the racers' comparisons) meet
        data = original_read(fs, path)
        if next(reads, None) is not None:
            compared.wait(timeout=10)
        return data

    monkeypatch.setattr(fs_module.fcntl, "flock", no_locks)
    monkeypatch.setattr(fs_module, "_read_bytes", read_then_wait_for_the_other)
    output = resolve(str(tmp_path / "out"))
    with caplog.at_level(logging.WARNING, logger="lingua2_batch.storage.fs"):
        winner = _race([Lease(output, f"run-{i}", TTL_S, io_deadline_s=10) for i in range(2)])
        assert _holder(output) == winner.run_id
        winner.check()
        winner.check()
        winner.release()
    assert _holder(output) is None
    assert len([r for r in caplog.records if "no file lock" in r.getMessage()]) == 1  # once, not every write


def test_a_heartbeat_after_the_lease_was_broken_does_not_take_it_back(output):
    first = Lease(output, "first-run", TTL_S, io_deadline_s=10)
    first.acquire()
    second = Lease(output, "second-run", TTL_S, io_deadline_s=10)
    second.acquire(break_lease=True)
    try:
        with pytest.raises(JobError, match="first-run lost the lease .* to second-run"):
            first._renew()
        assert _holder(output) == "second-run"
        first.release()  # not ours any more: left in place
        assert _holder(output) == "second-run"
        second._renew()
        second.check()
    finally:
        second.release()
    assert _holder(output) is None


class LostReplyLease(Lease):
    """Its first write reaches the store but the reply is lost: the caller sees the conditional write fail, as
    a retried request would after the first one succeeded."""

    def _write(self, expected):
        written = super()._write(expected)
        if not getattr(self, "lost_one", False):
            self.lost_one = True
            return None
        return written


def test_a_write_whose_reply_was_lost_is_recognised_as_ours(output):
    lease = LostReplyLease(output, "lost-reply-run", TTL_S, io_deadline_s=10)
    lease.acquire()
    try:
        assert _holder(output) == "lost-reply-run"
        lease._renew()
        lease.check()
        with pytest.raises(LeaseHeldError, match="lost-reply-run"):
            Lease(output, "another-run", TTL_S, io_deadline_s=10).acquire()
    finally:
        lease.release()
    assert _holder(output) is None


class SilentHeartbeatLease(Lease):
    """A run whose heartbeats never got through (the store was unreachable, the process paused)."""

    def _start_heartbeat(self) -> None:
        pass


def _expiry(output) -> float:
    output.fs.invalidate_cache()
    return float(json.loads(output.fs.cat_file(output.join(LEASE)))["expires_at"])


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def test_the_check_before_the_job_commit_renews_the_lease(output):
    ttl_s = 4.0
    committing = SilentHeartbeatLease(output, "committing-run", ttl_s, io_deadline_s=10)
    committing.acquire()
    try:
        first_expiry = _expiry(output)
        _sleep_until(first_expiry - 1.5)  # 1.5 s of the lease left when the job commit begins
        committing.check()
        assert _expiry(output) >= first_expiry - 1.5 + ttl_s
        _sleep_until(first_expiry + 0.5)  # past the expiry the acquire set; well within the one the check set
        with pytest.raises(LeaseHeldError, match="committing-run"):
            Lease(output, "next-run", TTL_S, io_deadline_s=10).acquire()
        assert _holder(output) == "committing-run"
    finally:
        committing.release()
    assert _holder(output) is None


class NoConditionsProxy(http.server.BaseHTTPRequestHandler):
    """An S3-compatible store without conditional requests: moto's server behind a proxy that answers every
    PUT or DELETE carrying If-Match or If-None-Match with 501 NotImplemented (as some stores do) and
    forwards everything else."""

    protocol_version = "HTTP/1.1"
    upstream_port: int

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.command in ("PUT", "DELETE") and ("If-Match" in self.headers or "If-None-Match" in self.headers):
            status, reason, headers = 501, "Not Implemented", [("Content-Type", "application/xml")]
            data = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>A header '
                    b'you provided implies functionality that is not implemented</Message></Error>')
        else:
            upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
            forwarded = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "connection")}
            upstream.request(self.command, self.path, body=body, headers=forwarded)
            response = upstream.getresponse()
            status, reason, data = response.status, response.reason, response.read()
            headers = [(k, v) for k, v in response.getheaders()
                       if k.lower() not in ("transfer-encoding", "connection", "content-length")]
            if self.command == "HEAD":
                headers.append(("Content-Length", response.getheader("Content-Length", "0")))
            upstream.close()
        self.send_response(status, reason)
        for key, value in headers:
            self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def store_without_conditions(s3_server, monkeypatch):
    handler = type("Proxy", (NoConditionsProxy,), {"upstream_port": s3_server.port})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{proxy.server_address[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    yield resolve(f"s3://corpus/no-conditions-{uuid.uuid4().hex[:8]}")
    proxy.shutdown()
    proxy.server_close()


def test_a_store_without_conditional_requests_falls_back_at_once_with_a_warning(store_without_conditions, caplog):
    output = store_without_conditions
    with caplog.at_level(logging.WARNING, logger="lingua2_batch.storage.fs"):
        started = time.monotonic()
        lease = Lease(output, "first-run", TTL_S, io_deadline_s=60)
        lease.acquire()
        assert time.monotonic() - started < 10  # not retried as a transient error until io_deadline_s
        try:
            assert _holder(output) == "first-run"
            with pytest.raises(LeaseHeldError, match="first-run"):
                Lease(output, "second-run", TTL_S, io_deadline_s=60).acquire()
            lease.check()
        finally:
            lease.release()
        assert _holder(output) is None
    warnings = [r.getMessage() for r in caplog.records if "does not implement conditional" in r.getMessage()]
    # once per kind of request (the lease was written three times): a store may condition one and not another
    assert len(warnings) == 2 and "put_object" in warnings[0] and "delete_object" in warnings[1], warnings
