"""Planning, on the driver, from metadata only: list the input by the one listing rule, read every file's
Parquet footer, check the columns, and cut each file into units of work from its row groups.

A unit is a run of consecutive row groups of one file, up to ``unit_rows`` rows or ``unit_bytes`` of
uncompressed data (a single larger row group is a unit of its own). Units do not follow file sizes: a
large file is scored by several replicas at once, and a unit's output is one part file with a name
derived from the input file and the unit's index (``output_folder(relative)/part-00003.parquet``)."""

from __future__ import annotations

import dataclasses
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from ..storage.fs import PARQUET_SUFFIXES, InputListing, Location, list_input_files, without_query
from ..storage.redact import redact_uri
from ..storage.retry import with_retries
from .columns import family, is_text_type, plain_type
from .config import ALL_COLUMNS, OUTPUT_COLUMNS, JobConfig
from .errors import InputError

# characters kept as they are in output names; anything else is percent-encoded (safe for every reader and
# object store). An escape already in the input's name (``%3A``, as Spark writes partition values) stays as it
# is, so that a reader decodes the output's partition value to the input's; names that would meet are refused.
_SAFE_NAME_CHARACTERS = "/._-=+,@ ()"
_ESCAPE = re.compile(r"(%[0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class InputFile:
    path: str  # in the input filesystem's form
    uri: str  # redacted: safe for manifests, logs and messages
    relative: str  # the input's name relative to the input root
    rows: int
    schema: pa.Schema
    fingerprint: dict[str, Any]
    row_groups: tuple[tuple[int, int], ...]  # (rows, uncompressed bytes) per row group

    @property
    def output_folder(self) -> str:
        return output_folder(self.relative)


@dataclass(frozen=True)
class Unit:
    """One unit of work: rows ``row_offset .. row_offset + rows`` of one input file (its row groups
    ``row_groups``), written as ``name``."""

    file: InputFile
    index: int
    count: int  # units of this file
    row_groups: tuple[int, ...]
    row_offset: int
    rows: int

    @property
    def name(self) -> str:
        return f"{self.file.output_folder}/part-{self.index:05d}.parquet"

    def describe(self) -> dict[str, Any]:
        """What a manifest entry records of the unit, and what a rerun compares."""
        return {"index": self.index, "of": self.count, "row_groups": list(self.row_groups),
                "row_offset": self.row_offset, "rows": self.rows}


def output_folder(relative_input: str) -> str:
    """``a/b.parquet`` → ``a/b``: the folder that holds one input file's parts. Folders named ``key=value``
    stay partitions; a file's own ``=`` is encoded, since its folder would read as a partition column
    (``shard=1.parquet`` → ``shard%3D1``: no column ``shard`` the input did not have)."""
    lowered = relative_input.lower()
    base = relative_input
    for suffix in PARQUET_SUFFIXES:
        if lowered.endswith(suffix):
            base = relative_input[: -len(suffix)]
            break
    folders, _, name = base.rpartition("/")
    encoded_name = _encode_name(name, _SAFE_NAME_CHARACTERS.replace("=", ""))
    return f"{_encode_name(folders, _SAFE_NAME_CHARACTERS)}/{encoded_name}" if folders else encoded_name


def _encode_name(text: str, safe: str) -> str:
    pieces = _ESCAPE.split(text)  # odd positions: escapes already in the name
    return "".join(piece if position % 2 else quote(piece, safe=safe) for position, piece in enumerate(pieces))


def _fingerprint(fs: Any, path: str) -> dict[str, Any]:
    info = fs.info(path)
    stamp = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
    return {"size": int(info.get("size") or 0), "stamp": str(stamp)}


def list_inputs(config: JobConfig, location: Location) -> InputListing:
    try:
        listing = with_retries(lambda: list_input_files(location), "listing the input", config.io_retry_seconds)
    except FileNotFoundError as error:
        raise InputError(redact_uri(str(error))) from error
    if listing.refused:
        names = "; ".join(f"{name!r}: {why}" for name, why in listing.refused[:20])
        raise InputError(f"input files the job cannot read (rename them, or move them out of the input): {names}")
    return listing


def inspect_inputs(config: JobConfig, location: Location, listing: InputListing) -> list[InputFile]:
    """Read every listed file's footer; raise InputError for anything that would make the job fail
    half-way (corrupt or unreadable files, missing or mistyped columns, schema drift, two inputs that
    would write to one output name)."""
    root, paths = listing.root, listing.files

    def inspect(path: str) -> InputFile | str:
        uri = redact_uri(location.to_uri(path))
        try:
            def footer() -> tuple[pq.FileMetaData, dict]:
                with location.fs.open(path, "rb") as handle:
                    return pq.ParquetFile(handle).metadata, _fingerprint(location.fs, path)
            metadata, fingerprint = with_retries(footer, f"reading the footer of {uri}", config.io_retry_seconds)
        except Exception as error:  # noqa: BLE001 - reported per file below
            return f"{uri}: not a readable Parquet file ({type(error).__name__}: {redact_uri(str(error))[:200]})"
        name = without_query(location.fs, path)
        relative = posixpath.relpath(name, root) if name != root else posixpath.basename(name)
        groups = tuple((metadata.row_group(i).num_rows, metadata.row_group(i).total_byte_size)
                       for i in range(metadata.num_row_groups))
        return InputFile(path, uri, relative, metadata.num_rows, metadata.schema.to_arrow_schema(), fingerprint, groups)

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(paths)))) as pool:
        inspected = list(pool.map(inspect, paths))
    problems = [item for item in inspected if isinstance(item, str)]
    files = [item for item in inspected if isinstance(item, InputFile)]
    problems += _column_problems(expand_passthrough(config, files), files)
    folders: dict[str, str] = {}
    for item in files:
        other = folders.setdefault(item.output_folder, item.uri)
        if other != item.uri:
            problems.append(f"{other} and {item.uri} would both write to output folder {item.output_folder!r}")
    if problems:
        raise InputError("the input cannot be processed as it is (no output was written):\n  " + "\n  ".join(problems[:50]))
    return files


