"""Ids must be unique and non-null across the whole input (incremental runs match on them). Checked
before anything is committed, without bringing the ids to the driver: the ids of each group of units (up
to 250,000 ids) are hashed into buckets by a task, each bucket is counted by another task, and only the
counts and a few examples of repeated ids come back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..storage.fs import resolve
from .columns import plain, plain_type
from .config import JobConfig
from .errors import InputError
from .plan import Unit

EXAMPLES = 5
_IDS_PER_BUCKET = 4_000_000  # sizes a counting task's memory (~100 MB of ids)
_IDS_PER_READ_TASK = 250_000  # sizes a reading task (~6 MB of ids); a big input is read by several at once
MAX_BUCKETS = 256


def _bucket_ids(config: JobConfig, input_uri: str, units: list[Unit], id_type: pa.DataType, buckets: int) -> list[Any]:
    """[null count, bucket 0 ids, bucket 1 ids, ...] for a group of units."""
    from .stages import read_unit

    location = resolve(input_uri)
    columns = [read_unit(location, unit, [config.id_column], config.io_retry_seconds).column(0) for unit in units]
    nulls = sum(column.null_count for column in columns)
    typed = [plain(column).drop_null().cast(id_type) for column in columns if not pa.types.is_null(column.type)]
    ids = pa.chunked_array([chunk for column in typed for chunk in column.chunks], id_type).combine_chunks()
    if buckets == 1:
        return [nulls, ids]
    from pandas.util import hash_array  # a stable hash across processes (Python's own is salted per process)

    positions = hash_array(np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object)) % np.uint64(buckets)
    order = np.argsort(positions, kind="stable")
    bounds = np.searchsorted(positions[order], np.arange(buckets + 1))
    taken = ids.take(pa.array(order))
    return [nulls] + [taken.slice(bounds[b], bounds[b + 1] - bounds[b]) for b in range(buckets)]


def _groups(units: list[Unit], rows_per_group: int) -> list[list[Unit]]:
    """Consecutive units, up to ``rows_per_group`` rows a group (a larger unit alone): one reading task each,
    so that a corpus of many small files does not cost a task per file."""
    groups: list[list[Unit]] = []
    rows = 0
    for unit in units:
        if not groups or rows + unit.rows > rows_per_group:
            groups.append([])
            rows = 0
        groups[-1].append(unit)
        rows += unit.rows
    return groups


def _count_bucket(*parts: pa.Array) -> tuple[int, list[Any]]:
    """(how many distinct ids appear more than once, a few of them) in one bucket."""
    arrays = [p for p in parts if len(p)]
    if not arrays:
        return 0, []
    counts = pc.value_counts(pa.chunked_array(arrays))
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    return len(repeated), repeated.field("values")[:EXAMPLES].to_pylist()


def check_ids(config: JobConfig, input_uri: str, units: list[Unit], id_type: pa.DataType | None) -> None:
    """Raise InputError naming a few offending ids when ids repeat or are null (needs Ray connected)."""
    if not config.id_column or not config.check_duplicate_ids or not units:
        return
    import ray

    total = sum(u.rows for u in units)
    buckets = int(min(MAX_BUCKETS, max(1, -(-total // _IDS_PER_BUCKET))))
    id_type = plain_type(id_type) if id_type is not None else pa.string()  # one that every file's ids cast to
    bucket_task = ray.remote(_bucket_ids).options(num_returns=buckets + 1, num_cpus=config.read_num_cpus,
                                                  max_retries=config.max_task_retries, retry_exceptions=True)
    per_group = [bucket_task.remote(config, input_uri, group, id_type, buckets)
                 for group in _groups([u for u in units if u.rows], _IDS_PER_READ_TASK)]
    count_task = ray.remote(_count_bucket).options(num_cpus=config.read_num_cpus,
                                                   max_retries=config.max_task_retries, retry_exceptions=True)
    counted = [count_task.remote(*[refs[b + 1] for refs in per_group]) for b in range(buckets)]
    nulls = sum(ray.get([refs[0] for refs in per_group]))
    outcomes = ray.get(counted)
    repeated = sum(count for count, _ in outcomes)
    examples = [value for _, values in outcomes for value in values][:EXAMPLES]
    problems = []
    if nulls:
        problems.append(f"id column {config.id_column!r} has {nulls} null values")
    if repeated:
        problems.append(f"{repeated} ids appear more than once in {config.id_column!r} (e.g. "
                        + ", ".join(repr(v) for v in examples) + ")")
    if problems:
        raise InputError("the input cannot be processed as it is (no output was written): " + "; ".join(problems)
                         + ". Fix the ids, or pass --id-column '' / check_duplicate_ids: false to run without them.")
