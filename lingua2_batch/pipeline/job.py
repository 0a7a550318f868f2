"""The compression job, driver side: check the inputs, decide what is left to do, run the Ray Data
pipeline over the remaining input files, commit each file's output when complete, account for every row.

Stages (see ``stages``): ``read_parquet`` (only the needed columns, plus the file path) → prepare
(CPU tasks) → score (actor pool holding the model, GPUs per replica configurable) → the driver's
``ShardWriter`` (per input file: staged, committed, manifest entry). Job-level errors (missing or
mistyped columns, corrupt files, schema drift, duplicate ids, nothing matched) are raised before any
output is committed.

What is retried, and by whom:
* read and prepare tasks: Ray re-runs a task whose worker died, and one that raised (an unreachable
  object store), up to ``max_task_retries`` times (``max_retries`` + ``retry_exceptions``);
* scoring replicas: restarted without limit after a crash (``max_restarts=-1``), the interrupted batch
  re-sent up to ``max_task_retries`` times (``max_task_retries``); replicas on a lost node are
  re-created elsewhere;
* driver-side storage calls (staged writes, commits, manifests): retried with backoff for
  ``io_retry_seconds``;
* the driver itself: rerun the same command; committed files are skipped, partial ones redone.
Ray Data's ``max_errored_blocks`` is pinned to 0, so a block that still fails fails the job rather than
silently dropping rows, and the row counts are checked per file anyway.
"""

from __future__ import annotations

import logging
import posixpath
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..storage.fs import Location, confined_join, list_input_files, pyarrow_filesystem, remove_tree, resolve
from ..storage.hf_datasets import SavedDatasetError, convert_saved_dataset, is_saved_dataset
from ..storage.models import model_identity
from ..storage.retry import with_retries
from . import stages
from .config import JobConfig
from .output import (
    RATIO_BINS, STAGING_DIR, AccountingError, FileTask, Manifest, PreviousOutput, ShardWriter,
    output_name,
)

log = logging.getLogger("lingua2_batch.job")
CONVERTED_INPUT_DIR = "_input_parquet"


class JobError(RuntimeError):
    """The job cannot run or did not complete; nothing of the current file set is left half-written."""


class InputError(JobError):
    """The input is unusable as a whole (reported before any output is committed)."""


@dataclass
class JobReport:
    summary: dict[str, Any]
    output: str
    ok: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def unaccounted(self) -> int:
        return int(self.summary["rows"]["unaccounted"])


def _is_text_type(dtype: pa.DataType) -> bool:
    checks = [pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary]
    for name in ("is_string_view", "is_binary_view"):
        if hasattr(pa.types, name):
            checks.append(getattr(pa.types, name))
    return any(check(dtype) for check in checks) or pa.types.is_null(dtype)


def _fingerprint(fs: Any, path: str) -> dict[str, Any]:
    info = fs.info(path)
    stamp = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
    return {"size": int(info.get("size") or 0), "stamp": str(stamp)}


@dataclass
class InputFile:
    path: str
    uri: str
    relative: str
    rows: int
    schema: pa.Schema
    fingerprint: dict[str, Any]


