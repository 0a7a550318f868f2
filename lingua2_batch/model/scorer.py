"""Keep-probabilities for many chunks at once: length-sorted batches padded only to their longest
member, bounded by a token budget per forward pass (the reference pads every chunk to 512)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..core.selection import ModelChunk


@dataclass
class ScoringStats:
    """Where scoring time goes; the benchmark reports it."""

    forward_seconds: float = 0.0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    rescored_chunks: int = 0  # scored a second time, canonically, because a decision was too close

    def add(self, other: "ScoringStats") -> None:
        self.forward_seconds += other.forward_seconds
        self.batches += other.batches
        self.real_tokens += other.real_tokens
        self.padded_tokens += other.padded_tokens
        self.rescored_chunks += other.rescored_chunks


@dataclass
class TokenScorer:
    model: Any
    device: torch.device
    pad_token_id: int
    max_batch_tokens: int = 16384
    max_batch_size: int = 128
    max_padding_share: float = 0.1  # a batch closes rather than pad more than this share of its tokens
    stats: ScoringStats = field(default_factory=ScoringStats)

    def plan_batches(self, lengths: Sequence[int], fixed_width: int | None = None) -> list[list[int]]:
        """Indices grouped into batches, longest first, each within the token budget and padding bound."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        current: list[int] = []
        real = 0
        for index in order:
            width = fixed_width or (lengths[current[0]] if current else lengths[index])
            if current:
                padded = (len(current) + 1) * width
                too_padded = fixed_width is None and real + lengths[index] < (1 - self.max_padding_share) * padded
                if padded > self.max_batch_tokens or len(current) >= self.max_batch_size or too_padded:
                    batches.append(current)
                    current, real = [], 0
            current.append(index)
            real += lengths[index]
        if current:
            batches.append(current)
        return batches

    def score(self, chunks: Sequence[ModelChunk], fixed_width: int | None = None) -> tuple[list[np.ndarray], list[int]]:
        """Probability of label 1 ("keep") at every position of every chunk (float32), and the padded
        width each chunk was computed at (results agree across widths only to the last few bits)."""
        results: list[np.ndarray] = [np.zeros(0, np.float32)] * len(chunks)
        widths = [0] * len(chunks)
        lengths = [len(c) for c in chunks]
        for batch in self.plan_batches(lengths, fixed_width):
            width = max(fixed_width or 0, lengths[batch[0]])
            ids = np.full((len(batch), width), self.pad_token_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, index in enumerate(batch):
                ids[row, : lengths[index]] = chunks[index].input_ids
                mask[row, : lengths[index]] = chunks[index].attention_mask
            probs = self._forward(ids, mask)
            for row, index in enumerate(batch):
                results[index] = probs[row, : lengths[index]]
                widths[index] = width
            self.stats.batches += 1
            self.stats.real_tokens += sum(lengths[i] for i in batch)
            self.stats.padded_tokens += ids.size
        return results, widths

    def score_unpadded(self, chunks: Sequence[ModelChunk]) -> list[np.ndarray]:
        """Every chunk at its own length (batches of equal lengths only): the canonical scores, the same
        whatever other chunks are scored alongside."""
        results: list[np.ndarray] = [np.zeros(0, np.float32)] * len(chunks)
        by_length: dict[int, list[int]] = {}
        for index, chunk in enumerate(chunks):
            by_length.setdefault(len(chunk), []).append(index)
        for length, indices in by_length.items():
            probs, _ = self.score([chunks[i] for i in indices], fixed_width=length)
            for index, p in zip(indices, probs):
                results[index] = p
        return results

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        pin = self.device.type == "cuda"
        input_ids = torch.from_numpy(ids)
        attention_mask = torch.from_numpy(mask)
        if pin:
            input_ids, attention_mask = input_ids.pin_memory(), attention_mask.pin_memory()
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device, non_blocking=pin),
                attention_mask=attention_mask.to(self.device, non_blocking=pin),
            ).logits
            probs = torch.softmax(logits.float(), dim=-1)[..., 1].cpu().numpy()
        self.stats.forward_seconds += time.perf_counter() - started
        return probs
