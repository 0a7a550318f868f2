"""The Ray Data stages between read and write, each a thin wrapper over one step of the core:

* ``prepare_batch`` (CPU tasks): check every record's text, hash it, decide carry-over, then
  ``Compressor.prepare`` (tokenize and chunk). The tokenizer side is a ``Compressor`` built on the
  ``meta`` device: the weights are never materialised, so a CPU task costs only the tokenizer.
* ``ScoreUDF`` (actor pool, GPUs when asked): holds the model and calls ``Compressor.finish`` (score,
  then select words) on the prepared records; turns results into output columns.

Prepared records travel between the two pickled in a binary column. A failure on one record never
fails its batch: the batch is retried record by record and the failing record gets an ``error``.
"""

from __future__ import annotations

import os
import pickle
import threading
from typing import Any

import numpy as np
import pyarrow as pa

from ..compressor import Compressor
from ..core import compat as compat_mode
from ..core import extractive
from ..core.options import CompressionOptions
from ..storage.models import localize_model
from . import records

PREPARED = "_l2_prepared"
CARRIED = "_l2_carried"
PATH = "path"  # added by read_parquet(include_paths=True)

# test hook: a scoring replica exits hard in the middle of its first batch when this file is absent
# (it creates the file first, so the restarted replica goes on). Used by the fault tests only.
CRASH_ONCE_ENV = "LINGUA2_TEST_CRASH_SCORER_ONCE"
SLOW_ENV = "LINGUA2_TEST_SCORE_DELAY_S"

# Per worker process, reused by every job that runs in it (Ray keeps workers between jobs of a session).
# Holds only the tokenizer side, keyed by everything that builds it: the content identities of the model and
# of an ``hf:`` token counter (not just their paths) and every Compressor argument. Compression options are
# never cached: each batch reads its own job's. A few entries at most (a sweep over models must not pile up).
_tokenizer_cache: dict[tuple, Compressor] = {}
_TOKENIZER_CACHE_SIZE = 4
# The previous output's id -> hash table, keyed by the ObjectRef of this job's copy (unique per job).
_previous_cache: dict[Any, dict] = {}
_lock = threading.Lock()


def compressor_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    return dict(
        compat=spec["compat"], dtype=spec["dtype"], token_counter=spec["token_counter"],
        tiktoken_file=spec["tiktoken_file"], max_length=spec["max_length"], max_batch_tokens=spec["max_batch_tokens"],
        trust_remote_code=spec["trust_remote_code"], allow_pickle=spec["allow_pickle"], revision=spec["model_revision"],
    )


def _tokenizer_side(spec: dict[str, Any]) -> Compressor:
    kwargs = compressor_kwargs(spec)
    kwargs["dtype"] = None  # the meta device holds no weights; float32 is fine for any checkpoint
    key = (spec["model"], spec["model_identity"], spec["token_counter_identity"], tuple(sorted(kwargs.items())))
    with _lock:
        if key not in _tokenizer_cache:
            while len(_tokenizer_cache) >= _TOKENIZER_CACHE_SIZE:
                del _tokenizer_cache[next(iter(_tokenizer_cache))]
            _tokenizer_cache[key] = Compressor(localize_model(spec["model"]), device="meta", **kwargs)
        return _tokenizer_cache[key]


def _previous_hashes(holder: list | None) -> dict:
    if not holder:
        return {}
    import ray

    ref = holder[0]
    with _lock:
        if ref not in _previous_cache:
            _previous_cache.clear()
            _previous_cache[ref] = ray.get(ref)
        return _previous_cache[ref]


def _raw_texts(column: pa.ChunkedArray) -> list[Any]:
    """The text values as bytes (strings are read as their UTF-8 bytes), so that a string column holding
    invalid UTF-8 yields a per-record error instead of failing the whole batch on decode."""
    dtype = column.type
    if pa.types.is_string(dtype):
        column = column.cast(pa.binary())
    elif pa.types.is_large_string(dtype):
        column = column.cast(pa.large_binary())
    elif hasattr(pa.types, "is_string_view") and pa.types.is_string_view(dtype):
        column = column.cast(pa.binary_view())
    return column.to_pylist()


