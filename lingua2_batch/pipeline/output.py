"""Atomic, resumable output, one unit per input file.

Layout under the output prefix::

    <name>.parquet                one output file per input file, named from the input's relative path
    _manifest/<name>.json         written right after <name>.parquet is committed: input file, its
                                  fingerprint, rows, tokens, errors, job key, model identity
    _staging/<run id>/...         files being written; removed at the start of every run
    _manifest.json, _summary.json, _SUCCESS   written when every input file is committed

A file is first written completely under ``_staging`` and then committed (atomic rename locally,
server-side copy on object stores), so an output file is always whole. A rerun skips every input file
whose manifest entry matches (same input fingerprint, same job key, output present) and redoes the
rest; since output names are deterministic, redone files replace rather than duplicate.
"""

from __future__ import annotations

import io
import posixpath
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..storage.fs import Location, commit_file, confined_join, read_json, write_json
from ..storage.retry import with_retries
from . import records
from .stages import CARRIED, PATH, result_schema

MANIFEST_DIR = "_manifest"
STAGING_DIR = "_staging"
SUCCESS = "_SUCCESS"
SUMMARY = "_summary.json"
FULL_MANIFEST = "_manifest.json"
RESULT_COLUMNS = frozenset(name for name, _ in result_schema(True))
RATIO_BINS = [1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0]


class AccountingError(RuntimeError):
    """Rows were lost or duplicated between read and write."""


@dataclass
class FileTask:
    input_path: str  # in the input filesystem's form
    input_uri: str
    relative: str  # output name relative to the output prefix
    fingerprint: dict[str, Any]
    expected_rows: int
    rows: int = 0
    parts: list[pa.Table] = field(default_factory=list)
    committed: bool = False


def output_name(relative_input: str) -> str:
    base, dot, ext = relative_input.rpartition(".")
    return (base if dot and "/" not in ext else relative_input) + ".parquet"


def ratio_histogram(ratios: np.ndarray) -> list[int]:
    edges = RATIO_BINS + [np.inf]
    counts, _ = np.histogram(ratios, bins=[0.0] + edges) if len(ratios) else (np.zeros(len(edges), int), None)
    return [int(c) for c in counts]


def entry_stats(table: pa.Table) -> dict[str, Any]:
    """Per-file numbers kept in the manifest (so a resumed job can report the whole output)."""
    errors = table.column("error").to_pylist()
    kinds: dict[str, int] = {}
    for error in errors:
        kind = records.error_kind(error)
        if kind:
            kinds[kind] = kinds.get(kind, 0) + 1
    fine = pc.is_null(table.column("error"))
    ok = table.filter(fine)
    ratios = ok.column("ratio").to_numpy(zero_copy_only=False) if ok.num_rows else np.zeros(0)
    return {
        "rows": table.num_rows,
        "rows_ok": ok.num_rows,
        "rows_errored": table.num_rows - ok.num_rows,
        "errors_by_kind": kinds,
        "origin_tokens": int(pc.sum(ok.column("origin_tokens")).as_py() or 0) if ok.num_rows else 0,
        "compressed_tokens": int(pc.sum(ok.column("compressed_tokens")).as_py() or 0) if ok.num_rows else 0,
        "ratio_histogram": ratio_histogram(np.asarray(ratios, float)),
    }


class Manifest:
    def __init__(self, output: Location, io_deadline_s: float):
        self.output = output
        self.deadline = io_deadline_s

    def _entry_path(self, relative: str) -> str:
        return confined_join(self.output.join(MANIFEST_DIR), relative + ".json")

    def load_entries(self) -> dict[str, dict]:
        fs = self.output.fs
        root = self.output.join(MANIFEST_DIR)

        def load() -> dict[str, dict]:
            if not fs.exists(root):
                return {}
            entries = {}
            for path in fs.find(root):
                if path.endswith(".json"):
                    entry = read_json(fs, path)
                    if entry and "output" in entry:
                        entries[entry["output"]] = entry
            return entries

        return with_retries(load, "reading the manifest", self.deadline)

    def write_entry(self, entry: dict) -> None:
        path = self._entry_path(entry["output"])
        with_retries(lambda: write_json(self.output.fs, path, entry), "writing a manifest entry", self.deadline)

    def read_success(self) -> dict | None:
        return with_retries(lambda: read_json(self.output.fs, self.output.join(SUCCESS)), "reading _SUCCESS",
                            self.deadline)

    def clear_success(self) -> None:
        fs, path = self.output.fs, self.output.join(SUCCESS)
        with_retries(lambda: fs.rm(path) if fs.exists(path) else None, "removing _SUCCESS", self.deadline)

    def write_final(self, entries: dict[str, dict], summary: dict) -> None:
        fs = self.output.fs
        with_retries(lambda: write_json(fs, self.output.join(FULL_MANIFEST), {"files": entries, "job": summary}),
                     "writing _manifest.json", self.deadline)
        with_retries(lambda: write_json(fs, self.output.join(SUMMARY), summary), "writing _summary.json", self.deadline)
        with_retries(lambda: write_json(fs, self.output.join(SUCCESS), summary), "writing _SUCCESS", self.deadline)


