"""Evaluation of a trained checkpoint on held-out labelled data: piece-level accuracy / precision /
recall / F1 (keep class) against the teacher's labels, computed exactly as during validation, and the
compression ratio the checkpoint achieves through ``Compressor`` at the requested rates."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..compressor import Compressor
from .stages import read_labelled
from .train import Collator, build_examples, evaluate_model, metrics_from_counts


def evaluate_checkpoint(
    checkpoint: str,
    data: str | Sequence[str],
    *,
    rates: Sequence[float] = (0.5,),
    label_pieces: str = "all",
    max_length: int = 512,
    batch_size: int = 32,
    device: str | None = None,
    max_documents: int | None = None,
) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    compressor = Compressor(checkpoint, device=device)
    model, tokenizer = compressor.loaded.model, compressor.loaded.tokenizer
    table = read_labelled(data, ["text", "word_starts", "word_ends", "labels"])
    if max_documents is not None:
        table = table.slice(0, max_documents)
    examples = build_examples(tokenizer, table, min(max_length, compressor.frame.max_length), label_pieces)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    loader = DataLoader(examples, batch_size=batch_size, shuffle=False, collate_fn=Collator(pad))
    token_metrics = metrics_from_counts(evaluate_model(model, loader, compressor.loaded.device).tolist())

    texts = table.column("text").to_pylist()
    labels = table.column("labels").to_pylist()
    teacher_kept = sum(int(np.sum(l)) for l in labels) / max(1, sum(len(l) for l in labels))
    compression = []
    for rate in rates:
        results = compressor.compress_batch(texts, rate=rate)
        origin = sum(r.origin_tokens for r in results)
        kept = sum(r.compressed_tokens for r in results)
        compression.append(
            {
                "rate": rate,
                "achieved_rate": kept / origin if origin else 1.0,
                "ratio": origin / kept if kept else 1.0,
                "mean_document_ratio": float(np.mean([r.ratio for r in results])) if results else 1.0,
                "documents": len(results),
            }
        )
    return {
        "checkpoint": compressor.model_identity,
        "samples": table.num_rows,
        "label_pieces": label_pieces,
        "token_metrics": token_metrics,
        "teacher_kept_word_share": teacher_kept,
        "compression": compression,
    }
