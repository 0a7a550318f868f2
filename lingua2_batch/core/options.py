"""The compression options: the keyword arguments of llmlingua 0.2.2's ``compress_prompt_llmlingua2``,
with the same names, defaults and meaning, validated once instead of failing deep inside a batch, plus
two of the extractive mode's own (``atomic_tokens``, ``protect``), which compat mode does not take."""

from __future__ import annotations

import hashlib
import json
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .protect import expand_entries

MAX_FORCE_TOKENS = 100  # the reference's ``max_force_token``: one [NEWi] placeholder row each
# ``compress_prompt_llmlingua2``'s parameters after ``context``, in its order (they may be given positionally)
REFERENCE_POSITIONAL = ("rate", "target_token", "use_context_level_filter", "use_token_level_filter", "target_context",
                        "context_level_rate", "context_level_target_token", "force_context_ids", "return_word_label",
                        "word_sep", "label_sep", "token_to_word", "force_tokens", "force_reserve_digit",
                        "drop_consecutive", "chunk_end_tokens")


@dataclass(frozen=True)
class CompressionOptions:
    rate: float = 0.5
    target_token: int = -1
    use_context_level_filter: bool = False
    use_token_level_filter: bool = True
    target_context: int = -1
    context_level_rate: float = 1.0
    context_level_target_token: int = -1
    force_context_ids: tuple[int, ...] = ()
    return_word_label: bool = False
    word_sep: str = "\t\t|\t\t"
    label_sep: str = " "
    token_to_word: str = "mean"
    force_tokens: tuple[str, ...] = ()
    force_reserve_digit: bool = False
    drop_consecutive: bool = False
    chunk_end_tokens: tuple[str, ...] = field(default=(".", "\n"))
    # extractive mode only: keep or drop each whitespace-delimited token of the input whole
    atomic_tokens: bool = True
    # extractive mode only: class names of core.protect.PROTECTED_CLASSES and/or regexes kept whole
    protect: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept lists (as the reference does) but store tuples so options are hashable.
        for name in ("force_context_ids", "force_tokens", "chunk_end_tokens"):
            value = getattr(self, name)
            if value is None:
                value = ()
            if isinstance(value, str):
                raise ValueError(f"{name} must be a list, not a string")
            object.__setattr__(self, name, tuple(value))
        # A string is one entry ("url,path" from a command line); the reference has no such option.
        protect = (self.protect,) if isinstance(self.protect, str) else (self.protect or ())
        object.__setattr__(self, "protect", expand_entries(protect))
        for name, kind in _TYPED_OPTIONS.items():  # a wrong type fails here, not after the model has run
            value = getattr(self, name)
            if not _has_kind(value, kind):
                raise ValueError(f"{name} must be {_KIND_NAMES[kind]}, got {value!r}")
        if not all(_has_kind(i, int) for i in self.force_context_ids):
            raise ValueError(f"force_context_ids must be context indices (integers), got {list(self.force_context_ids)!r}")
        if not _is_number(self.rate) or not 0 < self.rate <= 1:
            raise ValueError(f"rate must be a number in (0, 1] (the share of tokens to keep), got {self.rate!r}")
        if not _is_number(self.target_token) or not (self.target_token == -1 or self.target_token > 0):
            raise ValueError(f"target_token must be -1 (use rate) or a number of tokens > 0, got {self.target_token!r}")
        if self.token_to_word not in ("mean", "first"):
            raise ValueError(f"token_to_word must be 'mean' or 'first', got {self.token_to_word!r}")
        if len(self.force_tokens) > MAX_FORCE_TOKENS:
            raise ValueError(f"at most {MAX_FORCE_TOKENS} force_tokens are supported, got {len(self.force_tokens)}")
        if any(not isinstance(t, str) or t == "" for t in self.force_tokens):
            raise ValueError("force_tokens must be non-empty strings")
        if any(not isinstance(t, str) or t == "" for t in self.chunk_end_tokens):
            raise ValueError("chunk_end_tokens must be non-empty strings")
        if not _is_number(self.context_level_rate) or not 0 <= self.context_level_rate <= 1:
            raise ValueError(f"context_level_rate must be a number in [0, 1] (the share of contexts to keep), got "
                             f"{self.context_level_rate!r}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "CompressionOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown compression option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def fingerprint(self) -> str:
        """A stable hash of every option, for manifests and incremental runs."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _has_kind(value: Any, kind: type) -> bool:
    if kind is int:  # numpy's integers are Integral too; a bool is not a count
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return isinstance(value, kind)


# options checked by type alone (the numbers' ranges are checked one by one)
_TYPED_OPTIONS = {
    "use_context_level_filter": bool, "use_token_level_filter": bool, "return_word_label": bool,
    "force_reserve_digit": bool, "drop_consecutive": bool, "atomic_tokens": bool,
    "target_context": int, "context_level_target_token": int, "word_sep": str, "label_sep": str,
}
_KIND_NAMES = {bool: "true or false", int: "an integer", str: "a string"}