def inspect_inputs(config: JobConfig, location: Location) -> list[InputFile]:
    """List the input files and read their footers; raise InputError for anything that would make the
    job fail half-way (corrupt or unreadable files, missing or mistyped columns, schema drift)."""
    try:
        root, paths = with_retries(lambda: list_input_files(location), "listing the input", config.io_retry_seconds)
    except FileNotFoundError as error:
        raise InputError(str(error)) from error

    def inspect(path: str) -> InputFile | str:
        try:
            def footer() -> tuple[int, pa.Schema, dict]:
                with location.fs.open(path, "rb") as handle:
                    meta = pq.ParquetFile(handle)
                    return meta.metadata.num_rows, meta.schema_arrow, _fingerprint(location.fs, path)
            rows, schema, fingerprint = with_retries(footer, f"reading the footer of {path}", config.io_retry_seconds)
        except Exception as error:  # noqa: BLE001 - reported per file below
            return f"{location.to_uri(path)}: not a readable Parquet file ({type(error).__name__}: {str(error)[:200]})"
        relative = posixpath.relpath(path, root) if path != root else posixpath.basename(path)
        return InputFile(path, location.to_uri(path), output_name(relative), rows, schema, fingerprint)

    with ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
        inspected = list(pool.map(inspect, paths))
    problems = [item for item in inspected if isinstance(item, str)]
    files = [item for item in inspected if isinstance(item, InputFile)]
    needed = [config.text_column] + ([config.id_column] if config.id_column else []) + list(config.passthrough_columns)
    first_type: dict[str, tuple[pa.DataType, str]] = {}
    for item in files:
        names = set(item.schema.names)
        for column in needed:
            if column not in names:
                role = "text" if column == config.text_column else "id" if column == config.id_column else "pass-through"
                problems.append(f"{item.uri}: no {role} column {column!r} (columns: {sorted(names)[:20]})")
                continue
            dtype = item.schema.field(column).type
            if column == config.text_column and not _is_text_type(dtype):
                problems.append(f"{item.uri}: text column {column!r} has type {dtype}; expected string or binary")
            if column == config.id_column and pa.types.is_nested(dtype):
                problems.append(f"{item.uri}: id column {column!r} has nested type {dtype}; expected a scalar")
            if pa.types.is_null(dtype):
                continue
            seen = first_type.setdefault(column, (dtype, item.uri))
            if seen[0] != dtype:
                problems.append(f"schema drift: column {column!r} is {seen[0]} in {seen[1]} but {dtype} in {item.uri}")
    if problems:
        raise InputError("the input cannot be processed as it is (no output was written):\n  " + "\n  ".join(problems[:50]))
    return files


def check_ids(config: JobConfig, location: Location, files: list[InputFile]) -> None:
    """Ids must be unique and non-null across the whole input (incremental runs match on them)."""
    if not config.id_column or not config.check_duplicate_ids:
        return

    def ids(item: InputFile) -> pa.ChunkedArray:
        def read() -> pa.ChunkedArray:
            with location.fs.open(item.path, "rb") as handle:
                return pq.read_table(handle, columns=[config.id_column]).column(0)
        return with_retries(read, f"reading ids of {item.uri}", config.io_retry_seconds)

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(files)))) as pool:
        columns = [c for c in pool.map(ids, files) if len(c)]
    if not columns:
        return
    import pyarrow.compute as pc

    everything = pa.chunked_array([chunk for column in columns for chunk in column.chunks], type=columns[0].type)
    nulls = everything.null_count
    counts = pc.value_counts(everything.drop_null())
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    problems = []
    if nulls:
        problems.append(f"id column {config.id_column!r} has {nulls} null values")
    if len(repeated):
        examples = ", ".join(repr(v) for v in repeated.field("values")[:5].to_pylist())
        problems.append(f"{len(repeated)} ids appear more than once in {config.id_column!r} (e.g. {examples})")
    if problems:
        raise InputError("the input cannot be processed as it is (no output was written): " + "; ".join(problems)
                         + ". Fix the ids, or pass --id-column '' / check_duplicate_ids: false to run without them.")


def _connect_ray(config: JobConfig) -> None:
    import ray

    if not ray.is_initialized():
        # RAY_ADDRESS (set by `ray job submit`) or a running local cluster is used; else a local Ray starts.
        ray.init(address=config.ray_address, logging_level=logging.WARNING, log_to_driver=True)


def _load_previous(config: JobConfig, key: str, identity: str) -> PreviousOutput | None:
    source = config.previous or (config.output if config.incremental else None)
    if not source:
        return None
    location = resolve(source)
    entries = Manifest(location, config.io_retry_seconds).load_entries()
    usable = [e for e in entries.values() if e.get("job_key") == key and e.get("model_identity") == identity]
    if not usable:
        log.warning("previous output %s has no file made with the same model and options; nothing carried over",
                    source)
        return None
    columns = [config.id_column, "content_hash", "error"] + [name for name, _ in stages.result_schema(config.include_word_labels)]

    def read(entry: dict) -> pa.Table:
        path = confined_join(location.path, entry["output"])
        def once() -> pa.Table:
            with location.fs.open(path, "rb") as handle:
                return pq.read_table(handle, columns=columns)
        return with_retries(once, f"reading previous output {entry['output']}", config.io_retry_seconds)

    with ThreadPoolExecutor(max_workers=min(16, len(usable))) as pool:
        tables = [t for t in pool.map(read, usable) if t.num_rows]
    if not tables:
        return None
    import pyarrow.compute as pc

    table = pa.concat_tables(tables, promote_options="permissive")
    table = table.filter(pc.and_(pc.is_null(table.column("error")), pc.is_valid(table.column("content_hash"))))
    return PreviousOutput(table, config.id_column)


