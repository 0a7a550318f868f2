"""The work done on Ray workers, one unit (a run of row groups of one input file) at a time. Each step is a
thin wrapper over one step of the core, and the driver only ever holds references to their results:

* ``prepare_unit`` (CPU task): read the unit's rows (only the needed columns), check every record's text,
  hash it, carry over unchanged records from the previous output of the same input file, then
  ``Compressor.prepare`` (tokenize and chunk) on a tokenizer-only ``Compressor`` (``meta`` device). It
  returns two objects: the unit's rows (``UnitRows``: ids, pass-through columns, carried results) and the
  records to score (``PreparedRecords``); as a task (``prepare_unit_task``) also their number, so that a unit
  with none goes straight to its commit;
* ``Replica`` (actor, GPUs when asked): holds the model and runs ``Compressor.finish`` (score, then select
  words) on the records to score only, returning their results; the rest of the unit never reaches it.
  With ``prepare_in: replica`` (CPU replicas) it runs ``prepare_unit`` itself first, in-process;
* ``commit_unit`` (CPU task): joins rows, fresh and carried results into the part, writes it and its
  manifest entry (see ``output``), each only while the run still holds the output's lease.

A failure on one record never fails its unit: the batch is retried record by record and the failing
record gets an ``error``. Tests pass a ``Replica`` subclass to slow scoring down or crash it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from ..compressor import Compressor
from ..core import compat as compat_mode
from ..core import extractive
from ..core.options import CompressionOptions
from ..storage.fs import Location, resolve
from ..storage.models import localize_model
from ..storage.retry import with_retries
from . import records
from .columns import conform, plain, without_views
from .config import JobConfig
from .errors import AccountingError
from .lease import check_holder
from .output import Manifest, entry_stats, unit_entry, write_part
from .plan import Unit

# Per worker process, reused by every job that runs in it (Ray keeps workers between jobs of a session).
# Holds only the tokenizer side, keyed by everything that builds it: the content identities of the model and
# of an ``hf:`` token counter (not just their paths) and every Compressor argument. Compression options are
# never cached: each unit reads its own job's. A few entries at most (a sweep over models must not pile up).
_tokenizer_cache: dict[tuple, Compressor] = {}
_TOKENIZER_CACHE_SIZE = 4
_lock = threading.Lock()


@dataclass(frozen=True)
class WorkerContext:
    """Everything a worker needs to know about the job, as one typed object (shipped once per call)."""

    config: JobConfig
    input_uri: str  # where the units are read (the input, or its Parquet conversion)
    job_key: str
    model_identity: str
    token_counter_identity: str
    run_id: str
    schema: pa.Schema  # of every output part
    scoring_dtype: str  # what replicas score in, resolved by the plan (it is part of the job key)
    entry_common: dict[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> CompressionOptions:
        return self.config.options()

    @property
    def input_columns(self) -> list[str]:
        config = self.config
        return [config.text_column] + ([config.id_column] if config.id_column else []) + list(config.passthrough_columns)


def compressor_kwargs(config: JobConfig) -> dict[str, Any]:
    """The Compressor's arguments from the job's config, but its dtype: that is the plan's to resolve (the
    replicas' device decides it), and the tokenizing side holds no weights."""
    return dict(
        compat=config.compat, token_counter=config.token_counter,
        tiktoken_file=config.tiktoken_file, max_length=config.max_length, max_batch_tokens=config.max_batch_tokens,
        trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle, revision=config.model_revision,
    )


def result_schema(include_word_labels: bool) -> list[tuple[str, pa.DataType]]:
    columns = [
        ("compressed_text", pa.string()), ("origin_tokens", pa.int64()), ("compressed_tokens", pa.int64()),
        ("ratio", pa.float64()), ("rate", pa.float64()), ("n_chunks", pa.int32()),
    ]
    if include_word_labels:
        columns += [("words", pa.list_(pa.string())), ("word_keep_probabilities", pa.list_(pa.float32())),
                    ("word_labels", pa.list_(pa.int8()))]
    return columns


