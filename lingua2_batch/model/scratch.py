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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
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


TINY = ModelSize()
BERT_BASE = ModelSize(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)


def shipped_corpus_texts() -> list[str]:
    """The sample corpus that ships with the package, in a stable order."""
    return [p.read_text(encoding="utf-8") for p in sorted(CORPUS_DIR.glob("*.txt"))]


def _train_sentencepiece_vocab(texts: Iterable[str], vocab_size: int) -> list[tuple[str, float]]:
    tokenizer = Tokenizer(models.Unigram())
    # Same pre-tokenization as transformers' XLMRobertaTokenizer, so the pieces fit it.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    vocab: dict[str, float] = {}
    for piece, score in json.loads(tokenizer.to_str())["model"]["vocab"]:
        # the corpus quotes "<s>" and "<pad>" literally; a learnt piece must not shadow a special token
        vocab.setdefault(piece, float(score))
    vocab.pop("<mask>", None)
    return list(vocab.items()) + [("<mask>", 0.0)]


def _train_wordpiece_vocab(texts: Iterable[str], vocab_size: int) -> dict[str, int]:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer.get_vocab()


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
    embedding_rows = len(tokenizer) + placeholder_rows
    common = dict(
        vocab_size=embedding_rows,
        hidden_size=size.hidden_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        intermediate_size=size.intermediate_size,
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
        model_class = XLMRobertaForTokenClassification
    else:
        config = BertConfig(**common, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
        model_class = BertForTokenClassification
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