def prepare_batch(batch: pa.Table, spec: dict[str, Any], previous: list | None = None) -> pa.Table:
    """CPU stage: checks, content hashes, carry-over decision, ``Compressor.prepare``."""
    compressor = _tokenizer_side(spec)
    options = CompressionOptions.from_kwargs(**spec["compression"])
    texts = _raw_texts(batch.column(spec["text_column"]))
    ids = batch.column(spec["id_column"]).to_pylist() if spec["id_column"] else [None] * len(texts)
    known = _previous_hashes(previous)
    errors: list[str | None] = [None] * len(texts)
    hashes = [records.content_hash(t) for t in texts]
    carried = [bool(known) and i is not None and h is not None and known.get(i) == h for i, h in zip(ids, hashes)]
    usable: list[tuple[int, str]] = []
    for row, value in enumerate(texts):
        if carried[row]:
            continue
        text, error = records.check_text(value, spec["max_document_chars"])
        if error:
            errors[row] = error
        else:
            usable.append((row, text))
    prepared: list[bytes | None] = [None] * len(texts)
    try:
        outcome = compressor.prepare([t for _, t in usable], options)
        for (row, _), item in zip(usable, outcome):
            prepared[row] = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # isolate the failing record(s)
        for row, text in usable:
            try:
                prepared[row] = pickle.dumps(compressor.prepare([text], options)[0], protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:  # noqa: BLE001 - a record's failure becomes its error value
                errors[row] = f"{records.PREPARE_FAILED}: {records.short_exception(error)}"
    table = batch.drop_columns([spec["text_column"]])
    table = table.append_column(PREPARED, pa.array(prepared, pa.large_binary()))
    table = table.append_column("error", pa.array(errors, pa.string()))
    table = table.append_column("content_hash", pa.array(hashes, pa.string()))
    return table.append_column(CARRIED, pa.array(carried, pa.bool_()))


def result_schema(include_word_labels: bool) -> list[tuple[str, pa.DataType]]:
    columns = [
        ("compressed_text", pa.string()), ("origin_tokens", pa.int64()), ("compressed_tokens", pa.int64()),
        ("ratio", pa.float64()), ("rate", pa.float64()), ("n_chunks", pa.int32()),
    ]
    if include_word_labels:
        columns += [("words", pa.list_(pa.string())), ("word_keep_probabilities", pa.list_(pa.float32())),
                    ("word_labels", pa.list_(pa.int8()))]
    return columns


def _n_chunks(prepared: Any) -> int:
    if isinstance(prepared, extractive.ExtractivePrepared):
        return len(extractive.model_chunks(prepared))
    return len(compat_mode.model_chunks(prepared))


class ScoreUDF:
    """One model replica. Ray Data creates ``min_replicas..max_replicas`` of these (ActorPoolStrategy);
    a replica that dies is restarted and its batch retried by Ray (max_restarts / max_task_retries)."""

    def __init__(self, spec: dict[str, Any], use_gpu: bool):
        device = spec["device"] or ("cuda" if use_gpu else "cpu")
        self.spec = spec
        self.compressor = Compressor(localize_model(spec["model"]), device=device, **compressor_kwargs(spec))
        self.include_word_labels = spec["include_word_labels"]

    def _finish_one_by_one(self, prepared: list[Any]) -> list[Any]:
        out = []
        for item in prepared:
            try:
                out.append(self.compressor.finish([item])[0])
            except Exception as error:  # noqa: BLE001
                out.append(f"{records.SCORE_FAILED}: {records.short_exception(error)}")
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        blobs = batch.column(PREPARED).to_pylist()
        rows = [i for i, blob in enumerate(blobs) if blob is not None]
        prepared = [pickle.loads(blobs[i]) for i in rows]
        self._test_hooks()
        try:
            results: list[Any] = self.compressor.finish(prepared) if prepared else []
        except Exception:
            results = self._finish_one_by_one(prepared)
        n = batch.num_rows
        errors = batch.column("error").to_pylist()
        columns: dict[str, list] = {name: [None] * n for name, _ in result_schema(self.include_word_labels)}
        for row, item, result in zip(rows, prepared, results):
            if isinstance(result, str):
                errors[row] = result
                continue
            columns["compressed_text"][row] = result.compressed_prompt
            columns["origin_tokens"][row] = result.origin_tokens
            columns["compressed_tokens"][row] = result.compressed_tokens
            columns["ratio"][row] = float(result.ratio)
            columns["rate"][row] = float(result.rate)
            columns["n_chunks"][row] = _n_chunks(item)
            if self.include_word_labels:
                context = result.contexts[0]
                columns["words"][row] = list(context.words)
                columns["word_keep_probabilities"][row] = np.asarray(context.probabilities, np.float32).tolist()
                columns["word_labels"][row] = np.asarray(context.labels, np.int8).tolist()
        carried = batch.column(CARRIED).to_pylist()
        for row in range(n):  # a record that failed its checks still gets its row, with empty text
            if errors[row] is not None and not carried[row]:
                columns["compressed_text"][row] = ""
        table = batch.drop_columns([PREPARED, "error"])
        for name, dtype in result_schema(self.include_word_labels):
            table = table.append_column(name, pa.array(columns[name], dtype))
        return table.append_column("error", pa.array(errors, pa.string()))

    def _test_hooks(self) -> None:
        delay = os.environ.get(SLOW_ENV)
        if delay:
            import time

            time.sleep(float(delay))
        marker = os.environ.get(CRASH_ONCE_ENV)
        if marker and not os.path.exists(marker):
            with open(marker, "w") as handle:
                handle.write(str(os.getpid()))
            os._exit(1)  # the process dies mid-batch, as an OOM kill or a GPU fault would
