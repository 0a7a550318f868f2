"""The output prefix and its commit protocol (the task-commit / job-commit idea of Hadoop and Spark output
committers). Layout::

    <input name>/part-00000.parquet   one part per unit of work (run of row groups) of an input file
    _manifest/<input name>/part-00000.json   the unit's entry, written right after its part is committed
    _staging/<run id>/...             this run's files being written
    _lease.json                       the lease of the run writing now (see ``lease``)
    _summary.json                     ``running`` while a run works, then its outcome
    _manifest.json, _SUCCESS          the job commit: every current part, written last

Unit commit (by the worker that produced the unit): the part is written whole under this run's staging,
moved to its deterministic final name (atomic rename locally, server-side copy on object stores), then its
manifest entry is written. A unit run twice (a retry after a crash, a duplicated task) writes the same name
with the same rows: one part, never two.

Job commit (by the driver, when every unit is committed): parts and entries that belong to no current unit
(inputs deleted, renamed or shrunk since an earlier run, files of another layout) are removed, then
``_manifest.json``, ``_summary.json`` and ``_SUCCESS``. A reader who sees ``_SUCCESS`` reads exactly the
current input's rows, once each."""

from __future__ import annotations

import contextlib
import io
import posixpath
import time
import uuid
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..storage.fs import Location, commit_file, confined_join, is_hidden, read_json, remove_tree, write_json
from ..storage.retry import with_retries
from . import records

MANIFEST_DIR = "_manifest"
STAGING_DIR = "_staging"
SUCCESS = "_SUCCESS"
SUMMARY = "_summary.json"
FULL_MANIFEST = "_manifest.json"
# upper edges of the per-record ratio histogram; each bin holds the ratios up to and including its edge
RATIO_BINS = [1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0]


def ratio_histogram(ratios: np.ndarray) -> list[int]:
    """Counts per bin of ``RATIO_BINS`` + [inf]; a ratio equal to an edge belongs to the bin it closes."""
    ratios = np.asarray(ratios, float)
    ratios = ratios[~np.isnan(ratios)]  # an empty compression's ratio (null) is counted as inf by the caller
    positions = np.searchsorted(np.asarray(RATIO_BINS, float), ratios, side="left")
    return np.bincount(positions, minlength=len(RATIO_BINS) + 1).astype(int).tolist()


def entry_stats(table: pa.Table) -> dict[str, Any]:
    """Per-unit numbers kept in the manifest (so any later run can report the whole output). Reads only the
    result columns (pass-through columns may be of types Arrow's filter does not take)."""
    table = table.select(["error", "ratio", "origin_tokens", "compressed_tokens"])
    kinds: dict[str, int] = {}
    for error in table.column("error").to_pylist():
        kind = records.error_kind(error)
        if kind:
            kinds[kind] = kinds.get(kind, 0) + 1
    ok = table.filter(pc.is_null(table.column("error")))
    ratios = ok.column("ratio").to_numpy(zero_copy_only=False).astype(float) if ok.num_rows else np.zeros(0)
    return {
        "rows": table.num_rows,
        "rows_ok": ok.num_rows,
        "rows_errored": table.num_rows - ok.num_rows,
        "errors_by_kind": kinds,
        "origin_tokens": int(pc.sum(ok.column("origin_tokens")).as_py() or 0) if ok.num_rows else 0,
        "compressed_tokens": int(pc.sum(ok.column("compressed_tokens")).as_py() or 0) if ok.num_rows else 0,
        "ratio_histogram": ratio_histogram(np.nan_to_num(ratios, nan=np.inf)),
        "ratio_quantiles": _quantiles(ratios[np.isfinite(ratios)]),
    }


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    if not len(values):
        return None
    points = np.percentile(values, [0, 10, 50, 90, 100])
    return {"min": float(points[0]), "p10": float(points[1]), "p50": float(points[2]), "p90": float(points[3]),
            "max": float(points[4]), "mean": float(values.mean()), "count": int(len(values))}


