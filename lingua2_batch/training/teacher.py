"""Teacher stage: a chat LLM compresses text chunks, giving (original, compressed) pairs to label.

Any OpenAI-compatible ``/chat/completions`` endpoint works (OpenAI, Azure-style gateways, vLLM,
SGLang, llama.cpp server). The client is the standard library's ``urllib``: no SDK to install or
pin. It bounds concurrency per worker, retries 429/5xx and connection errors with exponential backoff
(honouring ``Retry-After``), and keeps a response cache keyed by everything that determines the
answer (endpoint model, messages, temperature, top_p, max_tokens), so a rerun pays only for what is
missing. Output rows have the schema of ``microsoft/MeetingBank-LLMCompressed``: ``prompt``,
``compressed_prompt``, ``prompt_list``, ``compressed_prompt_list`` (plus the input's id column).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .chunking import DEFAULT_CHUNK_TOKENS, chunk_text
from .instructions import DEFAULT_PROMPT_ID, Instruction, load_instruction

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class TeacherError(RuntimeError):
    """A request that failed for good (non-retryable status, or retries exhausted)."""


@dataclass
class TeacherConfig:
    """Where the teacher is and how to call it. ``base_url``/``model``/API key default to the
    environment (``OPENAI_BASE_URL``, ``LINGUA2_TEACHER_MODEL``, the variable named by ``api_key_env``)."""

    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    prompt_id: str = DEFAULT_PROMPT_ID
    instructions_file: str | None = None
    temperature: float = 0.3  # the paper's
    top_p: float = 1.0
    max_tokens: int = 4000  # upstream's n_max_new_token
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    token_counter: str = "cl100k_base"
    max_concurrency: int = 8  # in-flight requests per worker
    max_retries: int = 8
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    request_timeout_s: float = 180.0
    cache_dir: str | None = None  # a directory every worker can reach (local disk, NFS, ...)
    extra_body: dict[str, Any] = field(default_factory=dict)  # e.g. {"seed": 0} for vLLM

    def resolved(self) -> "TeacherConfig":
        base_url = self.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        model = self.model or os.environ.get("LINGUA2_TEACHER_MODEL")
        if not model:
            raise ValueError("teacher model not set: give `model` or set LINGUA2_TEACHER_MODEL")
        if self.cache_dir and "://" in self.cache_dir:  # the cache writes files by rename: a file system only
            raise ValueError(f"cache_dir must be a local or mounted directory, got {self.cache_dir!r}")
        return TeacherConfig(**{**asdict(self), "base_url": base_url.rstrip("/"), "model": model})


class ResponseCache:
    """One JSON file per request key (two-level fan-out), written atomically; safe across processes."""

    def __init__(self, directory: str | None):
        self.directory = Path(directory) if directory else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        if self.directory is None:
            return None
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))["content"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    def put(self, key: str, content: str, request: dict[str, Any]) -> None:
        if self.directory is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"content": content, "request": request}, handle, ensure_ascii=False)
        os.replace(tmp, path)


class TeacherClient:
    """Calls the chat-completions endpoint for chunks, with caching, bounded concurrency and retries."""

    def __init__(self, config: TeacherConfig, *, sleep=time.sleep):
        self.config = config.resolved()
        self.instruction: Instruction = load_instruction(self.config.prompt_id, self.config.instructions_file)
        self.cache = ResponseCache(self.config.cache_dir)
        self._api_key = os.environ.get(self.config.api_key_env, "")
        self._sleep = sleep
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0}

    def _bump(self, name: str) -> None:
        with self._stats_lock:
            self.stats[name] += 1

    def request_body(self, chunk: str) -> dict[str, Any]:
        c = self.config
        return {
            "model": c.model,
            "messages": self.instruction.messages(chunk),
            "temperature": c.temperature,
            "top_p": c.top_p,
            "max_tokens": c.max_tokens,
            **c.extra_body,
        }

    @staticmethod
    def cache_key(body: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def compress(self, chunk: str) -> str:
        body = self.request_body(chunk)
        key = self.cache_key(body)
        cached = self.cache.get(key)
        if cached is not None:
            self._bump("cache_hits")
            return cached
        content = self._post_with_retries(body)
        self.cache.put(key, content, body)
        return content

    def compress_many(self, chunks: Sequence[str]) -> list[str]:
        if not chunks:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.config.max_concurrency, len(chunks)))) as pool:
            return list(pool.map(self.compress, chunks))

    def _post_with_retries(self, body: dict[str, Any]) -> str:
        c = self.config
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        last_error: str = ""
        for attempt in range(c.max_retries + 1):
            if attempt:
                self._bump("retries")
            self._bump("requests")
            retry_after: float | None = None
            try:
                request = urllib.request.Request(f"{c.base_url}/chat/completions", data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=c.request_timeout_s) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return _message_content(payload)
            except urllib.error.HTTPError as error:
                detail = error.read().decode("utf-8", "replace")[:300]
                last_error = f"HTTP {error.code}: {detail}"
                if error.code not in RETRY_STATUS:
                    raise TeacherError(f"teacher request failed: {last_error}") from error
                retry_after = _retry_after_seconds(error.headers.get("Retry-After") if error.headers else None)
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as error:
                last_error = f"{type(error).__name__}: {error}"
            if attempt < c.max_retries:
                backoff = min(c.backoff_max_s, c.backoff_initial_s * (2**attempt))
                delay = retry_after if retry_after is not None else backoff * (0.5 + random.random() / 2)
                self._sleep(min(delay, c.backoff_max_s))
        raise TeacherError(f"teacher request failed after {c.max_retries + 1} attempts: {last_error}")


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def _message_content(payload: dict[str, Any]) -> str:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as error:
        raise TeacherError(f"unexpected response shape: {str(payload)[:300]}") from error
    return (content or "").strip()


def compress_documents(client: TeacherClient, texts: Sequence[str]) -> list[dict[str, Any]]:
    """MeetingBank-LLMCompressed rows for documents: chunk, compress every chunk (concurrently), join."""
    c = client.config
    from ..core.token_counting import resolve_token_counter

    counter = resolve_token_counter(c.token_counter)
    chunk_lists = [chunk_text(t or "", c.chunk_tokens, counter) for t in texts]
    flat = [chunk for chunks in chunk_lists for chunk in chunks]
    compressed = iter(client.compress_many(flat))
    rows = []
    for text, chunks in zip(texts, chunk_lists):
        outputs = [next(compressed) for _ in chunks]
        rows.append(
            {
                "prompt": text or "",
                "compressed_prompt": " ".join(outputs),  # upstream joins with "" (chunks lose their gap)
                "prompt_list": chunks,
                "compressed_prompt_list": outputs,
            }
        )
    return rows


class TeacherUDF:
    """Ray Data ``map_batches`` class: one client per actor, ``max_concurrency`` requests in flight."""

    def __init__(self, config: dict[str, Any], text_column: str = "text", id_column: str | None = None):
        self.client = TeacherClient(TeacherConfig(**config))
        self.text_column = text_column
        self.id_column = id_column

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = [str(t) if t is not None else "" for t in batch[self.text_column]]
        rows = compress_documents(self.client, texts)
        out: dict[str, Any] = {k: [r[k] for r in rows] for k in ("prompt", "compressed_prompt", "prompt_list", "compressed_prompt_list")}
        if self.id_column:
            out[self.id_column] = list(batch[self.id_column])
        return out


def run_teacher_job(
    input_path: str | Sequence[str],
    output_path: str,
    teacher: TeacherConfig | dict[str, Any],
    *,
    text_column: str = "text",
    id_column: str | None = None,
    num_workers: int = 1,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Ray Data job: Parquet with a text column → Parquet pairs in the MeetingBank-LLMCompressed schema.
    Total in-flight requests are ``num_workers × max_concurrency``."""
    import ray

    config = asdict(teacher) if isinstance(teacher, TeacherConfig) else dict(teacher)
    TeacherConfig(**config).resolved()  # fail on the driver, not in every actor
    columns = [text_column] + ([id_column] if id_column else [])
    ds = ray.data.read_parquet(input_path).select_columns(columns)  # projection pushed into the reader
    pairs = ds.map_batches(
        TeacherUDF,
        fn_constructor_kwargs={"config": config, "text_column": text_column, "id_column": id_column},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=0.5,
    )
    pairs.write_parquet(output_path, mode=ray.data.SaveMode.OVERWRITE)  # a rerun replaces, never appends
    return {"output": output_path}