def _output_schema(config: JobConfig, files: list[InputFile]) -> pa.Schema:
    fields: list[pa.Field] = []
    for column in ([config.id_column] if config.id_column else []) + list(config.passthrough_columns):
        dtype = next((f.schema.field(column).type for f in files if not pa.types.is_null(f.schema.field(column).type)),
                     pa.string())
        fields.append(pa.field(column, dtype))
    fields += [pa.field(name, dtype) for name, dtype in stages.result_schema(config.include_word_labels)]
    fields += [pa.field("error", pa.string()), pa.field("content_hash", pa.string())]
    return pa.schema(fields)


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    if not len(values):
        return None
    points = np.percentile(values, [0, 10, 50, 90, 100])
    return {"min": float(points[0]), "p10": float(points[1]), "p50": float(points[2]), "p90": float(points[3]),
            "max": float(points[4]), "mean": float(values.mean())}


def _ray_retries() -> dict[str, Any]:
    """Task attempts beyond the first and replica restarts in this Ray job (needs the dashboard)."""
    try:
        import ray
        from ray.util.state import list_actors, list_tasks

        job_id = ray.get_runtime_context().get_job_id()
        tasks = list_tasks(filters=[("job_id", "=", job_id)], limit=10000, raise_on_missing_output=False, detail=True)
        retried = sum(1 for t in tasks if (getattr(t, "attempt_number", 0) or 0) > 0)
        actors = list_actors(filters=[("job_id", "=", job_id)], limit=10000, raise_on_missing_output=False, detail=True)
        restarts = sum(int(getattr(a, "num_restarts", 0) or 0) for a in actors)
        return {"task_attempts_retried": retried, "actor_restarts": restarts}
    except Exception as error:  # noqa: BLE001 - the numbers are informative only
        return {"unavailable": type(error).__name__}


def build_summary(config: JobConfig, files: list[InputFile], entries: dict[str, dict], *, key: str, identity: str,
                  started: float, rows_processed: int, rows_carried: int, ratios_this_run: np.ndarray,
                  skipped: int, model_work: bool, status: str, retries: dict[str, Any] | None = None,
                  error: str | None = None) -> dict[str, Any]:
    relevant = [entries[f.relative] for f in files if f.relative in entries]
    rows_read = sum(f.rows for f in files)
    written = sum(int(e["rows"]) for e in relevant)
    errored = sum(int(e["rows_errored"]) for e in relevant)
    kinds: dict[str, int] = {}
    for entry in relevant:
        for kind, count in entry.get("errors_by_kind", {}).items():
            kinds[kind] = kinds.get(kind, 0) + int(count)
    origin = sum(int(e["origin_tokens"]) for e in relevant)
    compressed = sum(int(e["compressed_tokens"]) for e in relevant)
    histogram = np.sum([e["ratio_histogram"] for e in relevant], axis=0).astype(int).tolist() if relevant else []
    elapsed = time.time() - started
    return {
        "status": status,
        "error": error,
        "input": config.input,
        "output": config.output,
        "model": config.model,
        "model_identity": identity,
        "compat": config.compat or "extractive",
        "options": config.options().to_dict(),
        "job_key": key,
        "files": {"total": len(files), "committed": len(relevant), "skipped_already_done": skipped,
                  "processed_this_run": len(relevant) - skipped if status == "succeeded" else None},
        "rows": {
            "read": rows_read, "written": written, "unaccounted": rows_read - written,
            "errored": errored, "errors_by_kind": kinds,
            "processed_this_run": rows_processed, "carried_over": rows_carried,
        },
        "tokens": {"origin": origin, "compressed": compressed,
                   "overall_ratio": (origin / compressed) if compressed else None},
        "ratio_per_record": {"histogram_upper_edges": RATIO_BINS + ["inf"], "histogram": histogram,
                             "this_run": _quantiles(ratios_this_run)},
        "time_s": round(elapsed, 3),
        "throughput": {"rows_per_s": rows_processed / elapsed if elapsed > 0 else None,
                       "origin_tokens_per_s": (sum(int(entries[f.relative]["origin_tokens"]) for f in files
                                                   if f.relative in entries) / elapsed) if model_work and elapsed > 0 else None},
        "model_work": model_work,
        "retries": retries or {},
    }


