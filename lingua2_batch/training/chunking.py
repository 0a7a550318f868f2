"""Cutting documents into teacher-sized chunks: at most ``max_tokens`` target-LLM tokens (cl100k by
default, as upstream), cut at sentence boundaries.

Upstream (``compress.py: chunk_origin``) cuts the token ids at the last "." or "\\n" token before the
limit and decodes the pieces. Here the text is cut instead, so a chunk is always a substring of the
document and nothing is lost to a multi-byte character split across tokens: sentences are packed
greedily while they fit; a sentence longer than the limit is cut between words; one word longer than
the limit (rare: a URL, a table row without spaces) is cut on its tokens as upstream does.
"""

from __future__ import annotations

import re

from ..core.token_counting import TokenCounter, resolve_token_counter

DEFAULT_CHUNK_TOKENS = 512
# A sentence ends after . ! ? (or their full-width forms, or "。") followed by whitespace, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])|\n+")


def split_sentences(text: str) -> list[str]:
    """Pieces of ``text`` that concatenate back to it, each ending after a sentence end."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if end > start:
            pieces.append(text[start:end])
            start = end
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _pack(pieces: list[str], counts: list[int], max_tokens: int, split_oversized) -> list[str]:
    """Greedily join consecutive pieces while their token counts add up to at most ``max_tokens``; a
    piece that alone is too long is cut by ``split_oversized``. (Counts of a concatenation can differ
    by one or two from the sum at a boundary, so a chunk may exceed the budget by that much.)"""
    out, current, current_tokens = [], "", 0
    for piece, n in zip(pieces, counts):
        if n > max_tokens:
            if current:
                out.append(current)
                current, current_tokens = "", 0
            out.extend(split_oversized(piece))
            continue
        if current and current_tokens + n > max_tokens:
            out.append(current)
            current, current_tokens = "", 0
        current += piece
        current_tokens += n
    if current:
        out.append(current)
    return out


def _split_long(piece: str, max_tokens: int, counter: TokenCounter) -> list[str]:
    words = re.findall(r"\S+\s*|\s+", piece)
    return _pack(words, counter.count_many(words), max_tokens, lambda word: _split_tokens(word, max_tokens, counter))


def _split_tokens(word: str, max_tokens: int, counter: TokenCounter) -> list[str]:
    encoding = getattr(counter, "encoding", None)
    if encoding is None:  # not tiktoken: cut on characters, roughly
        step = max(1, len(word) * max_tokens // max(1, counter.count(word)))
        return [word[i : i + step] for i in range(0, len(word), step)]
    ids = encoding.encode_ordinary(word)
    return [encoding.decode(ids[i : i + max_tokens]) for i in range(0, len(ids), max_tokens)]


def chunk_text(
    text: str,
    max_tokens: int = DEFAULT_CHUNK_TOKENS,
    counter: TokenCounter | str | None = None,
) -> list[str]:
    """Chunks of at most ``max_tokens`` tokens (each stripped; empty ones dropped), in order."""
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    counter = resolve_token_counter(counter) if counter is None or isinstance(counter, str) else counter
    sentences = split_sentences(text)
    counts = counter.count_many(sentences) if sentences else []
    chunks = _pack(sentences, counts, max_tokens, lambda sentence: _split_long(sentence, max_tokens, counter))
    return [c.strip() for c in chunks if c.strip()]
