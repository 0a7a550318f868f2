"""Input columns of any Arrow type a Parquet writer produces. Pandas writes ``category`` columns as
dictionaries, polars writes ``large_string``, newer writers ``string_view``, and ids may be extension types
(``arrow.uuid``); Arrow's kernels do not hash, compare or take every one of these, so ids and texts are
matched in a plain form, and files that differ only in such encodings are one schema, not drift."""

from __future__ import annotations

import pyarrow as pa

Column = pa.Array | pa.ChunkedArray


def _is_view(dtype: pa.DataType, kind: str) -> bool:
    check = getattr(pa.types, f"is_{kind}_view", None)  # view types are newer than some supported pyarrows
    return bool(check and check(dtype))


def plain_type(dtype: pa.DataType) -> pa.DataType:
    """The type of ``plain(column)``: dictionaries decoded, extension types as their storage, view types as
    their plain types."""
    if pa.types.is_dictionary(dtype):
        return plain_type(dtype.value_type)
    if isinstance(dtype, pa.BaseExtensionType):
        return plain_type(dtype.storage_type)
    if _is_view(dtype, "string"):
        return pa.string()
    if _is_view(dtype, "binary"):
        return pa.binary()
    return dtype


def plain(column: Column) -> Column:
    """The same values in ``plain_type``, which every kernel the job uses (hash, compare, take) supports."""
    if isinstance(column.type, pa.BaseExtensionType):
        if isinstance(column, pa.ChunkedArray):
            column = pa.chunked_array([chunk.storage for chunk in column.chunks], column.type.storage_type)
        else:
            column = column.storage
    target = plain_type(column.type)
    return column if column.type == target else column.cast(target)


def family(dtype: pa.DataType) -> pa.DataType:
    """What a column's type is, whatever its encoding: files whose columns agree on this are one schema (the
    output takes the first file's type, and the others' values are cast to it)."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_large_string(dtype) or _is_view(dtype, "string"):
        return pa.string()
    if pa.types.is_large_binary(dtype) or _is_view(dtype, "binary"):
        return pa.binary()
    return dtype


def is_text_type(dtype: pa.DataType) -> bool:
    """Whether a column can hold the texts: strings or bytes in any encoding (extension types over them, such
    as ``arrow.json``, included), or all nulls."""
    return pa.types.is_null(dtype) or family(plain_type(dtype)) in (pa.string(), pa.binary())


def without_views(table: pa.Table) -> pa.Table:
    """The table with its ``string_view``/``binary_view`` columns in their plain types: what may cross Ray's
    object store, whose Arrow serialisation takes no view types (the commit casts back to the output's)."""
    for position, column in enumerate(table.schema):
        if _is_view(column.type, "string") or _is_view(column.type, "binary"):
            table = table.set_column(position, column.name, table.column(position).cast(plain_type(column.type)))
    return table


def conform(column: Column, dtype: pa.DataType) -> Column:
    """``column`` cast to ``dtype``, a type of the same ``family``: directly, or through the plain type where
    Arrow has no direct cast (a dictionary to ``string_view``, for one)."""
    if column.type == dtype:
        return column
    try:
        return column.cast(dtype)
    except pa.ArrowNotImplementedError:
        decoded = plain(column)
        if pa.types.is_dictionary(dtype):
            return decoded.cast(dtype.value_type).cast(dtype)
        return decoded.cast(dtype)
