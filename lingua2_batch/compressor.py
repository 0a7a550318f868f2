"""``Compressor``: the public API. Loads a checkpoint once, then compresses one prompt (``compress``)
or many documents (``compress_batch``) through the same three steps the Ray job runs as stages:
``prepare`` (tokenizer, CPU), ``finish`` (model scores, then selection)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np
import torch

from .core import compat as llmlingua_compat
from .core import extractive
from .core.options import MAX_FORCE_TOKENS, REFERENCE_POSITIONAL, CompressionOptions
from .core.result import CompressionResult
from .core.selection import ModelChunk
from .core.token_counting import TokenCounter, resolve_token_counter
from .model.loading import INT8, add_force_token_placeholders, load_classifier, resolve_device
from .model.precision import default_dtype
from .model.scorer import PendingScores, TokenScorer, broadcast_mask_agrees
from .model.tokenizer_info import detect_model_frame, detect_word_rules, reference_special_tokens

Prepared = Union[llmlingua_compat.CompatPrepared, extractive.ExtractivePrepared]
Context = Union[str, Sequence[str]]
CompatChunks = list[tuple[llmlingua_compat.CompatChunk, CompressionOptions]]  # each chunk with its prompt's options

COMPAT_MODES = (None, "llmlingua")
# float32: probabilities computed at different padded widths differ by ~1e-7; decisions nearer a
# threshold than this are re-scored canonically, so results never depend on batch composition.
# Reduced precision re-scores nothing (margin -1): padded and unpadded bf16 scores differ by up to
# 1.4e-3 (measured), so a margin that covers that would re-score nearly every chunk (a few words of
# every chunk lie that close to its threshold), doubling the model's work for decisions that differ
# from float32's anyway. int8 scores each chunk alone, so its results are its own regardless.
PARITY_MARGIN = {torch.float32: 2e-5, torch.bfloat16: -1.0, torch.float16: -1.0, INT8: -1.0}
# How close a padded batch's scores under the broadcast mask must be to the usual mask's for the
# broadcast mask to be used: a tenth of float32's margin; about the rounding of the others.
MASK_PROBE_TOLERANCE = {torch.float32: 2e-6, torch.bfloat16: 3e-3, torch.float16: 1e-3, INT8: 3e-3}
# On a GPU the prompts of one ``finish`` go to the device in waves of about this many batches' worth of
# tokens, so that the host selects the words of one wave while the device scores the next.
WAVE_BATCHES = 4
MAX_RESCORE_ROUNDS = 3


@dataclass(frozen=True)
class BatchLimits:
    """How much ``compress_batch`` holds in memory at once."""

    max_documents: int = 512
    max_characters: int = 4_000_000


class Compressor:
    """LLMLingua-2 compression with any 2-label token-classification checkpoint.

    ``compat=None`` (default) is the extractive mode: output is the input with whole words deleted.
    ``compat="llmlingua"`` reproduces llmlingua 0.2.2's output byte for byte, quirks included.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        compat: str | None = None,
        token_counter: str | TokenCounter | None = None,
        tiktoken_file: str | None = None,
        max_length: int | None = None,
        max_batch_tokens: int | None = None,
        max_batch_size: int = 128,
        max_padding_share: float | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        revision: str | None = None,
        batch_limits: BatchLimits = BatchLimits(),
    ):
        if compat not in COMPAT_MODES:
            raise ValueError(f"compat must be None (extractive) or 'llmlingua', got {compat!r}")
        self.compat = compat
        if dtype is None:
            dtype = default_dtype(resolve_device(device).type, compat)
        if compat == "llmlingua" and str(dtype).lower() == INT8:
            raise ValueError("dtype='int8' is approximate; compat='llmlingua' needs float32 scores (extractive mode only)")
        self.loaded = load_classifier(
            model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle, revision=revision,
        )
        tokenizer = self.loaded.tokenizer
        self.word_rules = detect_word_rules(tokenizer)
        self.frame = detect_model_frame(tokenizer, self.loaded.config, max_length)
        self.counter = resolve_token_counter(token_counter, tiktoken_file)
        self.batch_limits = batch_limits
        precision = INT8 if self.loaded.int8_linear else self.loaded.dtype
        self.parity_margin = PARITY_MARGIN[precision]
        if compat == "llmlingua":
            special = reference_special_tokens(tokenizer)  # taken before the placeholders are added
            add_force_token_placeholders(self.loaded, [compat_placeholder(i) for i in range(MAX_FORCE_TOKENS)])
            self._compat_view = llmlingua_compat.CompatTokenizer.wrap(tokenizer, self.word_rules, special)
        else:
            self._vocabulary = extractive.Vocabulary.build(tokenizer, self.word_rules)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if max_batch_tokens is None:
            max_batch_tokens = default_max_batch_tokens(self.loaded.device)
        if max_padding_share is None:
            max_padding_share = default_padding_share(self.loaded.model, self.loaded.device)
        autocast_dtype = self.loaded.autocast_dtype
        self.scorer = TokenScorer(
            self.loaded.model, self.loaded.device, pad_id, max_batch_tokens, max_batch_size, max_padding_share,
            broadcast_padding_mask=broadcast_mask_agrees(
                self.loaded.model, self.loaded.device, pad_id, MASK_PROBE_TOLERANCE[precision], autocast_dtype
            ),
            autocast_dtype=autocast_dtype,
        )
        if self.loaded.int8_linear:
            # dynamic quantisation scales activations by the range of the whole batch, so a chunk's scores
            # would depend on its batch-mates (up to 0.08 apart, measured): one chunk per pass keeps them its own
            self.scorer.max_batch_size = 1
        # Tokens of chunks per wave in ``finish`` (None: one wave). Only a device that computes while the
        # host works gains from waves; on a CPU they would only split batches.
        self.wave_tokens: int | None = WAVE_BATCHES * max_batch_tokens if self.loaded.device.type == "cuda" else None
        self._selecting = threading.Lock()

    @property
    def model_identity(self) -> str:
        return self.loaded.identity

    # -- the three steps -------------------------------------------------------------------------

    def prepare(self, prompts: Sequence[Context], options: CompressionOptions) -> list[Prepared]:
        """Tokenize and chunk prompts (each a string or a list of contexts). CPU only, no model."""
        as_lists = [[p] if isinstance(p, str) else list(p) for p in prompts]
        for prompt in as_lists:
            for context in prompt:
                if not isinstance(context, str):
                    raise TypeError(f"contexts must be strings, got {type(context).__name__}")
        if self.compat == "llmlingua":
            if options.protect:
                raise ValueError("protect is an option of the extractive mode; compat mode reproduces llmlingua 0.2.2, which has none")
            return llmlingua_compat.prepare(self._compat_view, as_lists, options, self.counter)
        return extractive.prepare(self.loaded.tokenizer, self._vocabulary, self.frame, as_lists, options, self.counter)

    def finish(self, prepared: Sequence[Prepared]) -> list[CompressionResult]:
        """Score every chunk of every prepared prompt, then select words per prompt. Several threads may
        call it at once (a replica working on two units): their forward passes overlap, their selections
        take turns. With ``wave_tokens`` set (on CUDA) prompts go to the device in waves, each enqueued
        before the previous one is collected, so the device goes from one wave straight to the next while
        the host selects the words of the one before. In float32 results do not depend on how the prompts
        were split (near-threshold decisions are re-scored canonically); in reduced precision see
        ``PARITY_MARGIN``."""
        chunk_lists = [self._model_chunks(p) for p in prepared]
        token_counts = [sum(len(c) for c in chunks) for chunks in chunk_lists]
        waves = split_waves(token_counts, self.wave_tokens, last_wave_tokens=self.scorer.max_batch_tokens)

        def submit(wave: list[int]) -> PendingScores:
            return self.scorer.submit([c for i in wave for c in chunk_lists[i]])

        results: list[CompressionResult] = []
        queued = [submit(waves[0])]
        for number, wave in enumerate(waves):
            if number + 1 < len(waves):
                queued.append(submit(waves[number + 1]))
            probs, widths = queued.pop(0).wait()
            with self._selecting:  # the tokenizer behind selection is not for two threads at once
                results += self._select_scored([prepared[i] for i in wave], [chunk_lists[i] for i in wave], probs, widths)
        return results

    def _select_scored(self, prepared: Sequence[Prepared], chunk_lists: list[list[ModelChunk]],
                       probs: list[np.ndarray], widths: list[int]) -> list[CompressionResult]:
        """Select words per prompt from first-pass scores, re-scoring canonically the chunks whose
        decisions were too close to call."""
        flat = [c for chunks in chunk_lists for c in chunks]
        exact = [self._is_canonical(c, w) for c, w in zip(flat, widths)]
        compat_chunks = self._compat_chunks(prepared)
        words = self._merge_words(compat_chunks, range(len(flat)), probs)
        offsets = np.cumsum([0] + [len(c) for c in chunk_lists]).tolist()
        results: list[CompressionResult | None] = [None] * len(prepared)
        pending = list(range(len(prepared)))
        for round_number in range(MAX_RESCORE_ROUNDS + 1):
            margin = self.parity_margin if round_number < MAX_RESCORE_ROUNDS else -1.0
            rescore: list[int] = []
            still_pending = []
            for i in pending:
                lo, hi = offsets[i], offsets[i + 1]
                outcome = self._select(prepared[i], probs[lo:hi], exact[lo:hi], margin, None if words is None else words[lo:hi])
                if outcome.ambiguous_chunks:
                    rescore += [lo + c for c in outcome.ambiguous_chunks]
                    still_pending.append(i)
                else:
                    results[i] = outcome.result
            if not still_pending:
                break
            self.scorer.stats.rescored_chunks += len(rescore)
            for index, p in zip(rescore, self._score_canonical([flat[i] for i in rescore])):
                probs[index] = p
                exact[index] = True
            if words is not None:
                for index, merged in zip(rescore, self._merge_words(compat_chunks, rescore, probs)):
                    words[index] = merged
            pending = still_pending
        return results  # type: ignore[return-value]

    # -- public entry points ---------------------------------------------------------------------

    def compress(self, context: Context, **options: Any) -> CompressionResult:
        """Compress one prompt: a string, or a list of contexts (the reference's ``context``)."""
        parsed = CompressionOptions.from_kwargs(**options)
        return self.finish(self.prepare([context], parsed))[0]

    def compress_prompt_llmlingua2(self, context: Context, *positional: Any, **options: Any) -> CompressionResult:
        """``compress`` under the reference's name and signature: its options may also come positionally, in
        the reference's order (``compress_prompt_llmlingua2(text, 0.33)``), so calls written for it work here."""
        if len(positional) > len(REFERENCE_POSITIONAL):
            raise TypeError(f"compress_prompt_llmlingua2 takes at most {len(REFERENCE_POSITIONAL) + 1} positional "
                            f"arguments ({len(positional) + 1} given)")
        named = dict(zip(REFERENCE_POSITIONAL, positional))
        twice = sorted(set(named) & set(options))
        if twice:
            raise TypeError(f"compress_prompt_llmlingua2 got multiple values for {', '.join(twice)}")
        return self.compress(context, **named, **options)

    def compress_batch(self, texts: Iterable[Context], **options: Any) -> list[CompressionResult]:
        """Compress many independent documents; each result equals ``compress`` on that document."""
        return list(self.iter_compress(texts, **options))

    def iter_compress(self, texts: Iterable[Context], **options: Any) -> Iterator[CompressionResult]:
        """``compress_batch`` as a generator: memory stays bounded however many documents come in."""
        parsed = CompressionOptions.from_kwargs(**options)
        for group in _bounded_groups(texts, self.batch_limits):
            yield from self.finish(self.prepare(group, parsed))

    # -- internals -------------------------------------------------------------------------------

    def _model_chunks(self, prepared: Prepared) -> list[ModelChunk]:
        if self.compat == "llmlingua":
            return llmlingua_compat.model_chunks(prepared)  # type: ignore[arg-type]
        return extractive.model_chunks(prepared)  # type: ignore[arg-type]

    def _compat_chunks(self, prepared: Sequence[Prepared]) -> CompatChunks | None:
        """Compat mode: every prompt's chunks in model order, each with its prompt's options."""
        if self.compat != "llmlingua":
            return None
        return [(chunk, p.options) for p in prepared for chunk in llmlingua_compat.chunk_list(p)]  # type: ignore[arg-type]

    def _merge_words(self, compat_chunks: CompatChunks | None, indices: Sequence[int], probs: list[np.ndarray]) -> list | None:
        """Compat mode: the words of the chunks at ``indices`` (into ``compat_chunks``), merged in one
        vectorised pass per set of options rather than chunk by chunk."""
        if compat_chunks is None:
            return None
        by_options: dict[CompressionOptions, list[int]] = {}
        for position, index in enumerate(indices):
            by_options.setdefault(compat_chunks[index][1], []).append(position)
        merged: list = [None] * len(indices)
        for options, positions in by_options.items():
            group = [indices[i] for i in positions]
            words = llmlingua_compat.merge_words(
                self._compat_view, options, [compat_chunks[i][0] for i in group], [probs[i] for i in group]
            )
            for position, chunk_words in zip(positions, words):
                merged[position] = chunk_words
        return merged

    def _select(self, prepared: Prepared, probs, exact, margin: float, words=None):
        if self.compat == "llmlingua":
            return llmlingua_compat.select(self._compat_view, prepared, probs, self.counter, exact, margin, words)  # type: ignore[arg-type]
        return extractive.select(prepared, probs, self.counter, exact, margin)  # type: ignore[arg-type]

    def _is_canonical(self, chunk: ModelChunk, width: int) -> bool:
        """Canonical scores: padded to 512 as the reference does (compat), or unpadded (extractive)."""
        return width == (llmlingua_compat.REFERENCE_MAX_SEQ_LEN if self.compat == "llmlingua" else len(chunk))

    def _score_canonical(self, chunks: list[ModelChunk]) -> list[np.ndarray]:
        if self.compat == "llmlingua":
            return self.scorer.score(chunks, fixed_width=llmlingua_compat.REFERENCE_MAX_SEQ_LEN)[0]
        return self.scorer.score_unpadded(chunks)


