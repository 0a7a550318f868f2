"""Labelling: which words of the original survive in the teacher's compression (the paper's word
annotation, upstream ``label_word.py``), the per-sample quality metrics, and the percentile filter
(upstream ``filter.py``).

Words. Upstream splits with spaCy and compares lemmas, dropping commas. Here the split is
tokenizer-independent and needs no model: whitespace-separated tokens, with leading/trailing
punctuation and symbols (Unicode categories P*, S*) peeled off as one-character words, and CJK
characters (ideographs, kana, hangul) as one word each. Inner punctuation stays ("3.5", "don't",
"v2.4.12"). Each word is a character span of the original, so training can map labels onto any
tokenizer's pieces by offsets. Words are compared case-insensitively (``str.casefold``).

Alignment (upstream's algorithm, ``window_size`` default 150): keep a cursor ``prev`` in the
original; for each compressed word, for i in 0..window-1 look at ``prev + i`` (forward, clamped to
the last word) and then, if ``search_backward``, at ``prev - i`` (clamped to 0); the first unlabelled
equal word is labelled 1 and becomes the cursor, except that a forward jump of more than half a
window moves the cursor by only half a window ("the window does not go too fast"). Each original
word is labelled at most once.

Metrics (upstream's definitions): with O original words, C compressed words, F = compressed words
found anywhere in the original, L = original words labelled 1:
``variation_rate = 1 - F/C`` (1 when C = 0), ``hitting_rate = F/O``, ``matching_rate = L/O``,
``alignment_gap = hitting_rate - matching_rate``, ``compression_rate = C/O``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

DEFAULT_WINDOW_SIZE = 150
# The paper drops the top 5% by variation rate, then the top 10% by alignment gap (upstream's
# filter.py uses the 90th percentile for both).
DEFAULT_VR_PERCENTILE = 95.0
DEFAULT_AG_PERCENTILE = 90.0

_CJK = (
    "\u1100-\u11ff\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31a0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
)
_CJK_SPLIT = re.compile(f"[{_CJK}]|[^{_CJK}]+")
_NON_SPACE = re.compile(r"\S+")


def _is_punct(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


def _peel(text: str, start: int, end: int, out: list[tuple[int, int]]) -> None:
    """A run without whitespace or CJK: punctuation at either end as one-character words."""
    trailing = []
    while start < end and _is_punct(text[start]):
        out.append((start, start + 1))
        start += 1
    while end > start and _is_punct(text[end - 1]):
        trailing.append((end - 1, end))
        end -= 1
    if start < end:
        out.append((start, end))
    out.extend(reversed(trailing))


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of ``text`` (see the module docstring)."""
    spans: list[tuple[int, int]] = []
    for match in _NON_SPACE.finditer(text):
        base = match.start()
        token = match.group()
        for part in _CJK_SPLIT.finditer(token):
            s, e = base + part.start(), base + part.end()
            if e - s == 1 and re.match(f"[{_CJK}]", text[s]):
                spans.append((s, e))
            else:
                _peel(text, s, e, spans)
    return spans


def split_words(text: str) -> list[str]:
    return [text[s:e] for s, e in word_spans(text)]


@dataclass(frozen=True)
class AlignmentConfig:
    window_size: int = DEFAULT_WINDOW_SIZE
    search_backward: bool = True  # upstream looks back as well as forward
    limit_jump: bool = True  # upstream's "window do not go too fast"

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {self.window_size}")


def align_words(original: Sequence[str], compressed: Sequence[str], config: AlignmentConfig = AlignmentConfig()) -> list[int]:
    """Label (0/1) per original word: 1 where a compressed word was aligned to it."""
    keys = [w.casefold() for w in original]
    n = len(keys)
    labels = [0] * n
    if n == 0:
        return labels
    window, half = config.window_size, config.window_size // 2
    prev = 0
    for word in compressed:
        target = word.casefold()
        for i in range(window):
            j = min(prev + i, n - 1)
            if keys[j] == target and not labels[j]:
                labels[j] = 1
                prev = prev + half if (config.limit_jump and j - prev > half) else j
                break
            if config.search_backward:
                j = max(prev - i, 0)
                if keys[j] == target and not labels[j]:
                    labels[j] = 1
                    prev = j
                    break
    return labels


