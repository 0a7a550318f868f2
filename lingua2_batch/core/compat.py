"""``compat="llmlingua"``: output byte-identical to llmlingua 0.2.2's ``compress_prompt_llmlingua2``.

The reference's quirks are reproduced on purpose, because migrating users need the very same text:
force tokens that are not one piece become ``[NEWi]`` placeholders; chunks of up to 511 tokens end at
chunk-end token strings and are turned back into strings, re-tokenized, wrapped in the literal strings
"[CLS]"/"[SEP]" (``<unk>`` ids for XLM-R) and truncated at 512; words are rebuilt from piece strings;
thresholds are per chunk over tiktoken-expanded word probabilities; kept words are joined by the
tokenizer's decoder and chunks are glued with "".

Where the reference crashes, this module returns a result instead (each case is documented in the
README under "Deviations" and tested): a rate of 0, an empty context with the context-level filter,
zero reserved tokens, a chunk without words, a chunk starting with a continuation piece, and
``<|endoftext|>``-like text in the input.

The work is split like every mode: ``prepare`` (tokenizer only), the model (elsewhere), ``select``.
Selection is vectorised over lookup tables indexed by token id, but keeps the reference's float
semantics exactly: word means are sequential float32 sums, and a word whose pieces were all forced
is a Python float in the reference, which makes numpy compute that chunk's percentile in float64.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .options import CompressionOptions
from .result import ContextWords
from .selection import (
    ModelChunk,
    SelectionOutcome,
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

# TokenClfDataset in llmlingua 0.2.2 is built without a model name, so it always uses BERT's strings.
REFERENCE_CLS, REFERENCE_SEP, REFERENCE_PAD = "[CLS]", "[SEP]", "[PAD]"
REFERENCE_MAX_SEQ_LEN = 512
PLACEHOLDER_FORMAT = "[NEW{}]"
_DIGIT = re.compile(r"\d")
_REGEX_WORDS = re.compile(r'\b\w+\b|[<>=/!@#$%^&*()?":{}|\\`~;_+-]')


@dataclass(frozen=True)
class ForcePlan:
    """Lookup tables over the vocabulary for one set of force tokens."""

    token_map: dict[str, str]  # force token -> [NEWi] placeholder, for those that are not one piece
    forced_pieces: frozenset[str]
    begins: np.ndarray  # the reference's is_begin_of_new_word, by token id
    forced_probability: np.ndarray  # a word-initial piece whose probability the reference sets to 1.0
    initial_text: np.ndarray  # a word-initial piece as the word starts (placeholders back to their text)
    initial_digit: np.ndarray  # digit in the word-initial text / in the raw piece (force_reserve_digit)
    continuation_digit: np.ndarray


@dataclass
class CompatTokenizer:
    """What the compat mode needs from a tokenizer that already carries the [NEWi] placeholders."""

    tokenizer: Any
    rules: WordRules
    special_tokens: frozenset[str]  # the reference's set: special_tokens_map minus additional ones

    @classmethod
    def wrap(cls, tokenizer: Any, rules: WordRules, special_tokens: frozenset[str]) -> "CompatTokenizer":
        view = cls(tokenizer, rules, special_tokens)
        view._cls_id = tokenizer.convert_tokens_to_ids(REFERENCE_CLS)
        view._sep_id = tokenizer.convert_tokens_to_ids(REFERENCE_SEP)
        view._pad_literal_id = tokenizer.get_vocab().get(REFERENCE_PAD, -1)
        # The reference reads token strings back from ids, so unknown pieces read "<unk>" (and are skipped).
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        view._tokens = tokens
        view._token_array = np.array(tokens, dtype=object)
        # ids the backend decodes exactly as the decoder decodes their strings (added tokens may be
        # normalized first when decoded by id)
        view._plain_id = np.ones(len(tokens), dtype=bool)
        view._plain_id[[i for i in tokenizer.get_added_vocab().values() if i < len(tokens)]] = False
        view._unk_id = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else -1
        view._not_special = np.fromiter((t not in special_tokens for t in tokens), dtype=bool, count=len(tokens))
        view._pure = [rules.pure(t) for t in tokens]
        view._pure_array = np.array(view._pure, dtype=object)
        view._has_digit = np.fromiter((bool(_DIGIT.search(t)) for t in tokens), dtype=bool, count=len(tokens))
        view._base_begins = np.fromiter(
            (rules.reference_begins_word(t, frozenset()) for t in tokens), dtype=bool, count=len(tokens)
        )
        view._single_piece_cache: dict[str, bool] = {}  # per wrapped tokenizer: its answer for a text never changes
        view._plans: dict[tuple[str, ...], ForcePlan] = {}  # keyed by the force tokens, the only input of a plan
        return view

    def encode_many(self, texts: Sequence[str]) -> list[Any]:
        """The encodings behind ``tokenizer.tokenize`` for each text, in one call to the Rust backend
        (what the transformers wrapper does too, minus converting every field to Python lists)."""
        if not texts:
            return []
        backend = self.tokenizer.backend_tokenizer
        backend.encode_special_tokens = False  # literal special-token text is a special token, as upstream
        return backend.encode_batch(list(texts), add_special_tokens=False)

    def ids_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, without the offsets and token strings a full encoding also builds."""
        backend = self.tokenizer.backend_tokenizer
        encode_fast = getattr(backend, "encode_batch_fast", None)  # tokenizers >= 0.21
        if encode_fast is None or not texts:
            return [e.ids for e in self.encode_many(texts)]
        backend.encode_special_tokens = False  # as in encode_many
        return [e.ids for e in encode_fast(list(texts), add_special_tokens=False)]

    def tokenize_many(self, texts: Sequence[str]) -> list[list[str]]:
        """``tokenizer.tokenize`` of each text. Strings are read from the vocabulary by id, except in
        texts with an unknown piece: a Unigram model names that piece by its own text, not "<unk>"."""
        return [tokens for tokens, _ in self._tokens_and_ids(texts)]

    def chunk_strings(
        self, texts: Sequence[str], chunk_end_tokens: set[str], max_len: int
    ) -> list[list[tuple[str, list[int] | None]]]:
        """The reference's chunk strings for each text: its tokens cut by ``_chunk_bounds``, each window
        turned back into text by the tokenizer's decoder (in one parallel backend call where the
        window's ids decode exactly as its strings do). With each string come the ids re-tokenizing it
        gives, where that is known without the tokenizer: a window that is the whole text and decodes
        to exactly that text tokenizes as the text did."""
        chunks: list[list[tuple[str, list[int] | None]]] = [[] for _ in texts]
        by_id: list[tuple[int, int, list[int], bool]] = []  # (text, window, ids, whole text) to batch-decode
        for index, (tokens, ids) in enumerate(self._tokens_and_ids(texts)):
            for s, e in _chunk_bounds(tokens, chunk_end_tokens, max_len):
                if ids is not None and self._plain_id[ids[s:e]].all():
                    by_id.append((index, len(chunks[index]), ids[s:e].tolist(), e - s == len(tokens)))
                    chunks[index].append(("", None))
                else:
                    chunks[index].append((self.tokens_to_string(tokens[s:e]), None))
        if by_id:
            decoded = self.tokenizer.backend_tokenizer.decode_batch([ids for _, _, ids, _ in by_id], skip_special_tokens=False)
            for (index, window, ids, whole), text in zip(by_id, decoded):
                chunks[index][window] = (text, ids if whole and text == texts[index] else None)
        return chunks

    def _tokens_and_ids(self, texts: Sequence[str]) -> list[tuple[list[str], np.ndarray | None]]:
        """Token strings and ids per text; ids are None where the strings are not the vocabulary's."""
        result: list[tuple[list[str], np.ndarray | None]] = []
        unknown_at = []
        for index, ids in enumerate(self.ids_many(texts)):
            if self._unk_id in ids:
                unknown_at.append(index)
                result.append(([], None))
            else:
                id_array = np.asarray(ids, dtype=np.int64)
                result.append((self._token_array[id_array].tolist(), id_array))
        for index, encoding in zip(unknown_at, self.encode_many([texts[i] for i in unknown_at])):
            result[index] = (encoding.tokens, None)
        return result

    def is_single_piece(self, text: str) -> bool:
        if text not in self._single_piece_cache:
            self._single_piece_cache[text] = len(self.tokenizer.tokenize(text)) == 1
        return self._single_piece_cache[text]

    def tokens_to_string(self, tokens: list[str]) -> str:
        return self.tokenizer.convert_tokens_to_string(tokens)

    def force_plan(self, force_tokens: tuple[str, ...]) -> ForcePlan:
        if force_tokens not in self._plans:
            self._plans[force_tokens] = self._build_plan(force_tokens)
        return self._plans[force_tokens]

    def _build_plan(self, force_tokens: tuple[str, ...]) -> ForcePlan:
        token_map = {t: PLACEHOLDER_FORMAT.format(i) for i, t in enumerate(force_tokens) if not self.is_single_piece(t)}
        forced_pieces = frozenset(force_tokens) | frozenset(token_map.values())
        n = len(self._tokens)
        begins = self._base_begins.copy()
        if forced_pieces:
            # the start-marker family compares the raw piece, the continuation family the stripped one
            compared = self._tokens if self.rules.marker_starts_word else self._pure
            begins |= np.fromiter((t in forced_pieces for t in compared), dtype=bool, count=n)
        forced_probability = np.fromiter((p in forced_pieces for p in self._pure), dtype=bool, count=n)
        initial_text = self._token_array.copy()
        initial_digit = self._has_digit.copy()
        for i, token in enumerate(self._tokens if token_map else []):
            if any(placeholder in token for placeholder in token_map.values()):
                for original, placeholder in token_map.items():
                    token = token.replace(placeholder, original)
                initial_text[i] = token
                initial_digit[i] = bool(_DIGIT.search(token))
        return ForcePlan(token_map, forced_pieces, begins, forced_probability, initial_text, initial_digit, self._has_digit)


