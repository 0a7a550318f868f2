"""Arithmetic of one forward pass of a BERT-shaped encoder, from its config: what the benchmark divides
by time to get achieved FLOP/s and model FLOP utilisation. A multiply-add counts as 2 FLOPs; layer
norms, softmaxes, biases and the embedding lookup (all linear in the tokens and small) are left out."""

from __future__ import annotations

from typing import Any


def dense_flops_per_token(config: Any) -> int:
    """Per token: the Q, K, V and output projections and the two feed-forward matrices of every layer,
    and the 2-label classifier."""
    hidden, layers, intermediate = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    return 2 * (layers * (4 * hidden * hidden + 2 * hidden * intermediate) + hidden * config.num_labels)


def attention_flops_per_position_pair(config: Any) -> int:
    """Per (query token, attended position) pair: Q·Kᵀ and the weighted sum of V over every layer."""
    return 4 * config.num_hidden_layers * config.hidden_size


def forward_flops(config: Any, tokens: int, position_pairs: int) -> int:
    """FLOPs of forward passes over ``tokens`` token positions in which each token attends to the
    positions of its row (``position_pairs`` = the sum over rows of width²)."""
    return dense_flops_per_token(config) * tokens + attention_flops_per_position_pair(config) * position_pairs
