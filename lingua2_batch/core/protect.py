"""Protected spans for the extractive mode: identifiers that must survive compression whole.

``protect=`` takes class names from ``PROTECTED_CLASSES`` and/or regular expressions; every match in
the text is kept whatever its keep-probability (counted against the rate like a forced word). The
class patterns are deliberately conservative: a match that is kept costs rate budget, a missed one
is only as exposed as any other whitespace token (which atomic mode already keeps or drops whole).

>>> spans("Logs at /var/log/app/server.log on 10.0.12.7.", compile_protection(("path", "ip")))
[(8, 31), (35, 44)]
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Sequence

_HEX4 = r"[0-9A-Fa-f]{1,4}"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
_PATH_PART = r"\.*[\w@%+~=-]+(?:\.[\w@%+~=-]+)*"  # no trailing dot: "server.log." ends at "log"

PROTECTED_CLASSES: dict[str, str] = {
    # https://example.com/a/b?x=1 · ftp://host/file · www.example.org/docs
    # (a trailing ".", ",", ")" ... is the sentence's, not the URL's)
    "url": r"\b(?:[A-Za-z][A-Za-z0-9+.-]*://|www\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]",
    # /var/log/app/server.log · ~/.config/app · ./run.sh · ../x/y · C:\Users\me\notes.txt · src/app/main.py
    "path": (
        rf"(?<![\w/.:])(?:~|\.{{1,2}})?/{_PATH_PART}(?:/{_PATH_PART})*/?"
        r"|\b[A-Za-z]:\\(?:[^\\\s]+\\)*[^\\\s]*[^\\\s.,;:!?)]"
        rf"|\b{_PATH_PART}(?:/{_PATH_PART})+\.[A-Za-z0-9]+\b"
    ),
    # ops@example.org · first.last+tag@mail.example.co.uk
    "email": r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    # 10.0.12.7 · 10.0.12.7:22 · 192.168.0.0/16 · 2001:db8::8a2e:370:7334 · ::1 · fe80::1%eth0
    "ip": (
        rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?:/\d{{1,2}}|:\d{{1,5}})?(?![\w.]\w)"
        rf"|(?<![\w:])(?:(?:{_HEX4}:){{7}}{_HEX4}"
        rf"|(?:{_HEX4}(?::{_HEX4})*)?::(?:{_HEX4}(?::{_HEX4})*)?)(?:%\w+)?(?:/\d{{1,3}})?(?![\w:])"
    ),
    # v2.4.12 · 2.4.12 · 1.0.0-rc.1 · 1.2.3+build.5 · v3 · v2.4 (bare "2.4" is a number)
    "version": r"(?<![\w.])(?:v\d+(?:\.\d+)*|\d+\.\d+\.\d+(?:\.\d+)*)(?:-[0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*)?(?:\+[0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*)?\b",
    # 86,400 · $1,234,567.89 · -3.5 · 12.5% · 1_000_000 · 42
    "number": r"(?<![\w.,])[-+]?[$€£¥]?\d+(?:[,_'\u202f]\d{3})*(?:\.\d+)?%?(?![\w]|[.,]\d)",
    # ord_8f3a2c91 · user_id · 3f9a0c7e21 · job-2024-11 · a1b2c3d4-e5f6-... · getUserById
    # (letters with digits, an underscore, or a lower-to-upper case change; "well-known" is prose)
    "id": (
        r"(?<![\w-])(?=[\w-]*(?:[A-Za-z][\w-]*\d|\d[\w-]*[A-Za-z]|[A-Za-z0-9]_[A-Za-z0-9]|[a-z][A-Z]))"
        r"[A-Za-z0-9][\w-]*[A-Za-z0-9](?![\w-])"
    ),
    # 2024-11-02 · 2024-11-02T10:15:00Z · 2024-11-02 10:15:00+01:00 · 11/02/2024 · 10:15 · Nov 2, 2024 · 2 November 2024
    "date": (
        r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?![\w])"
        r"|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"
        r"|\b\d{1,2}:\d{2}(?::\d{2})?\b"
        rf"|\b{_MONTH} \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}\b"
        rf"|\b\d{{1,2}} {_MONTH} \d{{4}}\b"
    ),
}


@lru_cache(maxsize=64)
def compile_protection(protect: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """One pattern per entry of ``protect``: a class name (see ``PROTECTED_CLASSES``) or a regular
    expression. Kept apart rather than joined by "|": one alternation would let a short match of one
    class (``ops1`` as an id) hide a longer one of another at the same place (``ops1@example.org``).

    >>> [p.findall("Fixed JIRA-1234 in v2.4.12.") for p in compile_protection(("version", r"JIRA-\\d+"))]
    [['v2.4.12'], ['JIRA-1234']]
    """
    return tuple(re.compile(PROTECTED_CLASSES.get(entry, entry)) for entry in protect)


def expand_entries(entries: Iterable[str]) -> tuple[str, ...]:
    """``protect`` as given (``"url,path"`` on a command line, or a list) as class names and regexes:
    an entry whose comma-separated parts are all class names is those classes; any other entry is
    one regular expression (commas included, as in ``\\d{1,3}``). Raises ``ValueError`` on a regex
    that does not compile or matches the empty string.

    >>> expand_entries(["url,path", r"\\d{1,3}"])
    ('url', 'path', '\\\\d{1,3}')
    """
    expanded: list[str] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"protect entries must be non-empty strings, got {entry!r}")
        parts = [p.strip() for p in entry.split(",")]
        if all(p in PROTECTED_CLASSES for p in parts):
            expanded += parts
            continue
        try:
            pattern = re.compile(entry)
        except re.error as error:
            raise ValueError(
                f"protect entry {entry!r} is neither a class ({', '.join(PROTECTED_CLASSES)}) "
                f"nor a valid regular expression: {error}"
            ) from error
        if pattern.fullmatch(""):
            raise ValueError(f"protect entry {entry!r} matches the empty string")
        expanded.append(entry)
    return tuple(expanded)


def spans(text: str, patterns: Sequence[re.Pattern[str]]) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of every non-empty match of any of ``patterns`` in ``text``
    (overlapping spans of different patterns are all reported)."""
    return sorted({m.span() for pattern in patterns for m in pattern.finditer(text) if m.end() > m.start()})
