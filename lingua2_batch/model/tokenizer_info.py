"""What the compression core needs to know about a tokenizer and model, read from the tokenizer and
config themselves (never from the model's name), so renamed and local checkpoints behave the same."""

from __future__ import annotations

import json
from typing import Any

from ..core.extractive import ModelFrame
from ..core.word_rules import WordRules

DEFAULT_MAX_LENGTH = 512  # LLMLingua-2's window; smaller if the tokenizer or model says so


def _find_metaspace(node: Any) -> str | None:
    """The replacement character of a Metaspace pre-tokenizer, wherever it sits in a Sequence."""
    if isinstance(node, dict):
        if node.get("type") == "Metaspace":
            return node.get("replacement", "▁")
        for child in node.get("pretokenizers", []) or []:
            found = _find_metaspace(child)
            if found:
                return found
    return None


def detect_word_rules(tokenizer: Any) -> WordRules:
    """"▁"-style (marker starts a word) or "##"-style (marker continues a word)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        model = spec.get("model", {})
        prefix = model.get("continuing_subword_prefix")
        if model.get("type") == "WordPiece" and prefix:
            return WordRules(marker=prefix, marker_starts_word=False)
        replacement = _find_metaspace(spec.get("pre_tokenizer")) or _find_metaspace(spec.get("decoder"))
        if replacement:
            return WordRules(marker=replacement, marker_starts_word=True)
    # Slow or unusual tokenizers: look at how a two-word probe is split.
    probe = tokenizer.tokenize("internationalization unbelievable")
    if any(t.startswith("##") for t in probe):
        return WordRules(marker="##", marker_starts_word=False)
    for marker in ("▁", "Ġ"):
        if any(t.startswith(marker) for t in probe):
            return WordRules(marker=marker, marker_starts_word=True)
    raise ValueError(
        f"cannot tell how {type(tokenizer).__name__} marks word boundaries: "
        "expected SentencePiece-style ('▁' word starts) or WordPiece-style ('##' continuations) pieces"
    )


def detect_model_frame(tokenizer: Any, config: Any, max_length: int | None = None) -> ModelFrame:
    """Special tokens around one sequence (from the tokenizer's own template) and the window length."""
    probe_ids = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed_ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(framed_ids) - len(probe_ids) + 1):
        if framed_ids[start : start + len(probe_ids)] == probe_ids:
            prefix, suffix = framed_ids[:start], framed_ids[start + len(probe_ids) :]
            break
    else:
        raise ValueError("cannot locate the text inside the tokenizer's special-token template")
    limits = [DEFAULT_MAX_LENGTH if max_length is None else max_length]
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:
        limits.append(model_max)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    length = min(limits)
    if length <= len(prefix) + len(suffix):
        raise ValueError(f"maximum length {length} leaves no room for text")
    return ModelFrame(
        prefix_ids=tuple(prefix),
        suffix_ids=tuple(suffix),
        max_length=length,
        special_ids=frozenset(int(i) for i in tokenizer.all_special_ids if i != tokenizer.unk_token_id),
        unk_id=tokenizer.unk_token_id,
    )


def reference_special_tokens(tokenizer: Any) -> frozenset[str]:
    """The set llmlingua 0.2.2 skips when merging pieces: the special-tokens map minus its additional ones."""
    return frozenset(
        v for k, v in tokenizer.special_tokens_map.items() if k != "additional_special_tokens" and isinstance(v, str)
    )
