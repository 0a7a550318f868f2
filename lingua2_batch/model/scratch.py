"""Build small token-classification checkpoints from scratch, deterministically and offline.

The published LLMLingua-2 checkpoints cannot be downloaded here (no hub access), so tests, the demo
job and the benchmark use checkpoints made by this module: a tokenizer trained on text shipped with
the package, random weights from a fixed seed, saved with ``save_pretrained`` in the published
checkpoints' layout (100 extra embedding rows for the ``[NEWi]`` force-token placeholders).

Two tokenizer families are supported, matching the two published checkpoints:
``"sentencepiece"`` (XLM-RoBERTa style, pieces start with "▁") and ``"wordpiece"``
(multilingual BERT style, continuations start with "##").
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import torch
from tokenizers import normalizers, pre_tokenizers
from transformers import (
    BertConfig,
    BertForTokenClassification,
    BertTokenizer,
    XLMRobertaConfig,
    XLMRobertaForTokenClassification,
    XLMRobertaTokenizer,
)

TokenizerFamily = Literal["sentencepiece", "wordpiece"]

CORPUS_DIR = Path(__file__).resolve().parent.parent / "data" / "corpus"
FORCE_TOKEN_PLACEHOLDER_ROWS = 100  # the published checkpoints carry rows for [NEW0]..[NEW99]


@dataclass(frozen=True)
class ModelSize:
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 128
    initializer_range: float = 0.02  # standard deviation of the random weights (transformers' default)
    # Rows of the embedding matrix when a published checkpoint's shape is wanted (its vocabulary plus the
    # [NEWi] rows); None: just the scratch tokenizer's pieces plus the placeholders. Rows past the
    # tokenizer's pieces are never looked up, but they cost the memory and the load time the real ones do.
    embedding_rows: int | None = None


TINY = ModelSize()
# A 12-layer stack at the default 0.02 collapses every token onto nearly the same representation, so
# its keep-probabilities bunch up (neighbouring words ~5e-4 apart) in a way a trained checkpoint's do
# not; at 0.01 the residual path dominates, tokens stay distinct and the probabilities spread as a
# trained model's (neighbours ~1/words-per-chunk apart). The arithmetic is the same either way.
BERT_BASE = ModelSize(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, initializer_range=0.01)
# The shape of microsoft/llmlingua-2-xlm-roberta-large-meetingbank (XLM-R large: 24 x 1024, 16 heads,
# a 250,002-piece vocabulary plus the 100 [NEWi] rows): what a GPU replica runs in production. ~560M
# parameters, 2.2 GB in float32; built on demand by benchmarks and GPU checks, not by the CPU test suite.
XLM_ROBERTA_LARGE_VOCABULARY = 250_002
XLM_ROBERTA_LARGE = ModelSize(
    hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, initializer_range=0.01,
    embedding_rows=XLM_ROBERTA_LARGE_VOCABULARY + FORCE_TOKEN_PLACEHOLDER_ROWS,
)


def shipped_corpus_texts() -> list[str]:
    """The sample corpus that ships with the package, in a stable order."""
    return [p.read_text(encoding="utf-8") for p in sorted(CORPUS_DIR.glob("*.txt"))]


# The `tokenizers` trainers break ties through hash maps with per-process seeds: two runs on the same text
# give different vocabularies. These builders count substrings and sort with explicit tie-breaks instead,
# so a checkpoint built twice is byte-identical.
MAX_PIECE_CHARS = 8
SENTENCEPIECE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _pretokenized_words(texts: Iterable[str], pre_tokenizer, normalizer=None) -> Counter:
    words: Counter = Counter()
    for text in texts:
        if normalizer is not None:
            text = normalizer.normalize_str(text)
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(text))
    return words


def _most_frequent(counts: Counter, how_many: int, exclude: set[str]) -> list[tuple[str, int]]:
    ranked = sorted(((piece, n) for piece, n in counts.items() if piece not in exclude), key=lambda item: (-item[1], item[0]))
    return ranked[: max(0, how_many)]


def _train_sentencepiece_vocab(texts: Iterable[str], vocab_size: int) -> list[tuple[str, float]]:
    """Unigram pieces: every character, then the most frequent substrings of the pre-tokenized words,
    scored by log relative frequency."""
    # Same pre-tokenization as transformers' XLMRobertaTokenizer, so the pieces fit it.
    pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    substrings: Counter = Counter()
    characters: Counter = Counter()
    for word, n in _pretokenized_words(texts, pre_tokenizer).items():
        characters.update({c: n for c in word})
        for start in range(len(word)):
            for end in range(start + 2, min(len(word), start + MAX_PIECE_CHARS) + 1):
                substrings[word[start:end]] += n
    specials = set(SENTENCEPIECE_SPECIALS) | {"<mask>"}
    chosen = _most_frequent(characters, len(characters), specials)
    chosen += _most_frequent(substrings, vocab_size - len(SENTENCEPIECE_SPECIALS) - 1 - len(chosen), specials)
    total = sum(n for _, n in chosen)
    return (
        [(piece, 0.0) for piece in SENTENCEPIECE_SPECIALS]
        + [(piece, round(math.log(n / total), 6)) for piece, n in chosen]
        + [("<mask>", 0.0)]
    )


def _train_wordpiece_vocab(texts: Iterable[str], vocab_size: int) -> dict[str, int]:
    """WordPiece: every character alone and as a continuation, then the most frequent whole words,
    word-initial and continuation pieces."""
    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    pieces: Counter = Counter()
    characters: Counter = Counter()
    for word, n in _pretokenized_words(texts, pre_tokenizers.BertPreTokenizer(), normalizer).items():
        characters.update({c: n for c in word})
        for start in range(len(word)):
            for end in range(start + 1, min(len(word), start + MAX_PIECE_CHARS) + 1):
                if end - start > 1 or start > 0:
                    pieces[word[start:end] if start == 0 else "##" + word[start:end]] += n
    specials = set(WORDPIECE_SPECIALS)
    alphabet = [c for c, _ in _most_frequent(characters, len(characters), specials)]
    base = WORDPIECE_SPECIALS + alphabet + ["##" + c for c in alphabet]
    chosen = [piece for piece, _ in _most_frequent(pieces, vocab_size - len(base), set(base))]
    return {piece: index for index, piece in enumerate(base + chosen)}


def build_tokenizer(family: TokenizerFamily, texts: list[str], vocab_size: int = 3000):
    """A transformers tokenizer of the given family trained on ``texts``."""
    if family == "sentencepiece":
        return XLMRobertaTokenizer(vocab=_train_sentencepiece_vocab(texts, vocab_size), model_max_length=512)
    if family == "wordpiece":
        return BertTokenizer(
            vocab=_train_wordpiece_vocab(texts, vocab_size), do_lower_case=False, model_max_length=512
        )
    raise ValueError(f"unknown tokenizer family {family!r}; expected 'sentencepiece' or 'wordpiece'")


def build_checkpoint(
    output_dir: str | Path,
    family: TokenizerFamily,
    *,
    size: ModelSize = TINY,
    texts: list[str] | None = None,
    vocab_size: int = 3000,
    seed: int = 0,
    placeholder_rows: int = FORCE_TOKEN_PLACEHOLDER_ROWS,
    classifier_scale: float = 2.4,
) -> Path:
    """Train a tokenizer, initialise a 2-label token classifier with seeded random weights, save both.

    The classifier's weights have standard deviation ``classifier_scale / sqrt(hidden_size)``, which
    spreads the keep-probabilities over (0, 1) the way a trained model's are spread, at any width,
    instead of the near-0.5 values a default initialisation gives (or saturated 0/1 values a fixed
    scale gives a wide model). The caller's global torch RNG state is left untouched.
    """
    output_dir = Path(output_dir)
    tokenizer = build_tokenizer(family, texts if texts is not None else shipped_corpus_texts(), vocab_size)
    config, model_class = checkpoint_config(family, size, tokenizer, placeholder_rows)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
        with torch.no_grad():
            model.classifier.weight.normal_(0.0, classifier_scale / size.hidden_size**0.5)
            model.classifier.bias.zero_()
    model.eval()
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def checkpoint_config(family: TokenizerFamily, size: ModelSize, tokenizer, placeholder_rows: int = FORCE_TOKEN_PLACEHOLDER_ROWS):
    """The transformers config and model class of a scratch checkpoint of ``size`` for ``tokenizer``."""
    common = dict(
        vocab_size=max(len(tokenizer) + placeholder_rows, size.embedding_rows or 0),
        hidden_size=size.hidden_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        intermediate_size=size.intermediate_size,
        initializer_range=size.initializer_range,
        num_labels=2,
        id2label={0: "drop", 1: "keep"},
        label2id={"drop": 0, "keep": 1},
    )
    if family == "sentencepiece":
        config = XLMRobertaConfig(
            **common,
            max_position_embeddings=514,
            type_vocab_size=1,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        return config, XLMRobertaForTokenClassification
    return BertConfig(**common, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id), BertForTokenClassification
