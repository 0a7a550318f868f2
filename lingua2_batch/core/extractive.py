"""The default, extractive mode: the reference's scoring and threshold rule, but the output is the
original string with whole words deleted.

Differences from the reference, all in favour of faithful text:
- the text is tokenized once, with character offsets; chunks are cut on token ids (at word
  boundaries, preferring chunk-end tokens) so nothing is truncated and nothing is re-tokenized;
- the model gets the tokenizer's own special tokens; text that happens to spell a special token
  ("<s>", "[CLS]") is tokenized as text, and any special id it still yields is fed as ``unk``;
- words are spans of the original string; the output joins kept spans with the input's own
  whitespace (the most significant gap between them, so paragraph breaks survive);
- word weights for the threshold count the word as written, and forced words (``force_tokens``,
  digits) are kept whole;
- by default (``atomic_tokens``) what is kept or dropped is a whole whitespace-delimited token of the
  input (a path, URL, address, id or version is never cut into fragments); its probability is
  ``UNIT_AGGREGATION`` of its words', its weight its own target-LLM token count; ``protect`` forces
  every match of named identifier classes or regexes (``core.protect``);
- the document's leading and trailing whitespace is kept, so a rate of 1.0 returns the input byte for
  byte, and a context is never emptied: when the threshold keeps nothing (one word: a percentile of
  one value is never above itself) its most probable unit is kept, so a one-word text comes back
  unchanged.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .options import CompressionOptions
from .protect import compile_protection
from .protect import spans as protected_spans
from .result import ContextWords
from .selection import (
    ModelChunk,
    SelectionOutcome,
    chunk_threshold,
    context_level_keep,
    distance_to_threshold,
    drop_repeated_kept_forced,
    keep_mask,
    percentile_index,
    prompt_result,
    reduce_rate_for,
    reference_percentile,
    repeated_forced_words,
    resolve_context_rate,
)
from .token_counting import TokenCounter
from .word_rules import WordRules

_DIGIT = re.compile(r"\d")
# Whitespace as tokenizers split on it (Unicode White_Space, Rust's char::is_whitespace). Python's str methods
# and re's \s also count U+001C..U+001F, the information separators, which no tokenizer splits on: with
# Python's notion a word could hold whitespace at its edge and the text around it would be counted twice.
SPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace() and c not in "\x1c\x1d\x1e\x1f")
_WHITESPACE = re.compile(f"[{re.escape(SPACE)}]+")
# line breaks, for the gap rule of ``assemble`` (str.splitlines' set, less the separators above)
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x85\u2028\u2029]")


def _is_space(text: str) -> bool:
    return bool(text) and not text.strip(SPACE)
# Scripts written without spaces between words: CJK ideographs and punctuation, kana, fullwidth forms,
# Thai, Lao, Khmer, Myanmar. A whitespace token of such text is a sentence, not an identifier.
_UNSPACED_SCRIPT = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u2e80-\u2fdf\u3000-\u30ff\u3100-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003134f]"
)
# How a whitespace token's keep-probability is formed from its words': its head word's (the first with
# a letter or digit). Of head, first, max and mean, head departs least from the word-level decisions
# in 12 of 16 measurements (shipped corpus and identifier-rich text, both tokenizer families, four
# rates: ``python -m lingua2_batch.atomic_bench``; figures in the README), and it is what "leading
# punctuation follows its word" means: "(see" scores as "see".
UNIT_AGGREGATION = "head"


@dataclass(frozen=True)
class ModelFrame:
    """What the model expects around each chunk, detected from its tokenizer."""

    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    max_length: int
    special_ids: frozenset[int]
    unk_id: int | None

    @property
    def content_budget(self) -> int:
        return self.max_length - len(self.prefix_ids) - len(self.suffix_ids)


@dataclass
class ExtractiveContext:
    text: str
    word_starts: np.ndarray  # character span of each word in ``text``
    word_ends: np.ndarray
    word_first_token: np.ndarray  # token index where each word starts
    chunk_bounds: list[tuple[int, int]]  # token ranges [start, end)
    word_chunk: np.ndarray  # chunk index of each word (the chunk of its first token)
    word_last_chunk: np.ndarray  # chunk of its last token (differs only for a word longer than a window)
    model_inputs: list[ModelChunk]
    prefix_length: int

    @property
    def n_words(self) -> int:
        return len(self.word_starts)

    def word_texts(self) -> list[str]:
        text = self.text
        return [text[s:e] for s, e in zip(self.word_starts.tolist(), self.word_ends.tolist())]


@dataclass
class ExtractivePrepared:
    contexts: list[ExtractiveContext]
    origin_tokens: int
    options: CompressionOptions


def _word_spans(text: str, offsets: np.ndarray, first_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Character spans of words such that words and whitespace gaps tile ``text.strip(SPACE)``: characters no
    token covers (dropped by the tokenizer's normalizer) join the neighbouring word, never vanish."""
    n_words = len(first_tokens)
    if n_words == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.minimum.reduceat(offsets[:, 0], first_tokens)
    ends = np.maximum.reduceat(offsets[:, 1], first_tokens)
    starts_list = starts.tolist()
    for i in [i for i, s in enumerate(starts_list) if _is_space(text[s : s + 1])]:
        # a piece's offset may include the space its marker stands for
        while starts[i] < ends[i] and _is_space(text[starts[i]]):
            starts[i] += 1
    stripped_start = len(text) - len(text.lstrip(SPACE))
    stripped_end = len(text.rstrip(SPACE))
    starts[0] = min(starts[0], stripped_start)
    ends[-1] = max(ends[-1], stripped_end)
    gaps = [text[e:s] for e, s in zip(ends[:-1].tolist(), starts[1:].tolist())]
    for i in [i for i, gap in enumerate(gaps) if gap and not _is_space(gap)]:
        gap = text[ends[i] : starts[i + 1]]
        runs = list(_WHITESPACE.finditer(gap))
        if not runs:
            ends[i] = starts[i + 1]
        else:
            ends[i] += runs[-1].start()
            starts[i + 1] = ends[i] + len(runs[-1].group())
    return starts, ends