def scored_schema(include_word_labels: bool) -> pa.Schema:
    """What a replica returns for a unit: the row in the unit, the result columns, scoring's error."""
    return pa.schema([("_row", pa.int64()), *result_schema(include_word_labels), ("error", pa.string())])


def _tokenizer_side(context: WorkerContext) -> Compressor:
    kwargs = compressor_kwargs(context.config)
    key = (context.config.model, context.model_identity, context.token_counter_identity, tuple(sorted(kwargs.items())))
    with _lock:
        if key not in _tokenizer_cache:
            while len(_tokenizer_cache) >= _TOKENIZER_CACHE_SIZE:
                del _tokenizer_cache[next(iter(_tokenizer_cache))]
            _tokenizer_cache[key] = Compressor(localize_model(context.config.model), device="meta", **kwargs)
        return _tokenizer_cache[key]


def _raw_texts(column: pa.ChunkedArray) -> list[Any]:
    """The text values as bytes (strings are read as their UTF-8 bytes), so that a string column holding
    invalid UTF-8 yields a per-record error instead of failing the whole unit on decode."""
    column = plain(column)
    if pa.types.is_string(column.type):
        column = column.cast(pa.binary())
    elif pa.types.is_large_string(column.type):
        column = column.cast(pa.large_binary())
    return column.to_pylist()


@dataclass
class UnitRows:
    """A unit's rows as the part will hold them, less the results: the text when kept, the id and
    pass-through columns, ``content_hash`` and ``error`` (the input checks'), plus the results carried
    over from the previous output for ``carried_rows`` (in that order). Goes from prepare to commit."""

    table: pa.Table
    carried_rows: list[int]
    carried: pa.Table | None


@dataclass
class PreparedRecords:
    """What a replica scores: the prepared records of one unit and their row numbers in it."""

    rows: list[int]
    items: list[Any]  # Compressor.prepare's output, one per row


def read_unit(location: Location, unit: Unit, columns: list[str], deadline_s: float) -> pa.Table:
    def read() -> pa.Table:
        with location.fs.open(unit.file.path, "rb") as handle:
            reader = pq.ParquetFile(handle)
            if not unit.row_groups:
                return reader.schema_arrow.empty_table().select(columns)
            return reader.read_row_groups(list(unit.row_groups), columns=columns)
    table = without_views(with_retries(read, f"reading {unit.file.uri} row groups {list(unit.row_groups)}", deadline_s))
    if table.num_rows != unit.rows:
        raise AccountingError(f"{unit.file.uri}: unit {unit.index} read {table.num_rows} rows, its footer says {unit.rows}")
    return table


