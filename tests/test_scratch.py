"""Checkpoints built from scratch are deterministic: the same files, byte for byte, on every build."""

from __future__ import annotations

import pytest

from lingua2_batch.model.scratch import build_checkpoint


@pytest.mark.parametrize("family", ["sentencepiece", "wordpiece"])
def test_build_checkpoint_is_byte_identical(family, tmp_path, checkpoints):
    again = build_checkpoint(tmp_path / family, family)
    first = checkpoints[family]
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors"):
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
