"""Scoring precisions by name, with no torch import: what the configuration, the job key and the output's
records name, and the default that the Compressor and the job both resolve through."""

from __future__ import annotations

DTYPE_CHOICES = ("float32", "bfloat16", "float16", "int8")
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# What each precision computes in, as outputs record it. The reduced float types are mixed precision
# (float32 embeddings and LayerNorms, matrix products under autocast; see model.loading).
PRECISION_LABELS = {"float32": "float32", "bfloat16": "bfloat16-mixed", "float16": "float16-mixed",
                    "int8": "int8-dynamic"}


def canonical_dtype(dtype: str) -> str:
    """``bf16`` -> ``bfloat16`` and so on; other names unchanged."""
    return DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower())


def default_dtype(device_type: str, compat: str | None) -> str:
    """bfloat16 for extractive mode on GPUs (word decisions agree with float32's to the share the README
    gives, at a fraction of the cost); float32 everywhere else. Compat mode stays float32 on every
    device: its canonical re-scores must be the reference's float32 arithmetic."""
    return "bfloat16" if device_type == "cuda" and compat is None else "float32"


def scoring_dtype(dtype: str | None, device_type: str, compat: str | None) -> str:
    """The dtype a model configured with ``dtype`` (None: the default) scores in on a device of
    ``device_type`` (``cpu``, ``cuda``)."""
    return canonical_dtype(dtype) if dtype is not None else default_dtype(device_type, compat)