def _needed_columns(config: JobConfig) -> list[str]:
    return [config.text_column] + ([config.id_column] if config.id_column else []) + list(config.passthrough_columns)


def _parquet_input(config: JobConfig, location: Location, output: Location) -> Location:
    """The input as Parquet files: as given, or a ``save_to_disk`` dataset's shards converted once
    under the output prefix (``_input_parquet/``, ignored by Parquet readers as a hidden folder)."""
    saved = is_saved_dataset(location)
    if config.input_format == "parquet" or (config.input_format == "auto" and not saved):
        return location
    if not saved:
        raise InputError(f"{config.input}: not a dataset saved with save_to_disk (no state.json)")
    try:
        return with_retries(lambda: convert_saved_dataset(location, output.child(CONVERTED_INPUT_DIR)),
                            "converting the saved dataset to Parquet", config.io_retry_seconds)
    except SavedDatasetError as error:
        raise InputError(str(error)) from error


def run_job(config: JobConfig) -> JobReport:
    """Run (or finish) the job described by ``config``. Returns a report whose ``summary`` is also
    written as ``_summary.json`` and ``_SUCCESS`` under the output; raises JobError/InputError when the
    job cannot complete (what was committed before stays committed; a rerun resumes)."""
    started = time.time()
    config.validate()
    key = config.job_key()
    in_location, out_location = resolve(config.input), resolve(config.output)
    if in_location.fs.protocol == out_location.fs.protocol and (
        out_location.path == in_location.path or out_location.path.startswith(in_location.path.rstrip("/") + "/")
        or in_location.path.startswith(out_location.path.rstrip("/") + "/")
    ):
        raise InputError(f"output {config.output} must not be the input {config.input} or overlap it")
    in_location = _parquet_input(config, in_location, out_location)
    files = inspect_inputs(config, in_location)
    check_ids(config, in_location, files)
    identity = model_identity(config.model, config.model_revision)
    manifest = Manifest(out_location, config.io_retry_seconds)
    entries = manifest.load_entries()

    def done(item: InputFile) -> bool:
        entry = entries.get(item.relative)
        return bool(entry) and entry.get("job_key") == key and entry.get("model_identity") == identity \
            and entry.get("input_fingerprint") == item.fingerprint and int(entry.get("rows", -1)) == item.rows \
            and entry.get("input") == item.uri and out_location.fs.exists(confined_join(out_location.path, item.relative))

    todo = [f for f in files if not done(f)]
    skipped = len(files) - len(todo)
    common = dict(config=config, files=files, key=key, identity=identity, started=started, skipped=skipped)
    if not todo:
        summary = build_summary(entries=entries, rows_processed=0, rows_carried=0, ratios_this_run=np.zeros(0),
                                model_work=False, status="succeeded", **common)
        success = manifest.read_success()
        if not success or success.get("job_key") != key or success.get("rows") != summary["rows"]:
            manifest.write_final({f.relative: entries[f.relative] for f in files}, summary)
        return JobReport(summary, config.output)

    manifest.clear_success()
    with_retries(lambda: remove_tree(out_location.fs, out_location.join(STAGING_DIR)), "clearing staging",
                 config.io_retry_seconds)
    previous = _load_previous(config, key, identity)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    writer = ShardWriter(
        out_location, run_id, [FileTask(f.path, f.uri, f.relative, f.fingerprint, f.rows) for f in todo],
        _output_schema(config, files), manifest,
        {"job_key": key, "model_identity": identity, "model": config.model, "compat": config.compat or "extractive",
         "options_fingerprint": config.options().fingerprint(), "run_id": run_id},
        previous, config.io_retry_seconds,
    )
    with_data = [f for f in todo if f.rows > 0]
    retries: dict[str, Any] = {}
    error_text = None
    try:
        if with_data:
            _connect_ray(config)
            dataset = build_dataset(config, in_location, [f.path for f in with_data], previous, identity)
            for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                writer.add(batch)
            retries = _ray_retries()
        writer.finish()
    except Exception as error:
        error_text = f"{type(error).__name__}: {str(error)[:2000]}"
        entries.update(writer.entries)
        summary = build_summary(entries=entries, rows_processed=sum(t.rows for t in writer.tasks.values()),
                                rows_carried=writer.rows_carried,
                                ratios_this_run=np.concatenate(writer.ratios) if writer.ratios else np.zeros(0),
                                model_work=True, status="failed", retries=retries, error=error_text, **common)
        _write_failed_summary(out_location, summary, config)
        if isinstance(error, (JobError, AccountingError)):
            raise JobError(str(error)) from error
        raise JobError(f"the job failed: {error_text}. Committed files are kept; rerun the same command to "
                       "finish the rest.") from error
    entries.update(writer.entries)
    summary = build_summary(entries=entries, rows_processed=sum(t.rows for t in writer.tasks.values()),
                            rows_carried=writer.rows_carried,
                            ratios_this_run=np.concatenate(writer.ratios) if writer.ratios else np.zeros(0),
                            model_work=bool(with_data), status="succeeded", retries=retries, **common)
    if summary["rows"]["unaccounted"]:
        summary["status"] = "failed"
        _write_failed_summary(out_location, summary, config)
        raise JobError(f"{summary['rows']['unaccounted']} rows unaccounted for")
    manifest.write_final({f.relative: entries[f.relative] for f in files}, summary)
    with_retries(lambda: remove_tree(out_location.fs, out_location.join(STAGING_DIR)), "clearing staging",
                 config.io_retry_seconds)
    return JobReport(summary, config.output)