@dataclass
class CompatChunk:
    text: str  # the chunk as the reference holds it (decoder output, placeholders still in)
    model_input: ModelChunk


@dataclass
class CompatPrepared:
    contexts: list[list[CompatChunk]]
    origin_tokens: int
    token_map: dict[str, str]
    options: CompressionOptions


def _chunk_bounds(tokens: list[str], chunk_end_tokens: set[str], max_len: int) -> list[tuple[int, int]]:
    """The reference's ``__chunk_context`` on token strings: windows of ``max_len`` tokens that end at the
    last chunk-end token found looking back (the end token itself is included, so up to max_len + 1)."""
    n = len(tokens)
    if n <= max_len:  # one chunk: no need to look for chunk ends
        return [(0, n)] if n else []
    ends = [i for i, t in enumerate(tokens) if t in chunk_end_tokens]
    bounds, start = [], 0
    while start < n:
        if start + max_len > n - 1:
            bounds.append((start, n))
            break
        end = start + max_len
        k = bisect.bisect_right(ends, end) - 1
        if k >= 0 and ends[k] > start:
            end = ends[k]
        bounds.append((start, end + 1))
        start = end + 1
    return bounds


def prepare(
    view: CompatTokenizer,
    prompts: Sequence[Sequence[str]],
    options: CompressionOptions,
    counter: TokenCounter,
) -> list[CompatPrepared]:
    """Tokenize, chunk and build model inputs for many prompts (each a list of contexts) at once."""
    token_map = view.force_plan(options.force_tokens).token_map
    chunk_end_tokens = set(options.chunk_end_tokens) | {token_map[c] for c in options.chunk_end_tokens if c in token_map}
    max_len = REFERENCE_MAX_SEQ_LEN - 2

    flat_contexts = [c for prompt in prompts for c in prompt]
    origin_counts = counter.count_many(flat_contexts)
    replaced = []
    for text in flat_contexts:
        for original, placeholder in token_map.items():
            text = text.replace(original, placeholder)
        replaced.append(text)

    chunk_texts: list[str] = []
    chunk_ids: list[list[int] | None] = []
    chunks_per_context: list[int] = []
    for windows in view.chunk_strings(replaced, chunk_end_tokens, max_len):
        chunk_texts.extend(text for text, _ in windows)
        chunk_ids.extend(ids for _, ids in windows)
        chunks_per_context.append(len(windows))
    retokenize = [i for i, ids in enumerate(chunk_ids) if ids is None]  # the reference's second pass
    for i, ids in zip(retokenize, view.ids_many([chunk_texts[i] for i in retokenize])):
        chunk_ids[i] = ids

    chunks: list[CompatChunk] = []
    for text, ids in zip(chunk_texts, chunk_ids):
        model_ids = np.array([view._cls_id, *ids, view._sep_id][:REFERENCE_MAX_SEQ_LEN], dtype=np.int64)
        mask = np.ones(len(model_ids), dtype=np.int64)
        if REFERENCE_PAD in text or view._pad_literal_id in model_ids:  # any piece reading "[PAD]" is masked
            literal = [REFERENCE_CLS, *view.tokenize_many([text])[0], REFERENCE_SEP][:REFERENCE_MAX_SEQ_LEN]
            mask = np.fromiter((t != REFERENCE_PAD for t in literal), dtype=np.int64, count=len(literal))
        chunks.append(CompatChunk(text, ModelChunk(model_ids, mask)))

    prepared, chunk_pos, context_pos = [], 0, 0
    for prompt in prompts:
        contexts = []
        for _ in prompt:
            n = chunks_per_context[context_pos]
            contexts.append(chunks[chunk_pos : chunk_pos + n])
            chunk_pos += n
            context_pos += 1
        origin = sum(origin_counts[context_pos - len(prompt) : context_pos])
        prepared.append(CompatPrepared(contexts, origin, token_map, options))
    return prepared


