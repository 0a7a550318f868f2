"""One writer per output prefix: a lease object ``_lease.json`` (run id, host, pid, heartbeat, expiry),
taken with a conditional create (``O_EXCL`` locally, ``If-None-Match: *`` on S3), renewed by a heartbeat
thread while the job runs, checked before the job commit, and released at the end.

A second run refuses at once, naming the holder and when its lease expires. A lease whose expiry has passed
belonged to a run that died; the next run takes it over. ``break_lease`` takes over a live-looking one (an
operator who knows its run is gone)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any

from ..storage.fs import Location, create_exclusive, read_json, write_json
from ..storage.retry import with_retries
from .errors import JobError, LeaseHeldError

LEASE = "_lease.json"
log = logging.getLogger("lingua2_batch.lease")


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Lease:
    def __init__(self, output: Location, run_id: str, ttl_s: float, io_deadline_s: float):
        self.output = output
        self.path = output.join(LEASE)
        self.run_id = run_id
        self.ttl_s = ttl_s
        self.deadline = io_deadline_s
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _document(self) -> dict[str, Any]:
        now = time.time()
        return {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                "heartbeat": _stamp(now), "expires_at": now + self.ttl_s, "expires": _stamp(now + self.ttl_s)}

    def acquire(self, break_lease: bool = False) -> None:
        """Take the lease or raise LeaseHeldError naming its holder."""
        fs = self.output.fs
        for _ in range(3):
            data = json.dumps(self._document(), indent=2).encode()
            if with_retries(lambda: create_exclusive(fs, self.path, data), "taking the output lease", self.deadline):
                self._start_heartbeat()
                return
            holder = with_retries(lambda: read_json(fs, self.path), "reading the output lease", self.deadline)
            if holder is None:
                continue  # released between our two calls
            expired = float(holder.get("expires_at", 0)) < time.time()
            if not (expired or break_lease):
                raise LeaseHeldError(
                    f"output {self.output.uri} is being written by run {holder.get('run_id')} on host "
                    f"{holder.get('host')} (pid {holder.get('pid')}, last heartbeat {holder.get('heartbeat')}); its "
                    f"lease expires at {holder.get('expires')}. If that run is dead, wait until then or pass "
                    f"--break-lease.")
            log.warning("taking over the output lease of run %s (%s)", holder.get("run_id"),
                        "expired" if expired else "--break-lease")
            with_retries(lambda: fs.rm(self.path) if fs.exists(self.path) else None, "removing a stale lease",
                         self.deadline)
        raise LeaseHeldError(f"could not take the lease of {self.output.uri}: other runs keep taking it")

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="lingua2-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.check()
                write_json(self.output.fs, self.path, self._document())
            except JobError as error:
                self.lost = str(error)
                return
            except Exception as error:  # noqa: BLE001 - an unreachable store: try again next beat
                log.warning("could not renew the output lease (%s)", type(error).__name__)

    def check(self) -> None:
        """Raise JobError unless this run still holds the lease (another run broke it)."""
        if self.lost:
            raise JobError(self.lost)
        holder = with_retries(lambda: read_json(self.output.fs, self.path), "reading the output lease", self.deadline)
        if not holder or holder.get("run_id") != self.run_id:
            self.lost = (f"run {self.run_id} lost the lease of {self.output.uri} to "
                         f"{(holder or {}).get('run_id', 'nobody')}; nothing more is committed by this run")
            raise JobError(self.lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        fs = self.output.fs
        try:
            holder = read_json(fs, self.path)
            if holder and holder.get("run_id") == self.run_id:
                fs.rm(self.path)
        except Exception:  # noqa: BLE001 - an unreleased lease expires by itself
            log.warning("could not release the output lease; it expires in %.0f s", self.ttl_s)
