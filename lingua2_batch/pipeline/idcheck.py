"""Ids must be unique and non-null across the whole input (incremental runs match on them). Checked
before anything is committed, without bringing the ids to the driver: each unit's ids are hashed into
buckets by a task, each bucket is counted by another task, and only the counts and a few examples of
repeated ids come back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..storage.fs import resolve
from .config import JobConfig
from .errors import InputError
from .plan import Unit

EXAMPLES = 5
_IDS_PER_BUCKET = 4_000_000  # sizes a counting task's memory (~100 MB of ids)
MAX_BUCKETS = 256


def _bucket_ids(config: JobConfig, input_uri: str, unit: Unit, id_type: pa.DataType, buckets: int) -> list[Any]:
    """[null count, bucket 0 ids, bucket 1 ids, ...] for one unit."""
    from pandas.util import hash_array

    from .stages import read_unit

    column = read_unit(resolve(input_uri), unit, [config.id_column], config.io_retry_seconds).column(0)
    nulls = column.null_count
    if pa.types.is_null(column.type):
        return [nulls] + [pa.array([], id_type)] * buckets
    ids = column.drop_null().combine_chunks().cast(id_type)
    if buckets == 1:
        return [nulls, ids]
    positions = hash_array(np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object)) % np.uint64(buckets)
    order = np.argsort(positions, kind="stable")
    bounds = np.searchsorted(positions[order], np.arange(buckets + 1))
    taken = ids.take(pa.array(order))
    return [nulls] + [taken.slice(bounds[b], bounds[b + 1] - bounds[b]) for b in range(buckets)]


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
    id_type = id_type or pa.string()
    bucket_task = ray.remote(_bucket_ids).options(num_returns=buckets + 1, num_cpus=config.prepare_num_cpus,
                                                  max_retries=config.max_task_retries, retry_exceptions=True)
    per_unit = [bucket_task.remote(config, input_uri, unit, id_type, buckets) for unit in units]
    count_task = ray.remote(_count_bucket).options(num_cpus=config.prepare_num_cpus,
                                                   max_retries=config.max_task_retries, retry_exceptions=True)
    counted = [count_task.remote(*[refs[b + 1] for refs in per_unit]) for b in range(buckets)]
    nulls = sum(ray.get([refs[0] for refs in per_unit]))
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
