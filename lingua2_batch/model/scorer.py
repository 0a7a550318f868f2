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

    forward_seconds: float = 0.0  # host wall time launching forward passes and waiting for their results
    # CUDA only, when a list (the bench; a long-lived replica keeps none): each pass's (start, end) in ms on
    # one clock, from its copy in to its copy back. See ``device_busy_seconds``.
    device_spans: list[tuple[float, float]] | None = None
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    real_position_pairs: int = 0  # sum over chunks of length²: what attention needs (see model.flops)
    padded_position_pairs: int = 0  # sum over rows of padded width²: what attention computed
    rescored_chunks: int = 0  # scored a second time, canonically, because a decision was too close

    def add(self, other: "ScoringStats") -> None:
        self.forward_seconds += other.forward_seconds
        self.batches += other.batches
        self.real_tokens += other.real_tokens
        self.padded_tokens += other.padded_tokens
        self.real_position_pairs += other.real_position_pairs
        self.padded_position_pairs += other.padded_position_pairs
        self.rescored_chunks += other.rescored_chunks
        if other.device_spans is not None:
            self.device_spans = (self.device_spans or []) + other.device_spans

    def device_busy_seconds(self) -> float:
        """Time the device was busy with any pass: the union of the passes' spans (``device_spans``), since
        passes that two threads enqueue at once interleave on the stream and their spans overlap."""
        busy, reached = 0.0, float("-inf")
        for start, end in sorted(self.device_spans or []):
            if end > reached:
                busy += end - max(start, reached)
                reached = end
        return busy / 1000


@dataclass
class _InFlight:
    """One forward pass enqueued on the device: the host tensor its keep column lands in (on CUDA once
    ``done`` has completed) and the indices of its chunks, row by row."""

    keep: torch.Tensor
    started: Any = None  # torch.cuda.Event pair bracketing the pass on its stream
    done: Any = None
    batch: list[int] = field(default_factory=list)


class PendingScores:
    """Scores whose forward passes are enqueued. On CUDA the device works through them while the host
    does other work (building later batches, selecting words of an earlier wave); ``wait`` collects."""

    def __init__(self, stats: ScoringStats, lengths: list[int], flights: list[_InFlight], clock: Any = None):
        self._stats, self._lengths, self._flights = stats, lengths, flights
        self._clock = clock  # CUDA: an event recorded before every pass, the origin of ``device_spans``

    def wait(self) -> tuple[list[np.ndarray], list[int]]:
        results: list[np.ndarray] = [np.zeros(0, np.float32)] * len(self._lengths)
        widths = [0] * len(self._lengths)
        stats = self._stats
        started = time.perf_counter()
        for flight in self._flights:
            if flight.done is not None:
                flight.done.synchronize()
                if stats.device_spans is not None:
                    stats.device_spans.append((self._clock.elapsed_time(flight.started),
                                               self._clock.elapsed_time(flight.done)))
            probs = flight.keep.numpy()
            for row, index in enumerate(flight.batch):
                results[index] = probs[row, : self._lengths[index]]
                widths[index] = probs.shape[1]
        stats.forward_seconds += time.perf_counter() - started
        return results, widths


