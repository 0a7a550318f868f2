"""How the scorer groups chunks into forward passes: every chunk once, within the token budget and
the padding bound."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lingua2_batch.model.scorer import TokenScorer


def scorer(**kwargs) -> TokenScorer:
    return TokenScorer(model=None, device=torch.device("cpu"), pad_token_id=0, **kwargs)


def padding_share(batch: list[int], lengths: list[int]) -> float:
    width = max(lengths[i] for i in batch)
    return 1 - sum(lengths[i] for i in batch) / (width * len(batch))


@pytest.mark.parametrize("max_padding_share", [0.0, 0.1, 0.25])
def test_every_chunk_once_within_budget_and_padding_bound(max_padding_share):
    rng = random.Random(7)
    lengths = [rng.randint(3, 512) for _ in range(400)]
    planner = scorer(max_padding_share=max_padding_share, max_batch_tokens=4096, max_batch_size=16)
    batches = planner.plan_batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert len(batch) <= 16 and (len(batch) == 1 or width * len(batch) <= 4096)
        assert padding_share(batch, lengths) <= max_padding_share + 1e-9


def test_chunks_of_different_lengths_stay_apart_without_padding_allowance():
    lengths = [512, 505, 498, 490, 512]
    batches = scorer(max_padding_share=0.0).plan_batches(lengths)
    assert sorted(sorted(b) for b in batches) == [[0, 4], [1], [2], [3]]


def test_fixed_width_batches_only_by_budget():
    lengths = [10, 300, 512, 40]
    batches = scorer(max_padding_share=0.0, max_batch_tokens=1024).plan_batches(lengths, fixed_width=512)
    assert [len(b) for b in batches] == [2, 2]


class DropsPaddingMask(torch.nn.Module):
    """A real checkpoint behind a wrapper that ignores whatever mask it is given, as a model with its
    own attention code might: the broadcast mask must then be refused."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @property
    def dtype(self):
        return self.model.dtype

    def forward(self, input_ids, attention_mask):
        if attention_mask.dim() == 2:
            return self.model(input_ids=input_ids, attention_mask=attention_mask)
        return self.model(input_ids=input_ids)


@pytest.mark.parametrize("family", ["sentencepiece", "wordpiece"])
def test_broadcast_padding_mask_scores_as_the_usual_mask(checkpoints, padded_batch, family):
    from lingua2_batch.model.loading import load_classifier
    from lingua2_batch.model.scorer import broadcast_mask_agrees, keep_probabilities

    loaded = load_classifier(str(checkpoints[family]))
    pad = loaded.tokenizer.pad_token_id
    assert broadcast_mask_agrees(loaded.model, loaded.device, pad, tolerance=2e-6)
    assert not broadcast_mask_agrees(DropsPaddingMask(loaded.model), loaded.device, pad, tolerance=2e-6)

    ids, mask, lengths = padded_batch(pad)
    usual = keep_probabilities(loaded.model, loaded.device, ids, mask)
    broadcast = keep_probabilities(loaded.model, loaded.device, ids, mask, broadcast_mask=True)
    for row, length in enumerate(lengths):
        np.testing.assert_allclose(broadcast[row, :length], usual[row, :length], rtol=0, atol=2e-6)
        alone = keep_probabilities(loaded.model, loaded.device, ids[row : row + 1, :length], mask[row : row + 1, :length])
        np.testing.assert_allclose(broadcast[row, :length], alone[0], rtol=0, atol=2e-6)


def test_waves_hold_every_prompt_once_in_order():
    from lingua2_batch.compressor import split_waves

    counts = [300, 900, 50, 2000, 10, 10]
    assert split_waves(counts, None) == [[0, 1, 2, 3, 4, 5]]
    assert split_waves(counts, 1000) == [[0], [1, 2], [3], [4, 5]]
    assert split_waves([], 1000) == [[]]
    # the last wave, whose selection nothing overlaps, is split again into smaller ones
    assert split_waves(counts, 1000, last_wave_tokens=10) == [[0], [1, 2], [3], [4], [5]]
    assert split_waves(counts, 5000, last_wave_tokens=1000) == [[0], [1, 2], [3], [4, 5]]
    assert split_waves(counts, None, last_wave_tokens=1000) == [[0, 1, 2, 3, 4, 5]]