def _chunk_bounds(n_tokens: int, word_boundaries: np.ndarray, end_boundaries: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Token windows of at most ``budget`` tokens, cut at the last chunk-end token that closes a word,
    else at the last word boundary, else (one word longer than a window) at the window's end."""
    bounds, start = [], 0
    boundaries, ends = word_boundaries.tolist(), end_boundaries.tolist()
    while start < n_tokens:
        limit = start + budget
        if limit >= n_tokens:
            bounds.append((start, n_tokens))
            break
        cut = limit
        k = bisect_right(ends, limit) - 1
        if k >= 0 and ends[k] > start:
            cut = ends[k]
        else:
            k = bisect_right(boundaries, limit) - 1
            if k >= 0 and boundaries[k] > start:
                cut = boundaries[k]
        bounds.append((start, cut))
        start = cut
    return bounds


@dataclass
class Vocabulary:
    """Per token id: does the piece start a word, and its text without the marker (for chunk ends)."""

    begins_word: np.ndarray
    pure: list[str]
    _end_tables: dict[frozenset[str], np.ndarray]
    _special_tables: dict[frozenset[int], np.ndarray]

    @classmethod
    def build(cls, tokenizer: Any, rules: WordRules) -> "Vocabulary":
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        begins = np.fromiter((rules.begins_word(t) for t in tokens), dtype=bool, count=len(tokens))
        return cls(begins, [rules.pure(t) for t in tokens], {}, {})

    def special(self, special_ids: frozenset[int]) -> np.ndarray:
        """A lookup table by id: is it one of ``special_ids``."""
        key = frozenset(special_ids)
        if key not in self._special_tables:
            table = np.zeros(max([len(self.pure), *(i + 1 for i in key)]), dtype=bool)
            table[list(key)] = True
            self._special_tables[key] = table
        return self._special_tables[key]

    def chunk_ends(self, end_tokens: frozenset[str]) -> np.ndarray:
        if end_tokens not in self._end_tables:
            self._end_tables[end_tokens] = np.fromiter((p in end_tokens for p in self.pure), dtype=bool, count=len(self.pure))
        return self._end_tables[end_tokens]


def _prepare_context(
    text: str,
    ids: list[int],
    offsets: list[tuple[int, int]],
    vocabulary: Vocabulary,
    frame: ModelFrame,
    options: CompressionOptions,
) -> ExtractiveContext:
    n = len(ids)
    ids_arr = np.asarray(ids, dtype=np.int64)
    offsets_arr = np.asarray(offsets, dtype=np.int64).reshape(n, 2)
    begins = vocabulary.begins_word[ids_arr]
    gap_owners = np.zeros(0, dtype=np.int64)  # the piece each non-empty gap follows
    gap_texts: list[str] = []
    if n:
        begins[0] = True
        piece_starts, piece_ends = offsets_arr[1:, 0], offsets_arr[:-1, 1]
        with_gap = np.flatnonzero(piece_starts > piece_ends)
        gap_texts = [text[e:s] for e, s in zip(piece_ends[with_gap].tolist(), piece_starts[with_gap].tolist())]
        # whitespace between two pieces always separates words, whatever the markers say
        begins[1:][with_gap[[not g.strip(SPACE) for g in gap_texts]]] = True
        # a piece that overlaps the previous one (a lone "▁" shares its character) is the same word
        begins[1:] &= piece_starts >= piece_ends
        gap_owners = np.append(with_gap, n - 1)
        gap_texts.append(text[offsets_arr[-1, 1] :])
    first_tokens = np.flatnonzero(begins)
    word_starts, word_ends = _word_spans(text, offsets_arr, first_tokens)

    is_end = vocabulary.chunk_ends(frozenset(t for t in options.chunk_end_tokens if t.strip()))[ids_arr]
    space_end_tokens = [t for t in options.chunk_end_tokens if not t.strip()]
    if space_end_tokens and n:
        # gaps repeat (" ", "\n"): test each distinct one once
        ending = {g for g in set(gap_texts) if g and any(t in g for t in space_end_tokens)}
        if ending:
            is_end[gap_owners[[g in ending for g in gap_texts]]] = True
    boundaries = np.append(first_tokens[1:], n)  # token positions where a chunk may start
    end_boundaries = boundaries[is_end[boundaries - 1]] if n else boundaries
    bounds = _chunk_bounds(n, boundaries, end_boundaries, frame.content_budget)

    if frame.unk_id is not None and len(ids_arr):
        # user text must not act as control tokens
        ids_arr[vocabulary.special(frame.special_ids)[ids_arr]] = frame.unk_id
    prefix, suffix = np.asarray(frame.prefix_ids, np.int64), np.asarray(frame.suffix_ids, np.int64)
    model_inputs = []
    for s, e in bounds:
        input_ids = np.concatenate([prefix, ids_arr[s:e], suffix])
        model_inputs.append(ModelChunk(input_ids, np.ones(len(input_ids), dtype=np.int64)))
    chunk_starts = np.asarray([s for s, _ in bounds], dtype=np.int64)
    word_chunk = np.searchsorted(chunk_starts, first_tokens, side="right") - 1
    last_tokens = np.append(first_tokens[1:], n) - 1
    word_last_chunk = np.searchsorted(chunk_starts, last_tokens, side="right") - 1
    return ExtractiveContext(
        text=text,
        word_starts=word_starts,
        word_ends=word_ends,
        word_first_token=first_tokens,
        chunk_bounds=bounds,
        word_chunk=word_chunk,
        word_last_chunk=word_last_chunk,
        model_inputs=model_inputs,
        prefix_length=len(prefix),
    )


def prepare(
    tokenizer: Any,
    vocabulary: Vocabulary,
    frame: ModelFrame,
    prompts: Sequence[Sequence[str]],
    options: CompressionOptions,
    counter: TokenCounter,
) -> list[ExtractivePrepared]:
    """Tokenize every context of every prompt in one tokenizer call, then cut chunks on token ids."""
    flat = [c for prompt in prompts for c in prompt]
    origin_counts = counter.count_many(flat)
    encoded = []
    if flat:
        backend = tokenizer.backend_tokenizer
        backend.encode_special_tokens = True  # text that spells "<s>" or "[CLS]" is text
        encoded = backend.encode_batch(flat, add_special_tokens=False)
    contexts = [
        _prepare_context(text, e.ids, e.offsets, vocabulary, frame, options) for text, e in zip(flat, encoded)
    ]
    prepared, pos = [], 0
    for prompt in prompts:
        n = len(prompt)
        prepared.append(ExtractivePrepared(contexts[pos : pos + n], sum(origin_counts[pos : pos + n]), options))
        pos += n
    return prepared


def model_chunks(prepared: ExtractivePrepared) -> list[ModelChunk]:
    return [chunk for context in prepared.contexts for chunk in context.model_inputs]


def _word_probabilities(context: ExtractiveContext, chunk_probs: Sequence[np.ndarray], mode: str) -> np.ndarray:
    """Piece probabilities in document order, aggregated per word (mean or first piece)."""
    n_words = context.n_words
    if n_words == 0:
        return np.zeros(0, np.float32)
    piece_probs = np.concatenate(
        [probs[context.prefix_length : context.prefix_length + (e - s)] for probs, (s, e) in zip(chunk_probs, context.chunk_bounds)]
    ).astype(np.float64)
    if mode == "first":
        return piece_probs[context.word_first_token].astype(np.float32)
    sums = np.add.reduceat(piece_probs, context.word_first_token)
    counts = np.diff(np.append(context.word_first_token, len(piece_probs)))
    return (sums / counts).astype(np.float32)


def atomic_unit_starts(text: str, word_starts: np.ndarray, word_ends: np.ndarray) -> np.ndarray:
    """The index of the first word of each atomic unit: a run of words written without whitespace
    between them (``/var`` ``/log`` ``/app.log``; ``(`` ``see``), i.e. one whitespace-delimited token
    of the input. Scripts written without spaces (CJK, Thai, ...) would make a whole sentence one
    token, so a unit also ends where a word boundary touches such a character.

    >>> text = "see (/var/log) 日志"
    >>> atomic_unit_starts(text, np.array([0, 4, 5, 9, 13, 15, 16]), np.array([3, 5, 9, 13, 14, 16, 17])).tolist()
    [0, 1, 5, 6]
    """
    n_words = len(word_starts)
    if n_words == 0:
        return np.zeros(0, np.int64)
    glued = np.flatnonzero(word_starts[1:] <= word_ends[:-1]) + 1  # words with no gap before them
    breaks = [
        i for i in glued.tolist()
        if _UNSPACED_SCRIPT.match(text[word_ends[i - 1] - 1]) or _UNSPACED_SCRIPT.match(text[word_starts[i]])
    ]
    starts = np.ones(n_words, dtype=bool)
    starts[glued] = False
    starts[breaks] = True
    return np.flatnonzero(starts)


def unit_probabilities(
    word_probs: np.ndarray, unit_starts: np.ndarray, how: str = UNIT_AGGREGATION, head_words: np.ndarray | None = None
) -> np.ndarray:
    """A unit's keep-probability from its words': ``"head"`` (its first word with a letter or digit,
    so ``(see`` scores as ``see``: leading punctuation follows its word; ``head_words`` gives that
    word per unit), ``"first"`` (its first word), ``"max"`` or ``"mean"``.

    >>> probs, starts = np.array([0.2, 0.9, 0.4], np.float32), np.array([0, 1])
    >>> unit_probabilities(probs, starts, "mean").tolist()
    [0.20000000298023224, 0.6499999761581421]
    >>> unit_probabilities(probs, starts, "head", head_words=np.array([0, 2])).tolist()
    [0.20000000298023224, 0.4000000059604645]
    """
    if word_probs.size == 0:
        return word_probs.astype(np.float32)
    if how == "head":
        if head_words is None:
            raise ValueError("the 'head' aggregation needs head_words")
        return word_probs[head_words].astype(np.float32)
    if how == "first":
        return word_probs[unit_starts].astype(np.float32)
    if how == "max":
        return np.maximum.reduceat(word_probs, unit_starts).astype(np.float32)
    if how == "mean":
        sums = np.add.reduceat(word_probs.astype(np.float64), unit_starts)
        return (sums / np.diff(np.append(unit_starts, word_probs.size))).astype(np.float32)
    raise ValueError(f"unknown unit aggregation {how!r}")


def _head_words(text: str, word_starts: np.ndarray, word_ends: np.ndarray, unit_starts: np.ndarray) -> np.ndarray:
    """Per unit, its first word with a letter or digit (its first word when it has none)."""
    head = unit_starts.copy()
    unit_ends = np.append(unit_starts[1:], len(word_starts))
    for unit in np.flatnonzero(unit_ends - unit_starts > 1).tolist():  # one-word units are their own head
        for word in range(int(unit_starts[unit]), int(unit_ends[unit])):
            if any(c.isalnum() for c in text[word_starts[word] : word_ends[word]]):
                head[unit] = word
                break
    return head


@dataclass
class Units:
    """What selection keeps or drops whole: the words (``atomic_tokens=False``) or the atomic units
    (whitespace tokens) of one context, with their character spans and chunks."""

    first_word: np.ndarray
    head_word: np.ndarray  # the word whose probability the unit takes (see ``unit_probabilities``)
    starts: np.ndarray
    ends: np.ndarray
    chunk: np.ndarray  # the chunk of its first word: its decision is taken with that chunk's threshold
    last_chunk: np.ndarray  # the chunk of its last piece
    texts: list[str]

    @classmethod
    def of(cls, context: ExtractiveContext, atomic: bool) -> "Units":
        n_words = context.n_words
        if atomic:
            first = atomic_unit_starts(context.text, context.word_starts, context.word_ends)
        else:
            first = np.arange(n_words)
        if n_words == 0:
            empty = np.zeros(0, np.int64)
            return cls(empty, empty, empty, empty, empty, empty, [])
        last = np.append(first[1:], n_words) - 1
        starts, ends = context.word_starts[first], context.word_ends[last]
        text = context.text
        return cls(
            first_word=first,
            head_word=_head_words(text, context.word_starts, context.word_ends, first) if atomic else first,
            starts=starts,
            ends=ends,
            chunk=context.word_chunk[first],
            last_chunk=np.maximum.reduceat(context.word_last_chunk, first),
            texts=[text[s:e] for s, e in zip(starts.tolist(), ends.tolist())],
        )

    def __len__(self) -> int:
        return len(self.first_word)


def _forced_units(text: str, units: Units, options: CompressionOptions) -> np.ndarray:
    """Units kept whatever their probability: force tokens (as a unit, or every unit an occurrence
    covers), protected spans (``options.protect``), and units with a digit (``force_reserve_digit``)."""
    forced = np.zeros(len(units), dtype=bool)
    span_starts: list[int] = []
    span_ends: list[int] = []
    if options.force_tokens:
        force_set = set(options.force_tokens)
        forced |= np.fromiter((u in force_set for u in units.texts), dtype=bool, count=len(units))
        for token in options.force_tokens:  # occurrences that span several units force all of them
            start = text.find(token)
            while start != -1:
                span_starts.append(start)
                span_ends.append(start + len(token))
                start = text.find(token, start + 1)
    for start, end in protected_spans(text, compile_protection(options.protect)):
        span_starts.append(start)
        span_ends.append(end)
    if span_starts:
        first = np.searchsorted(units.ends, np.asarray(span_starts), side="right")
        last = np.searchsorted(units.starts, np.asarray(span_ends), side="left")
        covered = np.zeros(len(units) + 1, dtype=np.int64)  # +1 at each first covered unit, -1 after the last
        np.add.at(covered, first, 1)
        np.add.at(covered, last, -1)
        forced |= (np.cumsum(covered)[:-1] > 0)
    if options.force_reserve_digit:
        forced |= np.fromiter((bool(_DIGIT.search(u)) for u in units.texts), dtype=bool, count=len(units))
    return forced


def assemble(text: str, starts: np.ndarray, ends: np.ndarray, keep: np.ndarray) -> str:
    """Kept spans joined by the input's own whitespace, inside the input's own leading and trailing
    whitespace (so keeping everything returns ``text`` byte for byte). Between non-adjacent kept
    spans the gap with the most line breaks wins (a paragraph break survives the words around it),
    else the gap just before the later span, else any gap there is. A text without words (whitespace,
    or characters the tokenizer drops entirely: a soft hyphen, a zero-width space) is returned whole."""
    if not text.strip(SPACE) or not len(starts):
        return text
    kept = np.flatnonzero(keep)
    if kept.size == 0:
        return ""
    starts_list, ends_list = starts.tolist(), ends.tolist()
    pieces = [text[: len(text) - len(text.lstrip(SPACE))]]
    previous = -1
    for index in kept.tolist():
        if previous >= 0:
            if index == previous + 1:
                pieces.append(text[ends_list[previous] : starts_list[index]])
            else:
                gaps = [text[ends_list[k] : starts_list[k + 1]] for k in range(previous, index)]
                newlines = [len(_LINE_BREAK.findall(g)) for g in gaps]
                most = max(newlines)
                if most > 0:
                    pieces.append(gaps[newlines.index(most)])
                elif gaps[-1]:
                    pieces.append(gaps[-1])
                else:
                    pieces.append(next((g for g in gaps if g), ""))
        pieces.append(text[starts_list[index] : ends_list[index]])
        previous = index
    pieces.append(text[len(text.rstrip(SPACE)) :])
    return "".join(pieces)


def _select_context(
    context: ExtractiveContext,
    units: Units,
    unit_probs: np.ndarray,
    reduce_rate: float,
    options: CompressionOptions,
    counter: TokenCounter,
    exact: Sequence[bool],
    margin: float,
) -> tuple[str, ContextWords, set[int]]:
    """Per chunk threshold and keep decisions over ``units``; returns the text, the units as the
    context's words, and the chunks (indices within this context) whose decisions were within
    ``margin`` of a threshold without exact scores."""
    texts = units.texts
    if reduce_rate <= 0 or len(units) == 0:
        keep = np.ones(len(units), dtype=bool)
        text = assemble(context.text, units.starts, units.ends, keep)
        return text, ContextWords(texts, unit_probs, keep.astype(np.int8), []), set()
    forced = _forced_units(context.text, units, options)
    probs = np.where(forced, np.float32(1.0), unit_probs).astype(np.float32)
    token_counts = np.asarray(counter.count_words(texts), dtype=np.int64)
    keep = np.zeros(len(units), dtype=bool)
    thresholds: list[float] = []
    ambiguous: set[int] = set()
    for chunk_index in range(len(context.chunk_bounds)):
        members = np.flatnonzero(units.chunk == chunk_index)
        chunk_probs = probs[members]
        closest = np.inf
        if options.drop_consecutive:
            member_texts = [texts[i] for i in members.tolist()]
            unexpanded = reference_percentile(chunk_probs, percentile_index(100 * reduce_rate)) if members.size else 1.0
            closest = distance_to_threshold(chunk_probs, unexpanded)
            chunk_probs[repeated_forced_words(member_texts, chunk_probs, options.force_tokens, unexpanded)] = 0.0
            probs[members] = chunk_probs
        threshold = chunk_threshold(chunk_probs, token_counts[members], reduce_rate)
        thresholds.append(threshold)
        keep[members] = keep_mask(chunk_probs, threshold)
        closest = min(closest, distance_to_threshold(chunk_probs[~forced[members]], threshold))
        if closest <= margin:
            # a unit's probability may include pieces from later chunks (a word longer than a window)
            last = int(units.last_chunk[members].max()) if members.size else chunk_index
            ambiguous.update(c for c in range(chunk_index, last + 1) if not exact[c])
    if options.drop_consecutive:
        drop_repeated_kept_forced(texts, keep, options.force_tokens)
    keep = _no_glue(units, keep)
    if not keep.any():
        # Too short for the rate (one word: a percentile of one value is that value, never above it):
        # keep the most probable unit rather than return nothing; a one-unit context stays unchanged.
        best = int(np.argmax(probs))
        keep[best] = True
        if distance_to_threshold(np.delete(probs, best), probs[best]) <= margin:
            ambiguous.update(c for c in range(len(context.chunk_bounds)) if not exact[c])
    text = assemble(context.text, units.starts, units.ends, keep)
    return text, ContextWords(texts, probs, keep.astype(np.int8), thresholds), ambiguous


def _no_glue(units: Units, keep: np.ndarray) -> np.ndarray:
    """Units written without whitespace between them ("86", ",", "400") form one group; inside a group
    the kept units must be contiguous, or deleting the middle would glue "86400" together."""
    if len(units) < 2:
        return keep
    separated = np.concatenate([[True], units.starts[1:] > units.ends[:-1]])
    if separated.all():  # no units written together
        return keep
    group = np.cumsum(separated) - 1
    index = np.arange(len(units))
    first = np.full(group[-1] + 1, len(units))
    last = np.full(group[-1] + 1, -1)
    np.minimum.at(first, group[keep], index[keep])
    np.maximum.at(last, group[keep], index[keep])
    return keep | ((index >= first[group]) & (index <= last[group]))


def select(
    prepared: ExtractivePrepared,
    probabilities: Sequence[np.ndarray],
    counter: TokenCounter,
    exact: Sequence[bool] | None = None,
    margin: float = 0.0,
    unit_aggregation: str = UNIT_AGGREGATION,
) -> SelectionOutcome:
    """The result for one prompt from the probabilities of ``model_chunks(prepared)``; see
    ``compat.select`` for ``exact`` and ``margin``. ``unit_aggregation`` is fixed in production; the
    measurement that chose it (``lingua2_batch.atomic_bench``) passes the alternatives."""
    options = prepared.options
    exact = exact if exact is not None else [True] * len(probabilities)
    first_chunk, pos = [], 0
    for context in prepared.contexts:
        first_chunk.append(pos)
        pos += len(context.model_inputs)
    per_context = [probabilities[s : s + len(c.model_inputs)] for s, c in zip(first_chunk, prepared.contexts)]
    word_probs = [_word_probabilities(c, p, options.token_to_word) for c, p in zip(prepared.contexts, per_context)]
    units = [Units.of(c, options.atomic_tokens) for c in prepared.contexts]

    n_contexts = len(prepared.contexts)
    kept_ids = list(range(n_contexts))
    ambiguous: set[int] = set()
    rate = options.rate
    if options.use_context_level_filter and n_contexts > 1:
        context_rate = resolve_context_rate(options, n_contexts, prepared.origin_tokens)
        context_probs = [float(p.mean()) if p.size else 0.0 for p in word_probs]
        kept_ids = context_level_keep(context_probs, context_rate, options.force_context_ids)
        threshold = np.percentile(context_probs, percentile_index(100 * (1 - context_rate)))
        if distance_to_threshold(context_probs, threshold) <= margin:
            ambiguous.update(i for i, is_exact in enumerate(exact) if not is_exact)
        if options.target_token >= 0:
            reserved = sum(counter.count_many([prepared.contexts[i].text for i in kept_ids]))
            rate = reduce_rate_for(options.target_token, reserved)
    elif options.target_token > 0:
        rate = reduce_rate_for(options.target_token, prepared.origin_tokens)
    reduce_rate = max(0.0, 1 - rate) if options.use_token_level_filter else 0.0

    compressed_list, contexts_out = [], []
    for i in kept_ids:
        offset = first_chunk[i]
        context = prepared.contexts[i]
        if options.atomic_tokens:
            probs = unit_probabilities(word_probs[i], units[i].first_word, unit_aggregation, units[i].head_word)
        else:
            probs = word_probs[i]
        text, context_words, unsure = _select_context(
            context, units[i], probs, reduce_rate, options, counter,
            exact[offset : offset + len(context.model_inputs)], margin,
        )
        ambiguous.update(offset + c for c in unsure)
        compressed_list.append(text)
        contexts_out.append(context_words)
    dropped_words = {i: units[i].texts for i in range(n_contexts) if i not in kept_ids}
    result = prompt_result(prepared.origin_tokens, compressed_list, contexts_out, kept_ids, dropped_words, options, counter)
    return SelectionOutcome(result, sorted(ambiguous))
