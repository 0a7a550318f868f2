"""The selection rules both modes share: target rates, the context-level filter, and the per-chunk
threshold over tiktoken-expanded word probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .options import CompressionOptions
from .result import CompressionResult, ContextWords
from .token_counting import TokenCounter


@dataclass
class ModelChunk:
    """One model input: token ids with special tokens, and the attention mask (1 = attend)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def percentile_index(value: float) -> int:
    """``int(value)`` as the reference computes it, clamped to numpy's [0, 100]. The reference passes
    101 for a rate of 0 and raises; clamped, a rate of 0 keeps only forced words."""
    return min(max(int(value), 0), 100)


def reference_percentile(values: np.ndarray, q: int):
    """``np.percentile(values, q)`` for a 1-D float array and an integer ``q``, bit for bit (numpy's
    "linear" method with its weak-scalar arithmetic), without the general machinery that costs ~40 µs a
    call; called once per chunk. tests/test_selection.py checks it against numpy on thousands of inputs."""
    n = values.size
    fraction = np.float64(q) / 100
    virtual = (n - 1) * fraction
    ordered = np.sort(values)
    if virtual >= n - 1:
        return ordered[-1]
    if virtual < 0:
        return ordered[0]
    below = int(np.floor(virtual))
    weight = float(virtual - below)
    lower, upper = ordered[below], ordered[below + 1]
    difference = upper - lower
    if weight >= 0.5:
        return upper - difference * (1 - weight)
    return lower + difference * weight


def reduce_rate_for(target_tokens: float, available_tokens: int) -> float:
    """The rate that reaches ``target_tokens`` out of ``available_tokens``; 1.0 when there is nothing
    (the reference divides by zero)."""
    return min(target_tokens / available_tokens, 1.0) if available_tokens > 0 else 1.0


def resolve_context_rate(options: CompressionOptions, n_contexts: int, origin_tokens: int) -> float:
    """The reference's defaults for the context-level filter's rate."""
    rate, target_token = options.rate, options.target_token
    context_level_rate = options.context_level_rate
    context_level_target_token = options.context_level_target_token
    if options.target_context <= 0 and context_level_rate >= 1.0 and context_level_target_token <= 0:
        if target_token < 0 and rate < 1.0:
            context_level_rate = (rate + 1.0) / 2 if options.use_token_level_filter else rate
        if target_token >= 0:
            context_level_target_token = target_token * 2 if options.use_token_level_filter else target_token
    if options.target_context >= 0:
        context_level_rate = min(options.target_context / n_contexts, 1.0)
    if context_level_target_token >= 0:
        context_level_rate = reduce_rate_for(context_level_target_token, origin_tokens)
    return context_level_rate


def context_level_keep(context_probs: Sequence, context_level_rate: float, force_context_ids: Sequence[int]) -> list[int]:
    """Indices of the contexts that pass the context-level filter (plus the forced ones)."""
    threshold = np.percentile(context_probs, percentile_index(100 * (1 - context_level_rate)))
    forced = set(force_context_ids)
    return [i for i, p in enumerate(context_probs) if p >= threshold or i in forced]


def chunk_threshold(word_probs: np.ndarray, token_counts: np.ndarray, reduce_rate: float) -> float:
    """The reference's per-chunk threshold: a percentile of word probabilities, each repeated once per
    target-LLM token of the word, at ``int(100 * reduce_rate + 1)``."""
    expanded = np.repeat(word_probs, token_counts)
    if expanded.size == 0:
        return 1.0
    return float(reference_percentile(expanded, percentile_index(100 * reduce_rate + 1)))


def keep_mask(word_probs: np.ndarray, threshold: float) -> np.ndarray:
    """Kept: above the threshold, or exactly 1.0 when the threshold itself is 1.0 (forced words)."""
    keep = word_probs > threshold
    if threshold == 1.0:
        keep |= word_probs == 1.0
    return keep


def repeated_forced_words(
    words: Sequence[str], word_probs: np.ndarray, force_tokens: Sequence[str], threshold: float
) -> list[int]:
    """The reference's ``drop_consecutive`` pre-pass: the force tokens that repeat with no word above
    the (unexpanded) threshold between the two occurrences; their probability becomes 0."""
    forced = set(force_tokens)
    repeats = []
    is_token_between, previous = False, None
    for i, word in enumerate(words):
        if word in forced:
            if is_token_between:
                is_token_between = False
            elif word == previous:
                repeats.append(i)
            previous = word
        else:
            is_token_between |= bool(word_probs[i] > threshold)
    return repeats


def drop_repeated_kept_forced(words: Sequence[str], keep: np.ndarray, force_tokens: Sequence[str]) -> None:
    """The reference's ``drop_consecutive`` post-pass, in place: a kept force token right after the same
    kept force token is dropped."""
    forced = set(force_tokens)
    last_kept = None
    for i in np.flatnonzero(keep).tolist():
        if words[i] in forced and last_kept == words[i]:
            keep[i] = False
        else:
            last_kept = words[i]


def distance_to_threshold(values: Sequence, threshold: float) -> float:
    """How close the nearest compared value is to its threshold. Probabilities scored with a different
    padding width differ in the last bits; a decision closer than that margin is re-scored exactly."""
    distances = np.abs(np.asarray(values, dtype=np.float64) - float(threshold))
    # A value equal to the threshold *is* the threshold's element: both move together, so its
    # decision (not above) is stable; only a different value close by can change sides.
    distances = distances[distances > 0]
    return float(distances.min()) if distances.size else float("inf")


def prompt_result(
    origin_tokens: int,
    compressed_list: list[str],
    kept_contexts: list[ContextWords],
    kept_ids: list[int],
    dropped_words: dict[int, list[str]],
    options: CompressionOptions,
    counter: TokenCounter,
) -> CompressionResult:
    """The result for one prompt from its kept contexts, in either mode. ``dropped_words``: the words of
    each context the context-level filter dropped, labelled 0 in ``fn_labeled_original_prompt``."""
    result = CompressionResult(
        compressed_prompt="\n\n".join(compressed_list),
        compressed_prompt_list=compressed_list,
        origin_tokens=origin_tokens,
        compressed_tokens=sum(counter.count_many(compressed_list)),
        contexts=kept_contexts,
        kept_context_ids=kept_ids,
    )
    if options.return_word_label:
        labelled: list[str] = []
        kept = dict(zip(kept_ids, kept_contexts))
        for i in range(len(kept_ids) + len(dropped_words)):
            if i in kept:
                labelled += [f"{w}{options.label_sep}{int(l)}" for w, l in zip(kept[i].words, kept[i].labels)]
            else:
                labelled += [f"{w}{options.label_sep}0" for w in dropped_words[i]]
        result.fn_labeled_original_prompt = options.word_sep.join(labelled)
    return result


@dataclass
class SelectionOutcome:
    """A result, or the model chunks (indices into the prompt's chunk list) whose decisions were too
    close to call from approximately scored probabilities and must be scored canonically first."""

    result: CompressionResult
    ambiguous_chunks: list[int]

