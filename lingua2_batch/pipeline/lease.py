"""One writer per output prefix: a lease object ``_lease.json`` (run id, host, pid, heartbeat, expiry),
taken with a conditional create, renewed by a heartbeat thread while the job runs, renewed once more before
each step of the job commit, and released at the end.

A second run refuses at once, naming the holder and when its lease expires. A lease whose expiry has passed
belonged to a run that died; the next run takes it over. ``break_lease`` takes over a live-looking one (an
operator who knows its run is gone).

Every write is conditional on the version its writer last saw (``storage.fs.write_if_version``: ETags on S3,
a file lock locally), so of two runs taking over one expired lease exactly one wins, and a heartbeat never
overwrites the lease of a run that broke it: the beat's write fails and its run stops committing. The job
commit follows a renewal (not a read): it starts with a full ``ttl_s`` in which no other run takes the lease
over, however long ago the last heartbeat went through."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any

from ..storage.fs import Location, read_json, read_versioned, remove_if_version, write_if_version
from ..storage.retry import with_retries
from .errors import JobError, LeaseHeldError

LEASE = "_lease.json"
log = logging.getLogger("lingua2_batch.lease")


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_holder(output: Location, run_id: str, deadline_s: float) -> None:
    """Raise JobError unless run ``run_id`` holds the lease of ``output``. A worker's check before it writes
    into the output: once another run has taken the lease over (this run's heartbeats failed for a whole TTL)
    this run's commit tasks stop writing parts and entries there instead of mixing them into the other's."""
    holder = with_retries(lambda: read_json(output.fs, output.join(LEASE)), "reading the output lease", deadline_s)
    if not holder or holder.get("run_id") != run_id:
        raise JobError(_lost_to(run_id, output, holder))


def _lost_to(run_id: str, output: Location, holder: dict[str, Any] | None) -> str:
    return (f"run {run_id} lost the lease of {output.uri} to {(holder or {}).get('run_id', 'nobody')}; nothing "
            "more is committed by this run")


class Lease:
    def __init__(self, output: Location, run_id: str, ttl_s: float, io_deadline_s: float):
        self.output = output
        self.path = output.join(LEASE)
        self.run_id = run_id
        self.ttl_s = ttl_s
        self.deadline = io_deadline_s
        self.lost: str | None = None
        self._version: str | None = None  # of the lease document this run last wrote
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewing = threading.Lock()  # the heartbeat and ``check`` renew from different threads

    def _document(self) -> bytes:
        now = time.time()
        return json.dumps({"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                           "heartbeat": _stamp(now), "expires_at": now + self.ttl_s,
                           "expires": _stamp(now + self.ttl_s)}, indent=2).encode()

    def _read(self) -> tuple[dict[str, Any], str] | None:
        """The lease document and its version, or None when there is no lease."""
        found = with_retries(lambda: read_versioned(self.output.fs, self.path), "reading the output lease",
                             self.deadline)
        return None if found is None else (json.loads(found[0]), found[1])

    def _write(self, expected: str | None) -> str | None:
        """Our document, written only over ``expected`` (None: only where there is no lease)."""
        data = self._document()
        return with_retries(lambda: write_if_version(self.output.fs, self.path, data, expected),
                            "writing the output lease", self.deadline)

    def acquire(self, break_lease: bool = False) -> None:
        """Take the lease or raise LeaseHeldError naming its holder."""
        expected: str | None = None
        for _ in range(3):
            self._version = self._write(expected)
            if self._version is not None:
                self._start_heartbeat()
                return
            found = self._read()
            if found is None:
                expected = None  # released since: take it as new
                continue
            holder, expected = found
            if holder.get("run_id") == self.run_id:  # our own write, its reply lost and the call retried
                self._version = expected
                self._start_heartbeat()
                return
            is_expired = float(holder.get("expires_at", 0)) < time.time()
            if not (is_expired or break_lease):
                raise LeaseHeldError(
                    f"output {self.output.uri} is being written by run {holder.get('run_id')} on host "
                    f"{holder.get('host')} (pid {holder.get('pid')}, last heartbeat {holder.get('heartbeat')}); its "
                    f"lease expires at {holder.get('expires')}. If that run is dead, wait until then or pass "
                    f"--break-lease.")
            # the next write replaces exactly this document: if another run takes it over first, ours fails
            log.warning("taking over the output lease of run %s (%s)", holder.get("run_id"),
                        "expired" if is_expired else "--break-lease")
        raise LeaseHeldError(f"could not take the lease of {self.output.uri}: other runs keep taking it")

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="lingua2-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self._renew()
            except JobError as error:
                self.lost = str(error)
                return
            except Exception as error:  # noqa: BLE001 - an unreachable store: try again next beat
                log.warning("could not renew the output lease (%s)", type(error).__name__)

    def _renew(self) -> None:
        with self._renewing:
            version = self._write(self._version)
            if version is None:
                found = self._read()
                if found is None or found[0].get("run_id") != self.run_id:
                    raise JobError(_lost_to(self.run_id, self.output, found[0] if found else None))
                version = found[1]  # our own renewal, its reply lost and the call retried
            self._version = version

    def check(self) -> None:
        """Renew the lease now, or raise JobError when this run no longer holds it (another run broke it or
        took it over). Called before each step of the job commit, which then has ``ttl_s`` to finish before
        any other run may take the lease over (a read would only say the lease was ours a moment ago, perhaps
        moments before it expired)."""
        if self.lost:
            raise JobError(self.lost)
        try:
            self._renew()
        except JobError as error:
            self.lost = str(error)
            raise

    def held(self) -> bool:
        """Whether this run still holds the lease (a read: for the way out of a failed run, which must not
        write its failure into an output another run has taken over)."""
        if self.lost:
            return False
        try:
            check_holder(self.output, self.run_id, self.deadline)
            return True
        except JobError as error:
            self.lost = str(error)
            return False

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            found = read_versioned(self.output.fs, self.path)
            if found and json.loads(found[0]).get("run_id") == self.run_id:
                remove_if_version(self.output.fs, self.path, found[1])
        except Exception:  # noqa: BLE001 - an unreleased lease expires by itself
            log.warning("could not release the output lease; it expires in %.0f s", self.ttl_s)