def chunk_list(prepared: CompatPrepared) -> list[CompatChunk]:
    return [chunk for context in prepared.contexts for chunk in context]


def model_chunks(prepared: CompatPrepared) -> list[ModelChunk]:
    return [chunk.model_input for chunk in chunk_list(prepared)]


@dataclass
class ChunkWords:
    """The words of one chunk as the reference forms them."""

    words: list[str]  # raw: word-initial piece (with its marker) + stripped continuation pieces
    probabilities: np.ndarray  # float32 values, after forcing
    python_float: np.ndarray  # the reference holds this word's probability as a Python float
    lengths: np.ndarray  # pieces per word
    first_piece_probabilities: np.ndarray  # the first piece's model probability, per word


def _sequential_sums(values: np.ndarray, first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per word, ``sum(values)`` added left to right in float32, as Python's ``sum`` over numpy scalars:
    one addition per piece position, over the words that are still that long."""
    sums = values[first]
    words = np.flatnonzero(lengths > 1)
    position = 1
    while words.size:
        sums[words] += values[first[words] + position]
        position += 1
        words = words[lengths[words] > position]
    return sums


def merge_words(
    view: CompatTokenizer,
    options: CompressionOptions,
    chunks: Sequence[CompatChunk],
    probabilities: Sequence[np.ndarray],
) -> list[ChunkWords | None]:
    """The reference's ``__merge_token_to_word`` and ``__token_prob_to_word_prob`` for many chunks in
    one vectorised pass (None for a chunk without words). A chunk that starts with a continuation
    piece (the reference raises IndexError) starts a word with it."""
    if not chunks:
        return []
    plan = view.force_plan(options.force_tokens)
    ids = np.concatenate([c.model_input.input_ids for c in chunks])
    mask = np.concatenate([c.model_input.attention_mask for c in chunks]).astype(bool)
    probs = np.concatenate(probabilities).astype(np.float32, copy=False)
    active = mask & view._not_special[ids]
    chunk_offsets = np.cumsum([0] + [len(c.model_input) for c in chunks[:-1]])
    sizes = np.add.reduceat(active.astype(np.int64), chunk_offsets)
    ids, probs = ids[active], probs[active]
    chunk_starts = np.cumsum(sizes) - sizes
    begins = plan.begins[ids]
    begins[chunk_starts[sizes > 0]] = True  # a word never spans two chunks
    first = np.flatnonzero(begins)
    bounds = np.concatenate((first, [ids.size]))
    lengths = bounds[1:] - first
    exact_one = plan.forced_probability[ids] & begins
    if options.force_reserve_digit:
        exact_one |= np.where(begins, plan.initial_digit[ids], plan.continuation_digit[ids])
    values = np.where(exact_one, np.float32(1.0), probs)
    if first.size == 0:
        word_probs, python_float = np.zeros(0, np.float32), np.zeros(0, bool)
    elif options.token_to_word == "mean":
        word_probs = _sequential_sums(values, first, lengths) / lengths.astype(np.float32)
        python_float = np.logical_and.reduceat(exact_one, first)
    else:
        word_probs, python_float = values[first], exact_one[first]
    first_piece = probs[first]
    pieces = np.where(begins, plan.initial_text[ids], view._pure_array[ids]).tolist()
    edges = bounds.tolist()
    words = [pieces[a] if b - a == 1 else "".join(pieces[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    word_edges = np.searchsorted(first, np.concatenate((chunk_starts, [ids.size]))).tolist()
    return [
        ChunkWords(words[a:b], word_probs[a:b], python_float[a:b], lengths[a:b], first_piece[a:b]) if size else None
        for size, a, b in zip(sizes.tolist(), word_edges[:-1], word_edges[1:])
    ]


def _joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    if len(parts) == 1:
        return parts[0].astype(dtype, copy=False)
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def _as_reference_array(values: np.ndarray, python_float: np.ndarray) -> np.ndarray:
    """The array numpy builds from the reference's list: float64 as soon as one entry is a Python float."""
    return values.astype(np.float64) if python_float.any() else values


def _compress_chunk(view, merged, reduce_rate, options, counter):
    """One chunk of the reference's ``__compress``: returns (kept text, words, labels, word probabilities,
    threshold, smallest distance between a compared probability and its threshold)."""
    if merged is None:  # the reference calls np.percentile on an empty list here and raises
        return "", [], np.zeros(0, np.int8), np.zeros(0, np.float32), float("nan"), np.inf
    words, word_probs, python_float = merged.words, merged.probabilities, merged.python_float
    closest = np.inf
    if options.drop_consecutive:
        threshold = reference_percentile(_as_reference_array(word_probs, python_float), percentile_index(100 * reduce_rate))
        closest = distance_to_threshold(word_probs, threshold)
        repeats = repeated_forced_words(words, word_probs, options.force_tokens, threshold)
        word_probs, python_float = word_probs.copy(), python_float.copy()
        word_probs[repeats], python_float[repeats] = 0.0, True  # the reference assigns a Python 0.0
    counts = np.asarray(counter.count_words(words), dtype=np.int64)
    expanded = np.repeat(_as_reference_array(word_probs, python_float & (counts > 0)), counts)
    threshold = reference_percentile(expanded, percentile_index(100 * reduce_rate + 1)) if expanded.size else 1.0
    closest = min(closest, distance_to_threshold(word_probs, threshold))
    keep = keep_mask(word_probs, threshold)
    if options.drop_consecutive:
        drop_repeated_kept_forced(words, keep, options.force_tokens)
    keep_text = view.tokens_to_string([w for w, k in zip(words, keep.tolist()) if k])
    if view.rules.marker_starts_word:
        words = [w.lstrip(view.rules.marker) for w in words]
    return keep_text, words, keep.astype(np.int8), word_probs, float(threshold), closest


def _context_probabilities(view, context_words, options):
    """The reference's ``__get_context_prob`` for one context: the mean of its words' "no force"
    probabilities, where every piece of a word counts with the first piece's probability."""
    words_all: list[str] = []
    probs_all: list[np.ndarray] = []
    for merged in context_words:
        if merged is None:
            continue
        first_probs = merged.first_piece_probabilities
        if options.token_to_word == "mean":
            first = np.append(0, np.cumsum(merged.lengths)[:-1])
            repeated = np.repeat(first_probs, merged.lengths)
            probs_all.append(_sequential_sums(repeated, first, merged.lengths) / merged.lengths.astype(np.float32))
        else:
            probs_all.append(first_probs)
        words = merged.words
        if view.rules.marker_starts_word:
            words = [w.lstrip(view.rules.marker) for w in words]
        words_all.extend(words)
    if not probs_all:  # an empty context has no words; the reference divides by zero. It scores 0.
        return 0.0, words_all
    flat = np.concatenate(probs_all)
    return np.cumsum(flat)[-1] / np.float32(len(flat)), words_all


def _uncompressed(chunks: list[CompatChunk], token_map: dict[str, str]) -> tuple[str, list[str]]:
    """The reference's path for a reduce rate of 0: chunk strings joined back, regex words, all kept."""
    texts, words = [], []
    for chunk in chunks:
        text = chunk.text
        for original, placeholder in token_map.items():
            text = text.replace(placeholder, original)
        texts.append(text)
        words.extend(_REGEX_WORDS.findall(text))
    return "".join(texts), words


def select(
    view: CompatTokenizer,
    prepared: CompatPrepared,
    probabilities: Sequence[np.ndarray],
    counter: TokenCounter,
    exact: Sequence[bool] | None = None,
    margin: float = 0.0,
    words: Sequence[ChunkWords | None] | None = None,
) -> SelectionOutcome:
    """Turn the model's keep-probabilities for ``model_chunks(prepared)`` into the reference's result.

    ``exact[i]`` says whether chunk i was scored exactly as the reference scores it (padded to 512);
    decisions within ``margin`` of a threshold on other chunks are reported as ambiguous instead.
    ``words``: ``merge_words`` of those chunks, when the caller merged many prompts' chunks at once."""
    options, token_map = prepared.options, prepared.token_map
    if words is None:
        words = merge_words(view, options, chunk_list(prepared), probabilities)
    exact = exact if exact is not None else [True] * len(probabilities)
    ambiguous: set[int] = set()
    first_chunk, pos = [], 0
    for context in prepared.contexts:
        first_chunk.append(pos)
        pos += len(context)
    per_context_words = [words[s : s + len(c)] for s, c in zip(first_chunk, prepared.contexts)]

    n_contexts = len(prepared.contexts)
    use_context_filter = options.use_context_level_filter and n_contexts > 1
    rate = options.rate
    kept_ids = list(range(n_contexts))
    context_words_unkept: dict[int, list[str]] = {}
    if use_context_filter:
        context_rate = resolve_context_rate(options, n_contexts, prepared.origin_tokens)
        scored = [
            _context_probabilities(view, context_words, options) for context_words in per_context_words
        ]
        context_probs = [p for p, _ in scored]
        kept_ids = context_level_keep(context_probs, context_rate, options.force_context_ids)
        threshold = np.percentile(context_probs, percentile_index(100 * (1 - context_rate)))
        if distance_to_threshold(context_probs, threshold) <= margin:
            ambiguous.update(i for i, is_exact in enumerate(exact) if not is_exact)
        context_words_unkept = {i: words for i, (_, words) in enumerate(scored) if i not in kept_ids}
        if options.target_token >= 0:
            reserved = sum(counter.count_many([c.text for i in kept_ids for c in prepared.contexts[i]]))
            rate = reduce_rate_for(options.target_token, reserved)
    elif options.target_token > 0:
        rate = reduce_rate_for(options.target_token, prepared.origin_tokens)

    reduce_rate = max(0, 1 - rate) if options.use_token_level_filter else 0
    compressed_list: list[str] = []
    contexts_out: list[ContextWords] = []
    for i in kept_ids:
        chunks = prepared.contexts[i]
        if reduce_rate <= 0:
            text, words = _uncompressed(chunks, token_map)
            compressed_list.append(text)
            contexts_out.append(ContextWords(words, np.ones(len(words), np.float32), np.ones(len(words), np.int8), []))
            continue
        texts, kept_words, labels, word_probs, thresholds = [], [], [], [], []
        for j, merged in enumerate(per_context_words[i]):
            text, w, lab, wp, thr, closest = _compress_chunk(view, merged, reduce_rate, options, counter)
            if closest <= margin and not exact[first_chunk[i] + j]:
                ambiguous.add(first_chunk[i] + j)
            texts.append(text)
            kept_words += w
            labels.append(lab)
            word_probs.append(wp)
            thresholds.append(thr)
        compressed_list.append("".join(texts))
        contexts_out.append(ContextWords(kept_words, _joined(word_probs, np.float32), _joined(labels, np.int8), thresholds))

    result = prompt_result(
        prepared.origin_tokens, compressed_list, contexts_out, kept_ids, context_words_unkept, options, counter
    )
    return SelectionOutcome(result, sorted(ambiguous))
