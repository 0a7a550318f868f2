"""What an operator reads: progress lines while a run works (plain log records, so `ray job submit` and
`kubectl logs` show them), and the per-record ratio histogram, whose bins hold their upper edge."""

from __future__ import annotations

import logging
import math

import numpy as np

from lingua2_batch.pipeline.output import RATIO_BINS, ratio_histogram
from lingua2_batch.pipeline.plan import InputFile, Unit
from lingua2_batch.pipeline.progress import Progress


def _units(rows: list[int]) -> list[Unit]:
    import pyarrow as pa

    file = InputFile("in/a.parquet", "in/a.parquet", "a.parquet", sum(rows), pa.schema([]), {}, ())
    return [Unit(file, index, len(rows), (index,), sum(rows[:index]), count) for index, count in enumerate(rows)]


def test_progress_lines_say_units_rows_tokens_rate_and_eta(caplog):
    units = _units([100, 100, 50])
    progress = Progress(units, interval_s=0.0)
    caplog.set_level(logging.INFO, logger="lingua2_batch.progress")
    progress.maybe_log()
    for unit in units[:2]:
        progress.unit_prepared(unit)
    progress.unit_scored(units[0])
    progress.unit_done(units[0], {"origin_tokens": 4000, "compressed_tokens": 2000, "rows_errored": 3})
    progress.maybe_log()
    lines = [r.getMessage() for r in caplog.records if r.name == "lingua2_batch.progress"]
    assert len(lines) == 2 and "0/250 rows" in lines[0] and "ETA unknown" in lines[0]
    last = lines[-1]
    for piece in ("1/3 units", "100/250 rows (40%) committed", "200 read and prepared", "100 scored", "3 errored", "tokens 4,000 -> 2,000", "rows/s", "tokens/s", "ETA"):
        assert piece in last, (piece, last)
    assert "\n" not in last  # one record per line, for log collectors


def test_ratio_histogram_bins_include_their_upper_edge():
    ratios = np.array([1.0, 1.25, 1.2500001, 2.0, 20.0, 20.5, math.inf])
    counts = ratio_histogram(ratios)
    assert len(counts) == len(RATIO_BINS) + 1 and sum(counts) == len(ratios)
    assert counts[0] == 1  # 1.0 is in the bin "<= 1.0", not the next one
    assert counts[1] == 1  # 1.25 closes the second bin
    assert counts[2] == 1  # just above 1.25 opens the third
    assert counts[RATIO_BINS.index(2.0)] == 1
    assert counts[RATIO_BINS.index(20.0)] == 1
    assert counts[-1] == 2  # above the last edge, and an empty compression's inf
