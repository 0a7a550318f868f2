"""What a compression job is: every option the CLI, a YAML file or ``jobs/compress_corpus.py`` can set.

A config is flat (``input``, ``output``, ``model``, ``rate``, ...); the compression options are the
keyword arguments of ``Compressor.compress`` (``rate``, ``target_token``, ``force_tokens``, ...) and may
also be grouped under a ``compression:`` mapping in YAML. ``job_key()`` hashes everything that changes
the output of a record, and is what manifests and incremental runs compare.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from ..core.options import CompressionOptions

OUTPUT_FORMAT_VERSION = 1
COMPRESSION_FIELDS = tuple(f.name for f in fields(CompressionOptions))


class JobConfigError(ValueError):
    """The job's configuration is invalid (unknown key, wrong type, missing input/output/model)."""


@dataclass
class JobConfig:
    # what to read and write
    input: str = ""
    output: str = ""
    text_column: str = "text"
    id_column: str | None = "id"
    passthrough_columns: list[str] = field(default_factory=list)
    input_format: str = "auto"  # auto | parquet | hf (a datasets.save_to_disk folder)
    # the model
    model: str = ""
    model_revision: str | None = None
    compat: str | None = None  # None: extractive (default); "llmlingua": byte-for-byte llmlingua 0.2.2
    device: str | None = None  # None: cuda on GPU replicas, else cpu
    dtype: str | None = None
    token_counter: str | None = None
    tiktoken_file: str | None = None
    max_length: int | None = None
    max_batch_tokens: int = 16384
    trust_remote_code: bool = False
    allow_pickle: bool = False
    # compression options (Compressor.compress keyword arguments)
    compression: dict[str, Any] = field(default_factory=dict)
    # per-record output extras
    include_word_labels: bool = False  # words, keep-probabilities and labels, to re-threshold later
    max_document_chars: int = 1_000_000
    # Ray resources
    ray_address: str | None = None  # None: RAY_ADDRESS or a running cluster, else a local Ray
    num_gpus: float | None = None  # per scoring replica; None: 1 if the cluster has GPUs, else 0
    replica_resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per replica
    score_num_cpus: float = 1.0
    prepare_num_cpus: float = 1.0
    read_num_cpus: float = 1.0
    min_replicas: int = 1
    max_replicas: int = 1
    batch_size: int = 128  # records per scoring call: more chunks to sort into well-filled forward passes
    prepare_batch_size: int = 128
    max_task_retries: int = 5  # Ray retries of a read/prepare task or a replica's batch after a crash
    io_retry_seconds: float = 120.0  # how long the driver keeps retrying a storage call
    wait_for_resources_s: float = 600.0  # how long to wait for the first scoring replica to be placed
    # units of work: runs of row groups, so a big file is scored by several replicas at once
    unit_rows: int = 100_000
    unit_bytes: int = 128 << 20
    # the output prefix: one writer at a time, and a guard against overwriting another job's output
    lease_ttl_s: float = 120.0
    break_lease: bool = False
    overwrite: bool = False
    progress_interval_s: float = 10.0  # how often a progress line is logged
    # accounting and incremental runs
    incremental: bool = False
    previous: str | None = None  # previous run's output (default: this output when incremental)
    check_duplicate_ids: bool = True
    summary_path: str | None = None  # extra local copy of the summary JSON

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> "JobConfig":
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        compression: dict[str, Any] = {}
        for key, value in mapping.items():
            key = key.replace("-", "_")
            if key == "compression":
                if value is None:
                    continue
                if not isinstance(value, Mapping):
                    raise JobConfigError("'compression' must be a mapping of Compressor.compress options")
                compression.update({k.replace("-", "_"): v for k, v in value.items()})
            elif key in COMPRESSION_FIELDS:
                compression[key] = value
            elif key in known:
                values[key] = value
            else:
                raise JobConfigError(f"unknown config key {key!r}")
        values["compression"] = compression
        config = cls(**values)
        config.validate(require_locations=False)
        return config

    def validate(self, require_locations: bool = True) -> None:
        if require_locations:
            for name in ("input", "output", "model"):
                if not getattr(self, name):
                    raise JobConfigError(f"'{name}' is required (--{name} or '{name}:' in the config)")
        if isinstance(self.passthrough_columns, str):
            self.passthrough_columns = [c for c in self.passthrough_columns.split(",") if c]
        if self.id_column == "":
            self.id_column = None
        if self.compat not in (None, "llmlingua"):
            raise JobConfigError(f"compat must be unset (extractive) or 'llmlingua', got {self.compat!r}")
        if self.input_format not in ("auto", "parquet", "hf"):
            raise JobConfigError(f"input_format must be auto, parquet or hf, got {self.input_format!r}")
        if not 1 <= int(self.min_replicas) <= int(self.max_replicas):
            raise JobConfigError("need 1 <= min_replicas <= max_replicas")
        if int(self.batch_size) < 1 or int(self.prepare_batch_size) < 1:
            raise JobConfigError("batch sizes must be >= 1")
        if int(self.max_document_chars) < 1:
            raise JobConfigError("max_document_chars must be >= 1")
        if int(self.unit_rows) < 1 or int(self.unit_bytes) < 1:
            raise JobConfigError("unit_rows and unit_bytes must be >= 1")
        if float(self.lease_ttl_s) < 3:
            raise JobConfigError("lease_ttl_s must be >= 3 seconds")
        reserved = {self.text_column, "path"} | set(OUTPUT_COLUMNS)
        clash = sorted(set(self.passthrough_columns) & reserved)
        if clash:
            raise JobConfigError(f"pass-through columns {clash} clash with the text column or output columns")
        if self.id_column in set(OUTPUT_COLUMNS) | {self.text_column}:
            raise JobConfigError(f"id column {self.id_column!r} clashes with the text column or an output column")
        if self.incremental and not self.id_column:
            raise JobConfigError("incremental runs need an id column")
        self.options()  # raises on invalid compression options

    def options(self) -> CompressionOptions:
        try:
            return CompressionOptions.from_kwargs(**self.compression)
        except (TypeError, ValueError) as error:
            raise JobConfigError(str(error)) from error

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def job_key(self) -> str:
        """Hash of everything that decides a record's output: model, mode, options, output layout."""
        decisive = {
            "format": OUTPUT_FORMAT_VERSION,
            "model": self.model,
            "model_revision": self.model_revision,
            "compat": self.compat,
            "dtype": self.dtype,
            "token_counter": self.token_counter,
            "max_length": self.max_length,
            "options": self.options().fingerprint(),
            "text_column": self.text_column,
            "id_column": self.id_column,
            "passthrough_columns": list(self.passthrough_columns),
            "include_word_labels": self.include_word_labels,
            "max_document_chars": self.max_document_chars,
        }
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]


OUTPUT_COLUMNS = (
    "compressed_text", "origin_tokens", "compressed_tokens", "ratio", "rate", "n_chunks", "error", "content_hash",
    "words", "word_keep_probabilities", "word_labels",
)
