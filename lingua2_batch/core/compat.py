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
The selection loops mirror the reference statement by statement, because numpy scalar types decide
the float rounding of thresholds and parity is exact, not approximate.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .options import CompressionOptions
from .result import CompressionResult, ContextWords
from .selection import (
    ModelChunk,
    SelectionOutcome,
    context_level_keep,
    distance_to_threshold,
    percentile_index,
    reduce_rate_for,
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
        # The reference reads token strings back from ids, so unknown pieces read "<unk>" (and are skipped).
        view._id_to_token = np.array(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))), dtype=object)
        view._single_piece_cache: dict[str, bool] = {}
        return view

    def tokenize_many(self, texts: Sequence[str]) -> list[tuple[list[str], list[int]]]:
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False)
        return [(e.tokens, e.ids) for e in encoded.encodings]

    def is_single_piece(self, text: str) -> bool:
        if text not in self._single_piece_cache:
            self._single_piece_cache[text] = len(self.tokenizer.tokenize(text)) == 1
        return self._single_piece_cache[text]

    def tokens_to_string(self, tokens: list[str]) -> str:
        return self.tokenizer.convert_tokens_to_string(tokens)


@dataclass
class CompatChunk:
    text: str  # the chunk as the reference holds it (decoder output, placeholders still in)
    tokens: list[str]  # token strings of the model input, as convert_ids_to_tokens would give them
    model_input: ModelChunk


@dataclass
class CompatPrepared:
    contexts: list[list[CompatChunk]]
    origin_tokens: int
    token_map: dict[str, str]
    options: CompressionOptions


def force_token_map(view: CompatTokenizer, force_tokens: Sequence[str]) -> dict[str, str]:
    """Force tokens that are not a single piece get the placeholder with their list index."""
    return {t: PLACEHOLDER_FORMAT.format(i) for i, t in enumerate(force_tokens) if not view.is_single_piece(t)}


def _chunk_bounds(tokens: list[str], chunk_end_tokens: set[str], max_len: int) -> list[tuple[int, int]]:
    """The reference's ``__chunk_context`` on token strings: windows of ``max_len`` tokens that end at the
    last chunk-end token found looking back (the end token itself is included, so up to max_len + 1)."""
    n = len(tokens)
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
    token_map = force_token_map(view, options.force_tokens)
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
    chunks_per_context: list[int] = []
    for tokens, _ids in view.tokenize_many(replaced):
        bounds = _chunk_bounds(tokens, chunk_end_tokens, max_len)
        chunk_texts.extend(view.tokens_to_string(tokens[s:e]) for s, e in bounds)
        chunks_per_context.append(len(bounds))

    chunks: list[CompatChunk] = []
    for text, (tokens, ids) in zip(chunk_texts, view.tokenize_many(chunk_texts)):
        model_ids = np.array([view._cls_id, *ids, view._sep_id][:REFERENCE_MAX_SEQ_LEN], dtype=np.int64)
        model_tokens = view._id_to_token[model_ids].tolist()
        literal = [REFERENCE_CLS, *tokens, REFERENCE_SEP][:REFERENCE_MAX_SEQ_LEN]
        mask = np.fromiter((t != REFERENCE_PAD for t in literal), dtype=np.int64, count=len(literal))
        chunks.append(CompatChunk(text, model_tokens, ModelChunk(model_ids, mask)))

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


def model_chunks(prepared: CompatPrepared) -> list[ModelChunk]:
    return [chunk.model_input for context in prepared.contexts for chunk in context]


