"""The result of compressing one prompt (a string or a list of contexts)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np


@dataclass
class ContextWords:
    """Per context: its words as the mode reports them, their keep-probabilities (after forcing),
    their labels (1 kept, 0 dropped) and, per chunk, the threshold that was applied."""

    words: list[str]
    probabilities: np.ndarray
    labels: np.ndarray
    thresholds: list[float]


@dataclass
class CompressionResult:
    """Numbers are numbers here (``ratio``, ``rate``); indexing by the reference's keys
    (``result["ratio"]``) returns the reference's values, formatted strings included, so code written
    against ``llmlingua`` keeps working.

    The numbers say what happened, where the reference's strings do not: an empty output of a
    non-empty input has ``compressed_tokens`` 0, ``ratio`` ``inf`` and ``rate`` 0.0 (the reference
    says "1.0x" and "100.0%"); an input with no tokens at all has ``ratio`` and ``rate`` 1.0.
    """

    compressed_prompt: str
    compressed_prompt_list: list[str]
    origin_tokens: int
    compressed_tokens: int
    contexts: list[ContextWords] = field(default_factory=list)
    kept_context_ids: list[int] = field(default_factory=list)
    fn_labeled_original_prompt: str | None = None

    @property
    def ratio(self) -> float:
        """original tokens / compressed tokens: ``inf`` when everything was deleted, 1.0 when there
        was nothing to compress."""
        if self.compressed_tokens == 0:
            return math.inf if self.origin_tokens > 0 else 1.0
        return self.origin_tokens / self.compressed_tokens

    @property
    def rate(self) -> float:
        """compressed tokens / original tokens (1 / ratio): 0.0 when everything was deleted, 1.0 when
        there was nothing to compress."""
        return self.compressed_tokens / self.origin_tokens if self.origin_tokens > 0 else 1.0

    @property
    def word_probabilities(self) -> list[np.ndarray]:
        return [c.probabilities for c in self.contexts]

    @property
    def thresholds(self) -> list[list[float]]:
        return [c.thresholds for c in self.contexts]

    def _reference_items(self) -> dict[str, Any]:
        # the reference's own arithmetic: ratio 1 when nothing is left
        reference_ratio = 1 if self.compressed_tokens == 0 else self.origin_tokens / self.compressed_tokens
        saving = (self.origin_tokens - self.compressed_tokens) * 0.06 / 1000
        items: dict[str, Any] = {
            "compressed_prompt": self.compressed_prompt,
            "compressed_prompt_list": self.compressed_prompt_list,
            "origin_tokens": self.origin_tokens,
            "compressed_tokens": self.compressed_tokens,
            "ratio": f"{reference_ratio:.1f}x",
            "rate": f"{1 / reference_ratio * 100:.1f}%",
            "saving": f", Saving ${saving:.1f} in GPT-4.",
        }
        if self.fn_labeled_original_prompt is not None:
            items["fn_labeled_original_prompt"] = self.fn_labeled_original_prompt
        return items

    def __getitem__(self, key: str) -> Any:
        return self._reference_items()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._reference_items()

    def keys(self) -> Iterator[str]:
        return iter(self._reference_items())

    def get(self, key: str, default: Any = None) -> Any:
        return self._reference_items().get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """The reference's dict, for code that wants a plain ``dict``."""
        return self._reference_items()
