"""A scoring replica without a model, for the scale-out benchmark (``bench-scale``): everything around the
model (reading, tokenizing, the object store, scheduling, writing) stays real; only ``Replica.finish`` is
simulated, costing a fixed time per model token as an accelerator would be busy."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..core import compat as _compat
from ..core import extractive as _extractive
from ..core.result import CompressionResult
from .stages import Replica, WorkerContext

def _model_tokens(prepared: Any) -> int:
    if isinstance(prepared, _extractive.ExtractivePrepared):
        chunks = _extractive.model_chunks(prepared)
    else:
        chunks = _compat.model_chunks(prepared)
    return sum(len(chunk) for chunk in chunks)


def _simulated_result(prepared: Any) -> CompressionResult:
    """Every other word of each context (extractive mode), or nothing (compat): output of a realistic size
    without a model."""
    kept = []
    for context in getattr(prepared, "contexts", []):
        text = getattr(context, "text", None)
        if text is not None:
            words = context.word_texts()
            kept.append(" ".join(words[::2]))
    compressed = "\n\n".join(kept)
    return CompressionResult(compressed, kept, prepared.origin_tokens, prepared.origin_tokens // 2)


class SimulatedReplica(Replica):
    """A scoring replica without a model, for benchmarks of everything around the model: ``finish`` returns
    a result of realistic size after sleeping ``SECONDS_PER_MODEL_TOKEN`` per model token (padding
    excluded), as an accelerator would be busy. Set the cost with ``simulated_replica(seconds)``; each
    call's timing goes to ``TIMING_DIR`` (one JSON line per call) when that is set."""

    SECONDS_PER_MODEL_TOKEN = 0.0
    TIMING_DIR: str | None = None

    def __init__(self, context: WorkerContext, use_gpu: bool):  # noqa: D107 - no model to load
        self.timing_file = None
        if self.TIMING_DIR:
            self.timing_file = open(Path(self.TIMING_DIR) / f"replica-{os.getpid()}-{id(self)}.jsonl", "a")

    def finish(self, prepared: Any) -> list[Any]:
        started = time.time()
        tokens = sum(_model_tokens(item) for item in prepared)
        if self.SECONDS_PER_MODEL_TOKEN:
            time.sleep(max(0.0, started + tokens * self.SECONDS_PER_MODEL_TOKEN - time.time()))
        results = [_simulated_result(item) for item in prepared]
        if self.SECONDS_PER_MODEL_TOKEN:  # building the results counts towards the simulated time
            time.sleep(max(0.0, started + tokens * self.SECONDS_PER_MODEL_TOKEN - time.time()))
        if self.timing_file:
            self.timing_file.write(json.dumps({"start": started, "end": time.time(), "records": len(prepared),
                                               "tokens": tokens}) + "\n")
            self.timing_file.flush()
        return results


def simulated_replica(seconds_per_model_token: float, timing_dir: str | None = None) -> type:
    """A ``SimulatedReplica`` with this cost. Made here (not importable by name) so that Ray ships the class
    with its settings to the workers."""
    return type("SimulatedReplicaWithCost", (SimulatedReplica,),
                {"SECONDS_PER_MODEL_TOKEN": float(seconds_per_model_token), "TIMING_DIR": timing_dir,
                 "__module__": "lingua2_batch_bench_dynamic"})