@dataclass
class TokenScorer:
    model: Any
    device: torch.device
    pad_token_id: int
    max_batch_tokens: int = 16384
    max_batch_size: int = 128
    max_padding_share: float = 0.1  # a batch closes rather than pad more than this share of its tokens
    # Padding as a (batch, 1, 1, width) additive mask instead of the 2-D mask transformers expands to
    # (batch, 1, width, width) on every pass: a third of a small model's forward time on padded batches.
    # Only for approximate scores; canonical ones go through the same path as the reference's.
    broadcast_padding_mask: bool = False
    autocast_dtype: torch.dtype | None = None  # mixed precision (see model.loading); None: the weights' dtype
    stats: ScoringStats = field(default_factory=ScoringStats)
    _clock: Any = field(default=None, init=False, repr=False)  # CUDA: recorded before any pass (see PendingScores)

    def __post_init__(self) -> None:
        if self.device.type == "cuda":
            self._clock = torch.cuda.Event(enable_timing=True)
            self._clock.record(torch.cuda.current_stream(self.device))

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
        return self.submit(chunks, fixed_width).wait()

    def submit(self, chunks: Sequence[ModelChunk], fixed_width: int | None = None) -> PendingScores:
        """Enqueue the forward passes for ``chunks`` (``score`` without waiting: on CUDA the host is free
        until ``wait``; on CPU the passes run here)."""
        lengths = [len(c) for c in chunks]
        pin = self.device.type == "cuda"  # page-locked host memory: the copy to the device runs asynchronously
        flights = []
        for batch in self.plan_batches(lengths, fixed_width):
            width = max(fixed_width or 0, lengths[batch[0]])
            ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.int64, pin_memory=pin)
            mask = torch.zeros((len(batch), width), dtype=torch.int64, pin_memory=pin)
            ids_view, mask_view = ids.numpy(), mask.numpy()
            for row, index in enumerate(batch):
                ids_view[row, : lengths[index]] = chunks[index].input_ids
                mask_view[row, : lengths[index]] = chunks[index].attention_mask
            broadcast = self.broadcast_padding_mask and fixed_width is None and not mask_view.all()
            started = time.perf_counter()
            flights.append(launch_keep_probabilities(self.model, self.device, ids, mask, broadcast, self.autocast_dtype))
            self.stats.forward_seconds += time.perf_counter() - started
            flights[-1].batch = batch
            self.stats.batches += 1
            self.stats.real_tokens += sum(lengths[i] for i in batch)
            self.stats.padded_tokens += ids.numel()
            self.stats.real_position_pairs += sum(lengths[i] ** 2 for i in batch)
            self.stats.padded_position_pairs += len(batch) * width * width
        return PendingScores(self.stats, lengths, flights, self._clock)

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


def launch_keep_probabilities(model: Any, device: torch.device, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              broadcast_mask: bool = False, autocast_dtype: torch.dtype | None = None) -> _InFlight:
    """Enqueue one forward pass over a padded batch, under ``torch.autocast`` when ``autocast_dtype`` is
    given. Only the keep-probability column comes back to the host: on CUDA into page-locked memory,
    asynchronously (the returned pass is complete once its ``done`` event is); on CPU it is computed here."""
    on_cuda = device.type == "cuda"
    started = done = None
    if on_cuda:
        started, done = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        started.record(torch.cuda.current_stream(device))  # the model's device, whichever is current
    input_ids = input_ids.to(device, non_blocking=on_cuda)
    attention_mask = attention_mask.to(device, non_blocking=on_cuda)
    if broadcast_mask:
        mask_dtype = autocast_dtype or model.dtype  # what attention computes in
        blocked = torch.finfo(mask_dtype).min
        attention_mask = ((1 - attention_mask[:, None, None, :]) * blocked).to(mask_dtype)
    mixed = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    with torch.inference_mode(), mixed:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        keep = torch.softmax(logits.float(), dim=-1)[..., 1]
        if not on_cuda:
            return _InFlight(keep.cpu())
        host = torch.empty(keep.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(keep, non_blocking=True)
        done.record(torch.cuda.current_stream(device))
    return _InFlight(host, started, done)


def keep_probabilities(model: Any, device: torch.device, ids: np.ndarray, mask: np.ndarray,
                       broadcast_mask: bool = False, autocast_dtype: torch.dtype | None = None) -> np.ndarray:
    """Probability of label 1 at every position of a padded batch, as float32 on the host, waiting for it."""
    flight = launch_keep_probabilities(model, device, torch.from_numpy(ids), torch.from_numpy(mask), broadcast_mask,
                                       autocast_dtype)
    if flight.done is not None:
        flight.done.synchronize()
    return flight.keep.numpy()


def broadcast_mask_agrees(model: Any, device: torch.device, pad_token_id: int, tolerance: float,
                          autocast_dtype: torch.dtype | None = None) -> bool:
    """Whether this model takes a ready (batch, 1, 1, width) additive padding mask and scores a padded
    batch as it does with the usual 2-D mask (transformers 5 passes 4-D masks through; other versions,
    attention kernels or remote code may reject or misread one)."""
    ids = np.array([[5, 6, 7, 8, 9, 10], [5, 6, 7, pad_token_id, pad_token_id, pad_token_id]], dtype=np.int64)
    mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0]], dtype=np.int64)
    try:
        usual = keep_probabilities(model, device, ids, mask, autocast_dtype=autocast_dtype)
        broadcast = keep_probabilities(model, device, ids, mask, broadcast_mask=True, autocast_dtype=autocast_dtype)
    except Exception:  # noqa: BLE001 - any failure means "use the usual mask"
        return False
    return bool(np.abs(usual - broadcast)[mask.astype(bool)].max() <= tolerance)