@pytest.mark.parametrize("compat", [None, "llmlingua"])
def test_results_do_not_depend_on_waves(checkpoints, corpus, compat):
    """A GPU replica scores prompts in waves so that selection overlaps the forward passes; the CPU
    runs the same code when waves are asked for, and every result must equal the one-wave result."""
    from lingua2_batch import Compressor

    compressor = Compressor(str(checkpoints["sentencepiece"]), compat=compat)
    texts = corpus[:8]
    one_wave = compressor.compress_batch(texts, rate=0.4)
    compressor.wave_tokens = 700
    before = compressor.scorer.stats.batches
    in_waves = compressor.compress_batch(texts, rate=0.4)
    assert compressor.scorer.stats.batches - before > 3
    assert [r.compressed_prompt for r in in_waves] == [r.compressed_prompt for r in one_wave]
    for a, b in zip(in_waves, one_wave):  # probabilities may differ in the last bits, decisions may not
        np.testing.assert_array_equal(a.contexts[0].labels, b.contexts[0].labels)


@pytest.mark.parametrize("compat", [None, "llmlingua"])
def test_results_do_not_depend_on_the_batch_budget(checkpoints, corpus, compat):
    """The per-pass token budget (8,192 by default on CPU, 16,384 on GPUs) only groups chunks differently."""
    from lingua2_batch import Compressor

    default = Compressor(str(checkpoints["sentencepiece"]), compat=compat)
    assert default.scorer.max_batch_tokens == 8192
    small = Compressor(str(checkpoints["sentencepiece"]), compat=compat, max_batch_tokens=1024)
    texts = corpus[:8]
    assert [r.compressed_prompt for r in small.compress_batch(texts, rate=0.4)] == \
        [r.compressed_prompt for r in default.compress_batch(texts, rate=0.4)]
    assert small.scorer.stats.batches > default.scorer.stats.batches


def test_int8_scores_each_chunk_alone_and_mostly_agrees_with_float32(checkpoints, corpus):
    """dtype="int8" (CPU, extractive): Linear layers quantised dynamically; since the activation range is
    the batch's, every chunk is scored alone, so results cannot depend on the other documents."""
    from lingua2_batch import Compressor

    path = str(checkpoints["sentencepiece"])
    quantised = Compressor(path, dtype="int8")
    assert quantised.loaded.int8_linear and quantised.scorer.max_batch_size == 1
    with pytest.raises(ValueError, match="extractive"):
        Compressor(path, dtype="int8", compat="llmlingua")
    texts = corpus[:6]
    together = quantised.compress_batch(texts, rate=0.5)
    alone = [quantised.compress(t, rate=0.5) for t in texts]
    assert [r.compressed_prompt for r in together] == [r.compressed_prompt for r in alone]
    exact = Compressor(path).compress_batch(texts, rate=0.5)
    labels = np.concatenate([r.contexts[0].labels for r in together])
    baseline = np.concatenate([r.contexts[0].labels for r in exact])
    assert (labels == baseline).mean() > 0.95


def test_stats_count_what_attention_needed_and_computed(checkpoints, corpus):
    """The bench's FLOP figures rest on these counts: real positions and pairs per chunk, padded ones
    per batch row."""
    from lingua2_batch import Compressor
    from lingua2_batch.core.options import CompressionOptions

    compressor = Compressor(str(checkpoints["sentencepiece"]), max_padding_share=0.25)
    prepared = compressor.prepare(corpus[:5], CompressionOptions.from_kwargs(rate=0.5))
    chunks = [c for p in prepared for c in compressor._model_chunks(p)]
    _, widths = compressor.scorer.score(chunks)
    stats = compressor.scorer.stats
    assert stats.real_tokens == sum(len(c) for c in chunks)
    assert stats.real_position_pairs == sum(len(c) ** 2 for c in chunks)
    assert stats.padded_tokens == sum(widths) and stats.padded_position_pairs == sum(w * w for w in widths)
    assert stats.padded_tokens > stats.real_tokens  # some batch carried padding, so the two counts differ