def previous_results(context: WorkerContext, previous: tuple[str, list[str]] | None, ids: pa.Array) -> pa.Table | None:
    """The earlier output parts of this unit's input file, restricted to the ids of this unit (``ids``, in
    their plain form) and to records without error: a table of id (typed as ``ids``), content_hash and the
    result columns (None when there is nothing)."""
    if not previous or not previous[1] or not len(ids):
        return None
    location = resolve(previous[0])
    config = context.config
    columns = [config.id_column, "content_hash"] + [name for name, _ in result_schema(config.include_word_labels)]
    tables = []
    for path in previous[1]:
        def read() -> pa.Table | None:
            try:
                with location.fs.open(path, "rb") as handle:
                    return pq.read_table(handle, columns=columns + ["error"])
            except FileNotFoundError:
                return None  # retired since the plan was made
        table = with_retries(read, f"reading previous output {path}", config.io_retry_seconds)
        if table is None or not table.num_rows:
            continue
        table = table.set_column(0, config.id_column, plain(table.column(config.id_column)).cast(ids.type))
        keep = pc.and_(pc.is_null(table.column("error")), pc.is_in(table.column(config.id_column), value_set=ids))
        tables.append(table.filter(keep).select(columns))
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def prepare_unit(context: WorkerContext, unit: Unit,
                 previous: tuple[str, list[str]] | None) -> tuple[UnitRows, PreparedRecords]:
    """CPU step: read, check, hash, carry over, ``Compressor.prepare`` in batches of ``prepare_batch_size``."""
    config = context.config
    table = read_unit(resolve(context.input_uri), unit, context.input_columns, config.io_retry_seconds)
    texts = _raw_texts(table.column(config.text_column))
    ids = plain(table.column(config.id_column)).combine_chunks() if config.id_column else None
    hashes = pa.array(records.content_hashes(texts), pa.string())
    known = previous_results(context, previous, ids.drop_null() if ids is not None else pa.array([]))
    carried_rows, carried_from = _unchanged_rows(known, ids, hashes, config.id_column)
    errors: list[str | None] = [None] * len(texts)
    usable: list[tuple[int, str]] = []
    is_carried = np.zeros(len(texts), dtype=bool)
    is_carried[carried_rows] = True
    for row in np.flatnonzero(~is_carried).tolist():
        text, error = records.check_text(texts[row], config.max_document_chars)
        if error:
            errors[row] = error
        else:
            usable.append((row, text))
    prepared = PreparedRecords([], [])
    compressor, options = _tokenizer_side(context), context.options
    step = max(1, config.prepare_batch_size)
    for start in range(0, len(usable), step):
        batch = usable[start:start + step]
        try:
            items = list(zip(batch, compressor.prepare([t for _, t in batch], options)))
        except Exception:  # isolate the failing record(s)
            items = []
            for row, text in batch:
                try:
                    items.append(((row, text), compressor.prepare([text], options)[0]))
                except Exception as error:  # noqa: BLE001 - a record's failure becomes its error value
                    errors[row] = f"{records.PREPARE_FAILED}: {records.short_exception(error)}"
        for (row, _), item in items:
            prepared.rows.append(row)
            prepared.items.append(item)
    kept = table if config.keep_text else table.drop_columns([config.text_column])
    kept = kept.append_column("content_hash", hashes)
    kept = kept.append_column("error", pa.array(errors, pa.string()))
    carried = None
    if len(carried_rows):
        results = pa.schema([pa.field(name, dtype) for name, dtype in result_schema(config.include_word_labels)])
        carried = known.select(results.names).take(pa.array(carried_from, pa.int64())).cast(results)
    return UnitRows(kept, carried_rows.tolist(), carried), prepared


def prepare_unit_task(context: WorkerContext, unit: Unit,
                      previous: tuple[str, list[str]] | None) -> tuple[UnitRows, PreparedRecords, int]:
    """``prepare_unit`` as a task of three returns: the third, the number of records to score, lets the
    driver send a unit with none (every row carried over or refused by the checks) straight to its commit."""
    rows, records_to_score = prepare_unit(context, unit, previous)
    return rows, records_to_score, len(records_to_score.rows)