def _merge_token_to_word(view: CompatTokenizer, tokens, token_probs, options, token_map, forced_pieces):
    """The reference's ``__merge_token_to_word``, including its use of the first piece's probability for
    every piece of a word in the "no force" list. A chunk that starts with a continuation piece (the
    reference raises IndexError) starts a word with it instead."""
    rules, special = view.rules, view.special_tokens
    force_tokens = options.force_tokens
    reserve_digit = options.force_reserve_digit
    words: list[str] = []
    word_probs: list[list] = []
    word_probs_no_force: list[list] = []
    prob_no_force = None
    for token, prob in zip(tokens, token_probs):
        if token in special:
            continue
        if not words or rules.reference_begins_word(token, forced_pieces):
            pure_token = rules.pure(token)
            prob_no_force = prob
            if pure_token in force_tokens or pure_token in forced_pieces:
                prob = 1.0
            for original, placeholder in token_map.items():
                token = token.replace(placeholder, original)
            words.append(token)
            word_probs.append([1.0 if reserve_digit and _DIGIT.search(token) else prob])
            word_probs_no_force.append([prob_no_force])
        else:
            words[-1] += rules.pure(token)
            word_probs[-1].append(1.0 if reserve_digit and _DIGIT.search(token) else prob)
            word_probs_no_force[-1].append(prob_no_force)
    return words, word_probs, word_probs_no_force


def _token_prob_to_word_prob(token_probs: list[list], mode: str) -> list:
    if mode == "mean":
        return [sum(p) / len(p) for p in token_probs]
    return [p[0] for p in token_probs]


def _active(chunk: CompatChunk, probs: np.ndarray) -> tuple[list[str], list]:
    mask = chunk.model_input.attention_mask
    active = np.flatnonzero(mask)
    if len(active) == len(mask):
        return chunk.tokens, list(probs)
    return [chunk.tokens[i] for i in active], list(probs[active])


def _compress_chunk(view, chunk, probs, reduce_rate, options, token_map, forced_pieces, counter):
    """One chunk of the reference's ``__compress``: returns (kept text, words, labels, word probabilities,
    threshold, smallest distance between a compared probability and its threshold)."""
    tokens, token_probs = _active(chunk, probs)
    words, valid_token_probs, _ = _merge_token_to_word(view, tokens, token_probs, options, token_map, forced_pieces)
    word_probs = _token_prob_to_word_prob(valid_token_probs, options.token_to_word)
    if not words:  # the reference calls np.percentile on an empty list here and raises
        return "", [], [], [], float("nan"), np.inf
    force_tokens = options.force_tokens
    closest = np.inf
    if options.drop_consecutive:
        threshold = np.percentile(word_probs, percentile_index(100 * reduce_rate))
        closest = distance_to_threshold(word_probs, threshold)
        is_token_between = False
        prev = None
        for i, (word, word_prob) in enumerate(zip(words, word_probs)):
            if word in force_tokens:
                if is_token_between:
                    is_token_between = False
                elif not is_token_between and word == prev:
                    word_probs[i] = 0.0
                prev = word
            else:
                is_token_between |= word_prob > threshold
    new_token_probs: list = []
    for word_prob, n_tokens in zip(word_probs, counter.count_words(words)):
        new_token_probs.extend([word_prob] * n_tokens)
    threshold = np.percentile(new_token_probs, percentile_index(100 * reduce_rate + 1)) if new_token_probs else 1.0
    closest = min(closest, distance_to_threshold(word_probs, threshold))
    keep_words, labels = [], []
    for word, word_prob in zip(words, word_probs):
        if word_prob > threshold or (threshold == 1.0 and word_prob == threshold):
            if options.drop_consecutive and word in force_tokens and keep_words and keep_words[-1] == word:
                labels.append(0)
            else:
                keep_words.append(word)
                labels.append(1)
        else:
            labels.append(0)
    keep_text = view.tokens_to_string(keep_words)
    if view.rules.marker_starts_word:
        words = [w.lstrip(view.rules.marker) for w in words]
    return keep_text, words, labels, word_probs, float(threshold), closest


