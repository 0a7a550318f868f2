"""The CUDA path of the scorer and the Compressor: bf16 decisions against float32, the broadcast-mask
probe on the device, pinned asynchronous copies, waves, and compat mode's exactness in float32.
Marked ``gpu``; skipped, saying why, where torch sees no CUDA device. ``scripts/gpu_check.sh`` runs
them with the GPU benchmarks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lingua2_batch import Compressor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)"),
]

FAMILIES = ["sentencepiece", "wordpiece"]


def reference_safe(text: str) -> str:
    return text.replace("<|endoftext|>", "<|end|>")  # the reference raises on it


def word_labels(results) -> np.ndarray:
    return np.concatenate([np.asarray(c.labels) for r in results for c in r.contexts])


@pytest.mark.parametrize("family", FAMILIES)
def test_extractive_defaults_to_bf16_and_agrees_with_float32(checkpoints, corpus, family):
    fast = Compressor(str(checkpoints[family]), device="cuda")
    exact = Compressor(str(checkpoints[family]), device="cuda", dtype="float32")
    assert fast.loaded.dtype == torch.bfloat16 and exact.loaded.dtype == torch.float32
    agreement = float((word_labels(fast.compress_batch(corpus, rate=0.5)) ==
                       word_labels(exact.compress_batch(corpus, rate=0.5))).mean())
    # the bench reports the figure itself; a random scratch model is a harder case than a trained one
    assert agreement >= 0.99, agreement


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype, tolerance", [("float32", 2e-5), ("bfloat16", 1e-2)])
def test_broadcast_padding_mask_on_cuda(checkpoints, padded_batch, family, dtype, tolerance):
    from lingua2_batch.model.loading import load_classifier
    from lingua2_batch.model.scorer import broadcast_mask_agrees, keep_probabilities

    loaded = load_classifier(str(checkpoints[family]), device="cuda", dtype=dtype)
    pad = loaded.tokenizer.pad_token_id
    mixed = loaded.autocast_dtype
    assert broadcast_mask_agrees(loaded.model, loaded.device, pad, tolerance / 10, mixed)
    ids, mask, lengths = padded_batch(pad)
    usual = keep_probabilities(loaded.model, loaded.device, ids, mask, autocast_dtype=mixed)
    broadcast = keep_probabilities(loaded.model, loaded.device, ids, mask, broadcast_mask=True, autocast_dtype=mixed)
    for row, length in enumerate(lengths):
        np.testing.assert_allclose(broadcast[row, :length], usual[row, :length], rtol=0, atol=tolerance)


def test_passes_are_enqueued_with_pinned_buffers_and_collected_later(checkpoints, corpus):
    from lingua2_batch.core.options import CompressionOptions
    from lingua2_batch.model.scorer import ScoringStats, keep_probabilities

    compressor = Compressor(str(checkpoints["sentencepiece"]), device="cuda", dtype="float32")
    compressor.scorer.stats = ScoringStats(device_spans=[])  # as the bench: every pass's span on the device
    prepared = compressor.prepare(corpus[:10], CompressionOptions.from_kwargs(rate=0.5))
    chunks = [c for p in prepared for c in compressor._model_chunks(p)]
    pending = compressor.scorer.submit(chunks)
    flights = pending._flights
    assert flights and all(f.keep.is_pinned() and f.keep.dim() == 2 and f.done is not None for f in flights)
    probs, widths = pending.wait()
    assert len(compressor.scorer.stats.device_spans) == len(flights)
    assert compressor.scorer.stats.device_busy_seconds() > 0
    for chunk, p, width in zip(chunks, probs, widths):
        ids = np.full((1, width), compressor.scorer.pad_token_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        ids[0, : len(chunk)], mask[0, : len(chunk)] = chunk.input_ids, chunk.attention_mask
        alone = keep_probabilities(compressor.loaded.model, compressor.loaded.device, ids, mask)[0, : len(chunk)]
        np.testing.assert_allclose(p, alone, rtol=0, atol=2e-5)


@pytest.mark.parametrize("compat", [None, "llmlingua"])
def test_waves_on_cuda_give_the_one_wave_results(checkpoints, corpus, compat):
    # float32: the precision whose results do not depend on how chunks were batched
    compressor = Compressor(str(checkpoints["sentencepiece"]), device="cuda", compat=compat, dtype="float32")
    assert compressor.wave_tokens is not None
    compressor.wave_tokens = None
    one_wave = compressor.compress_batch(corpus, rate=0.4)
    compressor.wave_tokens = 2000
    in_waves = compressor.compress_batch(corpus, rate=0.4)
    assert [r.compressed_prompt for r in in_waves] == [r.compressed_prompt for r in one_wave]


@pytest.mark.parametrize("family", FAMILIES)
def test_compat_on_cuda_is_float32_and_identical_to_the_reference(checkpoints, corpus, family):
    from llmlingua import PromptCompressor

    path = str(checkpoints[family])
    ours = Compressor(path, device="cuda", compat="llmlingua")
    assert ours.loaded.dtype == torch.float32
    texts = [reference_safe(t) for t in corpus]
    options = {"rate": 0.4, "force_tokens": ["\n", "."]}
    results = ours.compress_batch(texts, **options)
    for device in ("cuda", "cpu"):
        reference = PromptCompressor(path, device_map=device, use_llmlingua2=True)
        expected = [reference.compress_prompt_llmlingua2(t, **options)["compressed_prompt"] for t in texts]
        differing = [i for i, (e, r) in enumerate(zip(expected, results)) if e != r.compressed_prompt]
        assert not differing, f"reference on {device}: documents {differing} differ"