class ShardWriter:
    """Receives result batches in any order, groups them by input file, and commits a file the moment
    all of its rows have arrived. Refuses (AccountingError) a row of an unknown or finished file."""

    def __init__(self, output: Location, run_id: str, tasks: list[FileTask], schema: pa.Schema,
                 manifest: Manifest, entry_common: dict[str, Any], previous: "PreviousOutput | None",
                 io_deadline_s: float):
        self.output = output
        self.staging = output.join(STAGING_DIR, run_id)
        self.tasks = {t.input_path: t for t in tasks}
        self._by_normalised = {_normalise(t.input_path): t for t in tasks}
        self.schema = schema
        self.manifest = manifest
        self.entry_common = entry_common
        self.previous = previous
        self.deadline = io_deadline_s
        self.entries: dict[str, dict] = {}
        self.rows_carried = 0
        self.ratios: list[np.ndarray] = []

    def _task(self, path: str) -> FileTask:
        task = self.tasks.get(path) or self._by_normalised.get(_normalise(path))
        if task is None:
            raise AccountingError(f"a result row names input file {path!r}, which is not part of this run")
        return task

    def add(self, batch: pa.Table) -> None:
        paths = batch.column(PATH)
        for path in pc.unique(paths).to_pylist():
            part = batch.filter(pc.equal(paths, path))
            task = self._task(path)
            if task.committed or task.rows + part.num_rows > task.expected_rows:
                raise AccountingError(
                    f"{task.input_uri}: {task.rows + part.num_rows} rows received, more than the "
                    f"{task.expected_rows} it holds (a batch was delivered twice)"
                )
            task.parts.append(self._finalise(part))
            task.rows += part.num_rows
            if task.rows == task.expected_rows:
                self.commit(task)

    def _finalise(self, part: pa.Table) -> pa.Table:
        carried = part.column(CARRIED).to_numpy(zero_copy_only=False)
        if carried.any():
            if self.previous is None:
                raise AccountingError("records were marked as carried over but no previous output is loaded")
            part = self.previous.fill(part, carried, self.schema)
            self.rows_carried += int(carried.sum())
        columns = []
        for name in self.schema.names:
            columns.append(part.column(name).cast(self.schema.field(name).type))
        return pa.Table.from_arrays(columns, schema=self.schema)

    def commit(self, task: FileTask) -> None:
        table = pa.concat_tables(task.parts) if task.parts else self.schema.empty_table()
        task.parts = []
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        data = buffer.getvalue()
        fs = self.output.fs
        final = confined_join(self.output.path, task.relative)
        staged = confined_join(self.staging, task.relative)

        def write_and_commit() -> None:
            if self.output.is_local:
                fs.makedirs(posixpath.dirname(staged), exist_ok=True)
            if not fs.exists(staged) or fs.size(staged) != len(data):
                fs.pipe_file(staged, data)
            commit_file(fs, staged, final)

        with_retries(write_and_commit, f"committing {task.relative}", self.deadline)
        stats = entry_stats(table)
        fine = table.filter(pc.is_null(table.column("error")))
        if fine.num_rows:
            self.ratios.append(fine.column("ratio").to_numpy(zero_copy_only=False))
        entry = {
            **self.entry_common,
            "input": task.input_uri,
            "input_fingerprint": task.fingerprint,
            "output": task.relative,
            "output_uri": self.output.to_uri(final),
            "committed_at": time.time(),
            **stats,
        }
        if stats["rows"] != task.expected_rows:
            raise AccountingError(f"{task.input_uri}: {stats['rows']} rows written, {task.expected_rows} read")
        self.manifest.write_entry(entry)
        self.entries[task.relative] = entry
        task.committed = True

    def finish(self) -> None:
        """Commit the zero-row files; raise if any file is missing rows."""
        missing = []
        for task in self.tasks.values():
            if task.committed:
                continue
            if task.expected_rows == 0:
                self.commit(task)
            else:
                missing.append(f"{task.input_uri}: {task.rows} of {task.expected_rows} rows")
        if missing:
            raise AccountingError("rows unaccounted for (not committed): " + "; ".join(missing[:20]))


def _normalise(path: str) -> str:
    if "://" in path:
        path = path.split("://", 1)[1]
    return path.lstrip("/")


class PreviousOutput:
    """Records of a previous run that may be carried over: same job key, no error."""

    def __init__(self, table: pa.Table, id_column: str):
        self.table = table
        ids = table.column(id_column).to_pylist()
        self.index = {value: row for row, value in enumerate(ids)}
        self.hashes = dict(zip(ids, table.column("content_hash").to_pylist()))
        self.id_column = id_column

    def __len__(self) -> int:
        return self.table.num_rows

    def fill(self, part: pa.Table, carried: np.ndarray, schema: pa.Schema) -> pa.Table:
        ids = part.column(self.id_column).to_pylist()
        rows = [self.index[ids[i]] for i in np.flatnonzero(carried)]
        old = self.table.take(pa.array(rows, pa.int64()))
        positions = np.flatnonzero(carried).tolist()
        out = part
        for name in schema.names:
            # only the results move over; id, pass-through columns and the hash are today's
            if name not in RESULT_COLUMNS or name not in old.column_names or name not in part.column_names:
                continue
            values = part.column(name).to_pylist()
            replacement = old.column(name).to_pylist()
            for position, value in zip(positions, replacement):
                values[position] = value
            out = out.set_column(out.column_names.index(name), name,
                                 pa.array(values, schema.field(name).type))
        return out