def _context_probabilities(view, context_chunks, chunk_probs, options, token_map, forced_pieces):
    """The reference's ``__get_context_prob`` for one context: mean of its "no force" word probabilities."""
    words_all, probs_all = [], []
    for chunk, probs in zip(context_chunks, chunk_probs):
        tokens, token_probs = _active(chunk, probs)
        words, _, no_force = _merge_token_to_word(view, tokens, token_probs, options, token_map, forced_pieces)
        probs_all.extend(_token_prob_to_word_prob(no_force, options.token_to_word))
        if view.rules.marker_starts_word:
            words = [w.lstrip(view.rules.marker) for w in words]
        words_all.extend(words)
    # An empty context has no words; the reference divides by zero here. It scores 0 instead.
    return (sum(probs_all) / len(probs_all) if probs_all else 0.0), words_all


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
) -> SelectionOutcome:
    """Turn the model's keep-probabilities for ``model_chunks(prepared)`` into the reference's result.

    ``exact[i]`` says whether chunk i was scored exactly as the reference scores it (padded to 512);
    decisions within ``margin`` of a threshold on other chunks are reported as ambiguous instead."""
    options, token_map = prepared.options, prepared.token_map
    forced_pieces = frozenset(options.force_tokens) | frozenset(token_map.values())
    exact = exact if exact is not None else [True] * len(probabilities)
    ambiguous: set[int] = set()
    first_chunk, pos = [], 0
    for context in prepared.contexts:
        first_chunk.append(pos)
        pos += len(context)
    per_context_probs = [probabilities[s : s + len(c)] for s, c in zip(first_chunk, prepared.contexts)]

    n_contexts = len(prepared.contexts)
    use_context_filter = options.use_context_level_filter and n_contexts > 1
    rate = options.rate
    kept_ids = list(range(n_contexts))
    context_words_unkept: dict[int, list[str]] = {}
    if use_context_filter:
        context_rate = resolve_context_rate(options, n_contexts, prepared.origin_tokens)
        scored = [
            _context_probabilities(view, chunks, probs, options, token_map, forced_pieces)
            for chunks, probs in zip(prepared.contexts, per_context_probs)
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
        chunks, probs = prepared.contexts[i], per_context_probs[i]
        if reduce_rate <= 0:
            text, words = _uncompressed(chunks, token_map)
            compressed_list.append(text)
            contexts_out.append(ContextWords(words, np.ones(len(words), np.float32), np.ones(len(words), np.int8), []))
            continue
        texts, words, labels, word_probs, thresholds = [], [], [], [], []
        for j, (chunk, chunk_probs) in enumerate(zip(chunks, probs)):
            text, w, lab, wp, thr, closest = _compress_chunk(
                view, chunk, chunk_probs, reduce_rate, options, token_map, forced_pieces, counter
            )
            if closest <= margin and not exact[first_chunk[i] + j]:
                ambiguous.add(first_chunk[i] + j)
            texts.append(text)
            words += w
            labels += lab
            word_probs += wp
            thresholds.append(thr)
        compressed_list.append("".join(texts))
        contexts_out.append(
            ContextWords(words, np.asarray(word_probs, np.float32), np.asarray(labels, np.int8), thresholds)
        )

    result = CompressionResult(
        compressed_prompt="\n\n".join(compressed_list),
        compressed_prompt_list=compressed_list,
        origin_tokens=prepared.origin_tokens,
        compressed_tokens=sum(counter.count_many(compressed_list)),
        contexts=contexts_out,
        kept_context_ids=kept_ids,
    )
    if options.return_word_label:
        words_out: list[str] = []
        labels_out: list[int] = []
        kept_iter = iter(contexts_out)
        for i in range(n_contexts):
            if i in kept_ids:
                ctx = next(kept_iter)
                words_out += ctx.words
                labels_out += [int(x) for x in ctx.labels]
            else:
                words_out += context_words_unkept[i]
                labels_out += [0] * len(context_words_unkept[i])
        result.fn_labeled_original_prompt = options.word_sep.join(
            f"{word}{options.label_sep}{label}" for word, label in zip(words_out, labels_out)
        )
    return SelectionOutcome(result, sorted(ambiguous))
