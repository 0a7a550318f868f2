"""How the scorer groups chunks into forward passes: every chunk once, within the token budget and
the padding bound."""

from __future__ import annotations

import random

import pytest
import torch

from lingua2_batch.model.scorer import TokenScorer


def scorer(**kwargs) -> TokenScorer:
    return TokenScorer(model=None, device=torch.device("cpu"), pad_token_id=0, **kwargs)


def padding_share(batch: list[int], lengths: list[int]) -> float:
    width = max(lengths[i] for i in batch)
    return 1 - sum(lengths[i] for i in batch) / (width * len(batch))


@pytest.mark.parametrize("max_padding_share", [0.0, 0.1, 0.25])
def test_every_chunk_once_within_budget_and_padding_bound(max_padding_share):
    rng = random.Random(7)
    lengths = [rng.randint(3, 512) for _ in range(400)]
    planner = scorer(max_padding_share=max_padding_share, max_batch_tokens=4096, max_batch_size=16)
    batches = planner.plan_batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert len(batch) <= 16 and (len(batch) == 1 or width * len(batch) <= 4096)
        assert padding_share(batch, lengths) <= max_padding_share + 1e-9


def test_chunks_of_different_lengths_stay_apart_without_padding_allowance():
    lengths = [512, 505, 498, 490, 512]
    batches = scorer(max_padding_share=0.0).plan_batches(lengths)
    assert sorted(sorted(b) for b in batches) == [[0, 4], [1], [2], [3]]


def test_fixed_width_batches_only_by_budget():
    lengths = [10, 300, 512, 40]
    batches = scorer(max_padding_share=0.0, max_batch_tokens=1024).plan_batches(lengths, fixed_width=512)
    assert [len(b) for b in batches] == [2, 2]