def merge_quantiles(parts: Iterable[dict | None]) -> dict[str, float] | None:
    """Approximate quantiles of a union from per-unit quantiles (count-weighted); exact for one unit."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    weights = np.array([p["count"] for p in parts], float)
    merged = {key: float(np.average([p[key] for p in parts], weights=weights)) for key in ("p10", "p50", "p90", "mean")}
    merged.update(min=min(p["min"] for p in parts), max=max(p["max"] for p in parts), count=int(weights.sum()))
    return merged


def write_part(output: Location, run_id: str, name: str, table: pa.Table, deadline_s: float,
               before_move: Callable[[], None] = lambda: None) -> str:
    """Unit commit, first half: the part whole under this run's staging, then moved to ``name`` (right after
    ``before_move``, which may raise to stop it: the lease check). Returns the final path. Safe to repeat: the
    same unit always lands on the same name."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    data = buffer.getvalue()
    fs = output.fs
    final = confined_join(output.path, name)
    staged = confined_join(output.join(STAGING_DIR, run_id), f"{name}.{uuid.uuid4().hex[:8]}")

    def write_and_commit() -> None:
        if output.is_local:
            fs.makedirs(posixpath.dirname(staged), exist_ok=True)
        if not fs.exists(staged) or fs.size(staged) != len(data):
            fs.pipe_file(staged, data)
        try:
            before_move()
        except BaseException:
            with contextlib.suppress(Exception):  # a staged file of a stopped commit would linger until cleared
                fs.rm(staged)
            raise
        commit_file(fs, staged, final)

    with_retries(write_and_commit, f"committing {name}", deadline_s)
    return final


class Manifest:
    """The per-unit entries under ``_manifest/`` and the job-commit documents."""

    def __init__(self, output: Location, io_deadline_s: float):
        self.output = output
        self.deadline = io_deadline_s

    def entry_path(self, part_name: str) -> str:
        return confined_join(self.output.join(MANIFEST_DIR), part_name[: -len(".parquet")] + ".json")

    def load_entries(self) -> dict[str, dict]:
        """Every unit entry, by part name."""
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
        path = self.entry_path(entry["output"])
        with_retries(lambda: write_json(self.output.fs, path, entry), "writing a manifest entry", self.deadline)

    def read(self, name: str) -> dict | None:
        return with_retries(lambda: read_json(self.output.fs, self.output.join(name)), f"reading {name}",
                            self.deadline)

    def write(self, name: str, document: dict) -> None:
        with_retries(lambda: write_json(self.output.fs, self.output.join(name), document), f"writing {name}",
                     self.deadline)

    def remove(self, name: str) -> None:
        fs, path = self.output.fs, self.output.join(name)
        with_retries(lambda: fs.rm(path) if fs.exists(path) else None, f"removing {name}", self.deadline)

    def data_files(self) -> list[str]:
        """Every file a reader of the prefix would read (all but ``_*`` and ``.*`` names), relative."""
        fs, root = self.output.fs, self.output.path

        def listing() -> list[str]:
            if not fs.exists(root):
                return []
            # string work only: posixpath.relpath consults the local working directory, which an object-store
            # path has nothing to do with (a Ray job driver's can be gone by the job commit)
            prefix = root.rstrip("/") + "/"
            found = [p[len(prefix):] for p in fs.find(root) if p.startswith(prefix)]
            return [p for p in found if not is_hidden(p)]

        return with_retries(listing, "listing the output", self.deadline)

    def retire(self, current_parts: set[str], entries: dict[str, dict]) -> list[str]:
        """Job commit, first step: remove every data file and entry that is not a current part."""
        stale = sorted(set(self.data_files()) - current_parts)
        fs = self.output.fs
        for name in stale:
            path = confined_join(self.output.path, name)
            with_retries(lambda: fs.rm(path) if fs.exists(path) else None, f"retiring {name}", self.deadline)
        for name in sorted(set(entries) - current_parts):
            path = self.entry_path(name)
            with_retries(lambda: fs.rm(path) if fs.exists(path) else None, f"retiring the entry of {name}",
                         self.deadline)
        return stale

    def commit_job(self, entries: dict[str, dict], summary: dict) -> None:
        """Job commit, last step: the full manifest, the summary, then ``_SUCCESS``."""
        self.write(FULL_MANIFEST, {"parts": entries, "job": summary})
        self.write(SUMMARY, summary)
        self.write(SUCCESS, summary)

    def clear_staging(self) -> None:
        """Remove ``_staging/``. Only called while holding the lease: any other run's staging there belongs
        to a run that is gone."""
        with_retries(lambda: remove_tree(self.output.fs, self.output.join(STAGING_DIR)), "clearing staging",
                     self.deadline)


def unit_entry(common: dict[str, Any], unit_description: dict[str, Any], input_uri: str,
               input_fingerprint: dict[str, Any], name: str, output_uri: str, stats: dict[str, Any]) -> dict[str, Any]:
    """A unit's manifest entry; ``stats``: ``entry_stats`` of its part."""
    return {**common, "input": input_uri, "input_fingerprint": input_fingerprint, "unit": unit_description,
            "output": name, "output_uri": output_uri, "committed_at": time.time(), **stats}