def split_waves(token_counts: Sequence[int], wave_tokens: int | None,
                last_wave_tokens: int | None = None) -> list[list[int]]:
    """Consecutive prompt indices grouped so that each group holds about ``wave_tokens`` chunk tokens
    (a prompt is never split); one group when ``wave_tokens`` is None. The last group is split again
    into groups of about ``last_wave_tokens``: its selection is the one no forward pass overlaps."""
    if wave_tokens is None or not token_counts:
        return [list(range(len(token_counts)))]
    waves = _consecutive_groups(range(len(token_counts)), token_counts, wave_tokens)
    if last_wave_tokens is not None:
        waves[-1:] = _consecutive_groups(waves[-1], token_counts, last_wave_tokens)
    return waves


def _consecutive_groups(indices: Iterable[int], token_counts: Sequence[int], group_tokens: int) -> list[list[int]]:
    groups: list[list[int]] = [[]]
    tokens = 0
    for index in indices:
        if groups[-1] and tokens + token_counts[index] > group_tokens:
            groups.append([])
            tokens = 0
        groups[-1].append(index)
        tokens += token_counts[index]
    return groups


def default_max_batch_tokens(device: torch.device) -> int:
    """Token positions per forward pass. On a CPU a batch's activations should stay near its caches: 8,192
    was 15% faster than 16,384 on a 2 x 128 model and no slower on 1 x 32 or 12 x 768 (README); a GPU
    wants big batches (16,384 measured best on an H200; 65,536 was slower)."""
    return 8192 if device.type == "cpu" else 16384


def default_padding_share(model: torch.nn.Module, device: torch.device) -> float:
    """How much padding a batch may carry. A GPU is underused by small batches, so fuller batches win;
    on a CPU every padded position costs its full share of arithmetic, which for a large model
    (BERT-base and up) outweighs the fixed cost of another, smaller forward pass."""
    if device.type != "cpu":
        return 0.25
    embedding_rows = model.get_input_embeddings().weight.numel()
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding_rows
    return 0.1 if non_embedding < 20_000_000 else 0.0


def compat_placeholder(index: int) -> str:
    return llmlingua_compat.PLACEHOLDER_FORMAT.format(index)


def _bounded_groups(texts: Iterable[Context], limits: BatchLimits) -> Iterator[list[Context]]:
    group: list[Context] = []
    characters = 0
    for text in texts:
        size = len(text) if isinstance(text, str) else sum(len(t) for t in text)
        if group and (len(group) >= limits.max_documents or characters + size > limits.max_characters):
            yield group
            group, characters = [], 0
        group.append(text)
        characters += size
    if group:
        yield group