def test_bfloat16_is_mixed_precision_with_a_float32_residual_stream(checkpoints, corpus):
    """dtype="bfloat16": matrix products in bf16 under autocast; embeddings and LayerNorms keep the
    checkpoint's float32 weights, so what they produce (the residual stream) stays float32."""
    from lingua2_batch import Compressor
    from lingua2_batch.model.loading import load_classifier

    path = str(checkpoints["sentencepiece"])
    mixed = Compressor(path, dtype="bfloat16")
    exact = Compressor(path)
    assert mixed.loaded.autocast_dtype == torch.bfloat16 and exact.loaded.autocast_dtype is None
    exact_weights = dict(exact.loaded.model.named_parameters())
    for name, parameter in mixed.loaded.model.named_parameters():
        if "LayerNorm" in name or "embeddings" in name:
            assert parameter.dtype == torch.float32
            assert torch.equal(parameter, exact_weights[name]), name  # the checkpoint's values, not rounded ones
        else:
            assert parameter.dtype == torch.bfloat16, name
    produced: dict[str, set] = {"norm": set(), "linear": set()}
    hooks = []
    for module in mixed.loaded.model.modules():
        kind = "norm" if isinstance(module, torch.nn.LayerNorm) else "linear" if isinstance(module, torch.nn.Linear) else None
        if kind:
            hooks.append(module.register_forward_hook(lambda m, args, out, kind=kind: produced[kind].add(out.dtype)))
    texts = corpus[:6]
    results = mixed.compress_batch(texts, rate=0.5)
    for hook in hooks:
        hook.remove()
    assert produced == {"norm": {torch.float32}, "linear": {torch.bfloat16}}
    labels = np.concatenate([r.contexts[0].labels for r in results])
    baseline = np.concatenate([r.contexts[0].labels for r in exact.compress_batch(texts, rate=0.5)])
    assert (labels == baseline).mean() > 0.98
    assert load_classifier(path, dtype="float32").autocast_dtype is None


def test_each_wave_is_enqueued_before_the_one_before_it_is_collected(checkpoints, corpus):
    """So that a GPU goes from one wave straight to the next while the host selects words."""
    from lingua2_batch import Compressor
    from lingua2_batch.model.scorer import PendingScores

    events: list[str] = []

    class Recording(PendingScores):
        def wait(self):
            events.append(f"wait {self.number}")
            return super().wait()

    compressor = Compressor(str(checkpoints["sentencepiece"]))
    submit = compressor.scorer.submit

    def recorded_submit(chunks, fixed_width=None):
        pending = submit(chunks, fixed_width)
        if fixed_width is not None:  # a canonical re-score, collected at once
            return pending
        recording = Recording(pending._stats, pending._lengths, pending._flights)
        recording.number = sum(e.startswith("submit") for e in events)
        events.append(f"submit {recording.number}")
        return recording

    compressor.scorer.submit = recorded_submit
    compressor.wave_tokens = 700
    compressor.compress_batch(corpus[:8], rate=0.4)
    waves = sum(e.startswith("submit") for e in events)
    assert waves > 3
    assert events == ["submit 0"] + [e for n in range(1, waves) for e in (f"submit {n}", f"wait {n - 1}")] + [f"wait {waves - 1}"]


def test_device_busy_time_is_the_union_of_the_passes_spans():
    """Two threads' passes interleave on one CUDA stream, so their spans overlap: busy time counts
    every instant once, and a gap between spans as idle."""
    from lingua2_batch.model.scorer import ScoringStats

    stats = ScoringStats(device_spans=[(10.0, 40.0), (0.0, 20.0), (25.0, 30.0), (50.0, 60.0)])
    assert stats.device_busy_seconds() == pytest.approx(0.050)  # 0-40 and 50-60 ms
    other = ScoringStats(device_spans=[(55.0, 70.0)])
    stats.add(other)
    assert stats.device_busy_seconds() == pytest.approx(0.060)
    assert ScoringStats().device_busy_seconds() == 0.0
