"""Per-record input checks: what a text value must be before it reaches the tokenizer, and the content
hash incremental runs compare. Nothing here raises for a bad record; it returns an error value."""

from __future__ import annotations

import hashlib
from typing import Any

from ..core.extractive import SPACE

# error kinds, the prefix of the ``error`` column ("kind: detail")
NULL_TEXT = "null_text"
NOT_A_STRING = "not_a_string"
EMPTY_TEXT = "empty_text"
INVALID_UTF8 = "invalid_utf8"
UNPAIRED_SURROGATE = "unpaired_surrogate"
TOO_LARGE = "too_large"
PREPARE_FAILED = "prepare_failed"
SCORE_FAILED = "score_failed"


def error_kind(error: str | None) -> str | None:
    return None if error is None else error.split(":", 1)[0]


def content_hash(value: Any) -> str | None:
    """SHA-256 (hex, 32 chars) of the record's text as stored (UTF-8 for strings)."""
    if value is None:
        return None
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    else:
        data = repr(value).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:32]


def content_hashes(values: list[Any]) -> list[str | None]:
    """``content_hash`` of each value; bytes (how texts are read) without a call per value."""
    sha256 = hashlib.sha256
    return [sha256(value).hexdigest()[:32] if type(value) is bytes else content_hash(value) for value in values]


def check_text(value: Any, max_chars: int) -> tuple[str | None, str | None]:
    """(text, None) for a usable text, (None, "kind: detail") otherwise. Control characters are kept:
    they are valid text and the tokenizer treats them as it always does."""
    if value is None:
        return None, f"{NULL_TEXT}: the text is null"
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) > 4 * max_chars:
            return None, f"{TOO_LARGE}: {len(raw)} bytes, over max_document_chars={max_chars}"
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            return None, f"{INVALID_UTF8}: byte {error.start} of {len(raw)}: {error.reason}"
    if not isinstance(value, str):
        return None, f"{NOT_A_STRING}: got {type(value).__name__}"
    if len(value) > max_chars:
        return None, f"{TOO_LARGE}: {len(value)} characters, over max_document_chars={max_chars}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return None, f"{UNPAIRED_SURROGATE}: at character {error.start}"
    if not value.strip(SPACE):  # the tokenizers' whitespace, as the compressor's
        return None, f"{EMPTY_TEXT}: the text is empty or whitespace only ({len(value)} characters)"
    return value, None


def short_exception(error: BaseException) -> str:
    """An exception as ``Type: message`` cut to 200 characters (messages may quote the text)."""
    message = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {message[:200]}"
