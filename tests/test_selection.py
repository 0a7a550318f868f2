"""Pure selection rules, fed numbers directly (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from lingua2_batch.core.selection import (
    drop_repeated_kept_forced,
    percentile_index,
    reference_percentile,
    repeated_forced_words,
)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reference_percentile_is_numpys_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    checked = 0
    for size in list(range(1, 40)) + [97, 128, 255, 511, 1000]:
        for _ in range(6):
            values = rng.random(size).astype(dtype)
            if size > 4:  # ties and exact 1.0s, as forced words produce
                values[rng.integers(0, size, size // 4)] = values[0]
                values[rng.integers(0, size, 2)] = 1.0
            for q in range(0, 101):
                expected = np.percentile(values, q)
                actual = reference_percentile(values, q)
                assert type(actual) is type(expected) and actual == expected, (size, q)
                checked += 1
    assert checked > 25_000


def test_percentile_index_clamps_like_a_valid_numpy_call():
    assert percentile_index(100 * 1 + 1) == 100  # a rate of 0: the reference passes 101 and raises
    assert percentile_index(-3.5) == 0
    assert percentile_index(50.9) == 50


def test_drop_consecutive_pre_pass_finds_repeats_with_nothing_kept_between():
    words = ["a", ".", ".", "b", ".", "c", "."]
    probs = np.array([0.9, 1.0, 1.0, 0.1, 1.0, 0.8, 1.0], dtype=np.float32)
    assert repeated_forced_words(words, probs, ["."], 0.5) == [2, 4]
    assert repeated_forced_words(words, probs, [], 0.5) == []


def test_drop_consecutive_post_pass_drops_a_kept_force_token_after_the_same_one():
    words = ["a", ".", ".", "b", ".", ".", "\n", "."]
    keep = np.array([True, True, True, False, True, True, True, True])
    drop_repeated_kept_forced(words, keep, [".", "\n"])
    assert keep.tolist() == [True, True, False, False, False, False, True, True]
