"""Progress of a run, from the units the driver sees pass each stage: one log line every ``interval_s``
seconds (rows read and prepared, scored, committed; tokens; rate; ETA), so `ray job submit` logs and
`kubectl logs` show a run moving. A failed stage is retried by Ray; a unit counts once it has passed."""

from __future__ import annotations

import logging
import time
from typing import Any

from .plan import Unit

log = logging.getLogger("lingua2_batch.progress")


class Progress:
    def __init__(self, units: list[Unit], interval_s: float):
        self.total_units = len(units)
        self.total_rows = sum(u.rows for u in units)
        self.units = self.rows = self.origin_tokens = self.compressed_tokens = self.errored = 0
        self.rows_prepared = self.rows_scored = 0
        self.started = self.last = time.monotonic()
        self.interval_s = interval_s

    def unit_prepared(self, unit: Unit) -> None:
        self.rows_prepared += unit.rows

    def unit_scored(self, unit: Unit) -> None:
        self.rows_scored += unit.rows

    def unit_done(self, unit: Unit, entry: dict[str, Any]) -> None:
        self.units += 1
        self.rows += unit.rows
        self.origin_tokens += int(entry.get("origin_tokens", 0))
        self.compressed_tokens += int(entry.get("compressed_tokens", 0))
        self.errored += int(entry.get("rows_errored", 0))

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.rows / elapsed
        remaining = (self.total_rows - self.rows) / rate if rate > 0 else None
        eta = "unknown" if remaining is None else time.strftime("%H:%M:%S", time.gmtime(remaining))
        share = self.rows / self.total_rows if self.total_rows else 1.0
        return (f"progress: {self.units}/{self.total_units} units, {self.rows:,}/{self.total_rows:,} rows ({share:.0%}) "
                f"committed, {self.rows_prepared:,} read and prepared, {self.rows_scored:,} scored, "
                f"{self.errored:,} errored, tokens {self.origin_tokens:,} -> {self.compressed_tokens:,}, "
                f"{rate:,.1f} rows/s, {self.origin_tokens / elapsed:,.0f} tokens/s, elapsed "
                f"{time.strftime('%H:%M:%S', time.gmtime(elapsed))}, ETA {eta}")

    def maybe_log(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            log.info(self.line())

    def log_final(self) -> None:
        log.info(self.line())