def _unchanged_rows(known: pa.Table | None, ids: pa.Array | None, hashes: pa.Array,
                    id_column: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose id has a previous result made from the same text (same content hash), and the row of
    that result in ``known``: matched in Arrow, not row by row (ids are unique, and typed alike: plan checks)."""
    none = np.zeros(0, dtype=np.int64)
    if known is None or ids is None or not known.num_rows:
        return none, none
    positions = pc.index_in(ids, value_set=known.column(id_column).combine_chunks())
    previous_hashes = known.column("content_hash").combine_chunks().take(positions)  # null where the id is new
    same = pc.fill_null(pc.equal(hashes, previous_hashes), False)
    rows = np.flatnonzero(same.to_numpy(zero_copy_only=False))
    return rows, positions.take(pa.array(rows)).to_numpy(zero_copy_only=False).astype(np.int64)


def _n_chunks(prepared: Any) -> int:
    if isinstance(prepared, extractive.ExtractivePrepared):
        return len(extractive.model_chunks(prepared))
    return len(compat_mode.model_chunks(prepared))


def replica_device(config: JobConfig, use_gpu: bool) -> str:
    """Where a replica scores: ``device`` when set, else the GPU Ray gave it, else the CPU."""
    return config.device or ("cuda" if use_gpu else "cpu")


def replica_concurrency(config: JobConfig, device: str) -> int:
    """Units a replica works on at once: ``replica_concurrency`` when set, else two wherever one unit's host work
    can overlap another's forward pass: on a GPU, or on a CPU replica of two cores or more (one unit's tokenizing
    on one core while the other's forward runs on the rest; measured in the README: job/in-process 0.73-0.79 ->
    0.83-0.87 on 2 cores). A one-core replica has nothing to overlap."""
    if config.replica_concurrency is not None:
        return int(config.replica_concurrency)
    return 2 if device != "cpu" or float(config.score_num_cpus) >= 2 else 1


class Replica:
    """One model replica (a Ray actor). A replica that dies is restarted and its call retried by Ray
    (``max_restarts=-1``, ``max_task_retries``); replicas on a lost node are re-created elsewhere."""

    def __init__(self, context: WorkerContext, use_gpu: bool):
        config = context.config
        device = replica_device(config, use_gpu)
        self.compressor = Compressor(localize_model(config.model), device=device, dtype=context.scoring_dtype,
                                     **compressor_kwargs(config))
        # a replica may work on several units at once (``replica_concurrency``): their forward passes overlap,
        # selection (in the Compressor) and tokenizing take turns
        self._prepare_lock = threading.Lock()
        concurrency = replica_concurrency(config, device)
        if device == "cpu" and concurrency > 1:
            # each unit's forward pass on its share of the cores (Ray gives torch one thread per CPU of the
            # replica): passes on all of them would oversubscribe the cores, and every pass's threads would wait
            # for the one a tokenizing or selecting thread displaced
            torch.set_num_threads(max(1, torch.get_num_threads() // concurrency))

    def ready(self) -> bool:
        return True

    def finish(self, prepared: Sequence[Any]) -> list[Any]:
        """``Compressor.finish`` on one batch; a record that fails alone gets an error string."""
        try:
            return self.compressor.finish(prepared) if prepared else []
        except Exception:  # noqa: BLE001 - isolate the failing record(s)
            out = []
            for item in prepared:
                try:
                    out.append(self.compressor.finish([item])[0])
                except Exception as error:  # noqa: BLE001
                    out.append(f"{records.SCORE_FAILED}: {records.short_exception(error)}")
            return out

    def score(self, context: WorkerContext, records_to_score: PreparedRecords) -> pa.Table:
        """Results of one unit's prepared records: ``_row`` (the row in the unit), the result columns and
        ``error`` (set where scoring failed)."""
        config = context.config
        n = len(records_to_score.rows)
        schema = result_schema(config.include_word_labels)
        columns: dict[str, list] = {name: [None] * n for name, _ in schema}
        errors: list[str | None] = [None] * n
        items = records_to_score.items
        step = max(1, config.batch_size)
        for start in range(0, n, step):
            for position, result in enumerate(self.finish(items[start:start + step]), start):
                if isinstance(result, str):
                    errors[position] = result
                    columns["compressed_text"][position] = ""
                    continue
                columns["compressed_text"][position] = result.compressed_prompt
                columns["origin_tokens"][position] = result.origin_tokens
                columns["compressed_tokens"][position] = result.compressed_tokens
                columns["ratio"][position] = None if result.ratio is None else float(result.ratio)
                columns["rate"][position] = None if result.rate is None else float(result.rate)
                columns["n_chunks"][position] = _n_chunks(items[position])
                if config.include_word_labels:
                    words = result.contexts[0]
                    columns["words"][position] = list(words.words)
                    columns["word_keep_probabilities"][position] = np.asarray(words.probabilities, np.float32).tolist()
                    columns["word_labels"][position] = np.asarray(words.labels, np.int8).tolist()
        return pa.Table.from_arrays(
            [pa.array(records_to_score.rows, pa.int64())] + [pa.array(columns[name], dtype) for name, dtype in schema]
            + [pa.array(errors, pa.string())], schema=scored_schema(config.include_word_labels))


    def prepare_and_score(self, context: WorkerContext, unit: Unit,
                          previous: tuple[str, list[str]] | None) -> tuple[UnitRows, pa.Table]:
        """``prepare_unit`` then ``score`` in this replica (``prepare_in: replica``): the unit's rows, for its
        commit task, and the results of its records."""
        with self._prepare_lock:
            rows, records_to_score = prepare_unit(context, unit, previous)
        return rows, self.score(context, records_to_score)


def assemble_part(context: WorkerContext, rows: UnitRows, scored: pa.Table) -> pa.Table:
    """The unit's part in read order: its rows joined with the fresh results (``scored``) and the carried
    ones, in Arrow (never row by row). Rows with neither (failed checks) get empty text and null results."""
    config = context.config
    n = rows.table.num_rows
    names = [name for name, _ in result_schema(config.include_word_labels)]
    order = np.full(n, -1, dtype=np.int64)
    scored_rows = scored.column("_row").to_numpy()
    order[scored_rows] = np.arange(len(scored_rows))
    pieces = [scored.select(names)]
    if rows.carried_rows:
        order[rows.carried_rows] = len(scored_rows) + np.arange(len(rows.carried_rows))
        pieces.append(rows.carried.select(names))
    unscored = np.flatnonzero(order < 0)
    if len(unscored):
        order[unscored] = len(scored_rows) + len(rows.carried_rows) + np.arange(len(unscored))
        blank = {name: pa.nulls(len(unscored), dtype) for name, dtype in result_schema(config.include_word_labels)}
        blank["compressed_text"] = pa.array([""] * len(unscored), pa.string())
        pieces.append(pa.table(blank).select(names))
    results = pa.concat_tables(pieces, promote_options="permissive").take(pa.array(order))
    errors = rows.table.column("error")
    if len(scored_rows):  # scoring's own failures, on rows that passed the checks
        score_errors = np.full(n, None, dtype=object)
        score_errors[scored_rows] = scored.column("error").to_numpy(zero_copy_only=False)
        errors = pc.coalesce(errors, pa.array(score_errors, pa.string()))
    table = rows.table.drop_columns(["error"])
    for name in names:
        table = table.append_column(name, results.column(name))
    return table.append_column("error", errors)


def commit_unit(context: WorkerContext, unit: Unit, rows: UnitRows, scored: pa.Table) -> dict[str, Any]:
    """Unit commit: the part (rows and results joined), then its manifest entry. Returns the entry (small:
    the driver keeps it)."""
    config = context.config
    if rows.table.num_rows != unit.rows:
        raise AccountingError(f"{unit.file.uri}: unit {unit.index} has {rows.table.num_rows} rows for {unit.rows} read")
    results = assemble_part(context, rows, scored)
    table = pa.Table.from_arrays([conform(results.column(name), context.schema.field(name).type)
                                  for name in context.schema.names], schema=context.schema)
    stats = entry_stats(table)  # before the part is in place: nothing after the move may fail but the entry's write
    output = resolve(config.output)

    def still_ours() -> None:  # before the part's move into place and before its entry
        check_holder(output, context.run_id, config.io_retry_seconds)

    final = write_part(output, context.run_id, unit.name, table, config.io_retry_seconds, before_move=still_ours)
    entry = unit_entry(context.entry_common, unit.describe(), unit.file.uri, unit.file.fingerprint, unit.name,
                       output.to_uri(final), stats)
    entry["rows_carried"] = len(rows.carried_rows)  # results taken over from the previous output, not made now
    entry["origin_tokens_carried"] = int(pc.sum(rows.carried.column("origin_tokens")).as_py() or 0) \
        if rows.carried is not None else 0
    still_ours()  # the entry is what makes the unit done
    Manifest(output, config.io_retry_seconds).write_entry(entry)
    return entry