def expand_passthrough(config: JobConfig, files: list[InputFile]) -> JobConfig:
    """``passthrough_columns: ["*"]`` becomes the first file's columns but the text and id columns (every other
    file must then have them too). An input column named like an output column is refused, as when named."""
    if list(config.passthrough_columns) != [ALL_COLUMNS]:
        return config
    names = [n for n in (files[0].schema.names if files else []) if n not in (config.text_column, config.id_column)]
    clash = sorted(set(names) & (set(OUTPUT_COLUMNS) | {"path"}))
    if clash:
        raise InputError(f"input columns {clash} ({files[0].uri}) clash with output columns of the same name: name "
                         "the pass-through columns to keep instead of '*', or rename those columns")
    return dataclasses.replace(config, passthrough_columns=names)


def _column_problems(config: JobConfig, files: list[InputFile]) -> list[str]:
    problems = []
    needed = [config.text_column] + ([config.id_column] if config.id_column else []) + list(config.passthrough_columns)
    first_type: dict[str, tuple[pa.DataType, str]] = {}
    for item in files:
        names = set(item.schema.names)
        for column in needed:
            role = "text" if column == config.text_column else "id" if column == config.id_column else "pass-through"
            if column not in names:
                problems.append(f"{item.uri}: no {role} column {column!r} (columns: {sorted(names)[:20]})")
                continue
            same_name = len(item.schema.get_all_field_indices(column))
            if same_name > 1:
                problems.append(f"{item.uri}: {same_name} columns are named {column!r}, the {role} column: which "
                                "one to read is ambiguous")
                continue
            dtype = item.schema.field(column).type
            if column == config.text_column and not is_text_type(dtype):
                problems.append(f"{item.uri}: text column {column!r} has type {dtype}; expected string or binary")
            if column == config.id_column and pa.types.is_nested(plain_type(dtype)):
                problems.append(f"{item.uri}: id column {column!r} has nested type {dtype}; expected a scalar")
            if pa.types.is_null(dtype):
                continue
            # string in one file and large_string (or a dictionary of strings) in another is one schema
            seen = first_type.setdefault(column, (dtype, item.uri))
            if family(seen[0]) != family(dtype):
                problems.append(f"schema drift: column {column!r} is {seen[0]} in {seen[1]} but {dtype} in {item.uri}")
    return problems


def plan_units(files: list[InputFile], unit_rows: int, unit_bytes: int) -> list[Unit]:
    """Cut each file into units of consecutive row groups (see the module's docstring)."""
    units: list[Unit] = []
    for item in files:
        spans: list[tuple[tuple[int, ...], int, int]] = []  # (row groups, first row, rows)
        current: list[int] = []
        rows = size = offset = start = 0
        for index, (group_rows, group_bytes) in enumerate(item.row_groups):
            if current and (rows + group_rows > unit_rows or size + group_bytes > unit_bytes):
                spans.append((tuple(current), start, rows))
                current, rows, size, start = [], 0, 0, offset
            current.append(index)
            rows += group_rows
            size += group_bytes
            offset += group_rows
        if current or not spans:  # a file without row groups is one empty unit
            spans.append((tuple(current), start, rows))
        units += [Unit(item, index, len(spans), groups, first, count)
                  for index, (groups, first, count) in enumerate(spans)]
    return units