@dataclass
class LabelledSample:
    text: str
    compressed: str
    words: list[str]
    word_starts: list[int]
    word_ends: list[int]
    labels: list[int]
    compression_rate: float
    variation_rate: float
    hitting_rate: float
    matching_rate: float
    alignment_gap: float

    def as_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def label_pair(original: str, compressed: str, config: AlignmentConfig = AlignmentConfig()) -> LabelledSample:
    spans = word_spans(original)
    words = [original[s:e] for s, e in spans]
    comp_words = split_words(compressed)
    labels = align_words(words, comp_words, config)
    n_orig, n_comp = len(words), len(comp_words)
    vocabulary = {w.casefold() for w in words}
    found = sum(1 for w in comp_words if w.casefold() in vocabulary)
    find_rate = found / n_comp if n_comp else 0.0
    hitting = found / n_orig if n_orig else 0.0
    matching = sum(labels) / n_orig if n_orig else 0.0
    return LabelledSample(
        text=original,
        compressed=compressed,
        words=words,
        word_starts=[s for s, _ in spans],
        word_ends=[e for _, e in spans],
        labels=labels,
        compression_rate=n_comp / n_orig if n_orig else 0.0,
        variation_rate=1.0 - find_rate,
        hitting_rate=hitting,
        matching_rate=matching,
        alignment_gap=hitting - matching,
    )


def label_pairs_rows(rows: Sequence[dict[str, Any]], config: AlignmentConfig = AlignmentConfig(), id_column: str | None = None) -> list[dict[str, Any]]:
    """One labelled row per chunk from MeetingBank-LLMCompressed rows. A row whose lists differ in
    length is skipped, as upstream does; chunks without words are skipped."""
    out = []
    for index, row in enumerate(rows):
        prompts, comps = list(row["prompt_list"]), list(row["compressed_prompt_list"])
        if len(prompts) != len(comps):
            continue
        doc_id = str(row[id_column]) if id_column else str(row.get("_row", index))
        for chunk_index, (original, compressed) in enumerate(zip(prompts, comps)):
            sample = label_pair(str(original), str(compressed or ""), config)
            if not sample.words:
                continue
            out.append({"doc_id": doc_id, "chunk_index": chunk_index, **sample.as_row()})
    return out


@dataclass(frozen=True)
class FilterThresholds:
    variation_rate: float
    alignment_gap: float
    n_input: int
    n_after_variation: int
    n_kept: int


def filter_thresholds(
    variation_rates: Sequence[float],
    alignment_gaps: Sequence[float],
    vr_percentile: float = DEFAULT_VR_PERCENTILE,
    ag_percentile: float = DEFAULT_AG_PERCENTILE,
) -> FilterThresholds:
    """Thresholds for the two-step filter. A sample is dropped when its variation rate is *above*
    the ``vr_percentile``-th percentile, then, among the rest, when its alignment gap is above the
    ``ag_percentile``-th percentile of theirs. Strictly above: upstream's ``>=`` would drop every
    sample of a clean dataset whose rates are all 0. A percentile of 100 disables that step."""
    vr = np.asarray(variation_rates, dtype=np.float64)
    ag = np.asarray(alignment_gaps, dtype=np.float64)
    if len(vr) == 0:
        return FilterThresholds(np.inf, np.inf, 0, 0, 0)
    vr_threshold = float(np.percentile(vr, vr_percentile))
    after_vr = vr <= vr_threshold
    ag_threshold = float(np.percentile(ag[after_vr], ag_percentile))
    kept = after_vr & (ag <= ag_threshold)
    return FilterThresholds(vr_threshold, ag_threshold, len(vr), int(after_vr.sum()), int(kept.sum()))


def keep_mask(variation_rates, alignment_gaps, thresholds: FilterThresholds) -> np.ndarray:
    vr = np.asarray(variation_rates, dtype=np.float64)
    ag = np.asarray(alignment_gaps, dtype=np.float64)
    return (vr <= thresholds.variation_rate) & (ag <= thresholds.alignment_gap)