def _write_failed_summary(location: Location, summary: dict, config: JobConfig) -> None:
    from ..storage.fs import write_json

    try:
        with_retries(lambda: write_json(location.fs, location.join("_summary.json"), summary),
                     "writing _summary.json", min(config.io_retry_seconds, 30))
    except Exception:  # noqa: BLE001 - the original failure matters more
        log.exception("could not write the failure summary")


def build_dataset(config: JobConfig, location: Location, paths: list[str], previous: PreviousOutput | None,
                  identity: str):
    """read → prepare (CPU tasks) → score (actor pool): a lazy Ray Dataset of result rows."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.max_errored_blocks = 0  # never drop a failing block silently
    context.execution_options.preserve_order = True  # rows leave in input order: deterministic files
    context.enable_progress_bars = False
    num_gpus = config.num_gpus
    if num_gpus is None:
        num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    counter = config.token_counter or ""
    spec = {**config.to_dict(), "model_identity": identity,
            "token_counter_identity": model_identity(counter[3:]) if counter.startswith("hf:") else counter}
    holder = [ray.put(previous.hashes)] if previous is not None and len(previous) else None
    retry = {"max_retries": config.max_task_retries, "retry_exceptions": True}
    dataset = ray.data.read_parquet(
        paths, filesystem=pyarrow_filesystem(location), include_paths=True,
        partitioning=None, file_extensions=None, num_cpus=config.read_num_cpus, ray_remote_args=retry,
    ).select_columns(_needed_columns(config) + [stages.PATH])  # projection pushed down into the reader
    dataset = dataset.map_batches(
        stages.prepare_batch, fn_kwargs={"spec": spec, "previous": holder}, batch_format="pyarrow",
        batch_size=config.prepare_batch_size, num_cpus=config.prepare_num_cpus, **retry,
    )
    return dataset.map_batches(
        stages.ScoreUDF, fn_constructor_kwargs={"spec": spec, "use_gpu": num_gpus > 0}, batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=config.min_replicas, max_size=config.max_replicas),
        batch_size=config.batch_size, num_gpus=num_gpus, num_cpus=config.score_num_cpus,
        max_restarts=-1, max_task_retries=config.max_task_retries,
    )
