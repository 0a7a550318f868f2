"""What a compression job is: every option the CLI, a YAML file or ``jobs/compress_corpus.py`` can set.

A config is flat (``input``, ``output``, ``model``, ``rate``, ...); the compression options are the
keyword arguments of ``Compressor.compress`` (``rate``, ``target_token``, ``force_tokens``, ...) and may
also be grouped under a ``compression:`` mapping in YAML. ``job_key()`` hashes everything that changes
the output of a record, and is what manifests and incremental runs compare.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from ..core.options import CompressionOptions
from ..model.precision import DTYPE_ALIASES, DTYPE_CHOICES, PRECISION_LABELS

OUTPUT_FORMAT_VERSION = 1
COMPRESSION_FIELDS = tuple(f.name for f in fields(CompressionOptions))


class JobConfigError(ValueError):
    """The job's configuration is invalid (unknown key, wrong type, missing input/output/model)."""


def _option(default: Any, help: str, choices: tuple | None = None, factory: Any = None) -> Any:
    """A JobConfig field with the text ``--help`` shows for it (and, where fixed, its choices)."""
    metadata = {"help": help, **({"choices": choices} if choices else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


COMPAT_CHOICES = ("extractive", "llmlingua")  # "extractive" is the default, stored as None
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
INPUT_FORMAT_CHOICES = ("auto", "parquet", "hf")
PREPARE_IN_CHOICES = ("auto", "tasks", "replica")


@dataclass
class JobConfig:
    # what to read and write
    input: str = _option("", "input Parquet: s3://bucket/prefix/, any fsspec URI, a local folder or file, or a "
                             "glob; a datasets.save_to_disk folder with --input-format hf")
    output: str = _option("", "output prefix (s3://... or a local folder): <input name>/part-NNNNN.parquet per "
                              "unit, plus _manifest/, _manifest.json, _summary.json, _report.html and _SUCCESS")
    text_column: str = _option("text", "column holding the text (string or binary UTF-8)")
    id_column: str | None = _option("id", "column identifying a record (unique, non-null); '' for none")
    passthrough_columns: list[str] = _option(None, "columns copied unchanged to the output; '*' for every input "
                                                   "column but the text", factory=list)
    keep_text: bool = _option(False, "also write the text itself, in a column named like the text column")
    input_format: str = _option("auto", "auto: a save_to_disk folder if it has state.json, else Parquet",
                                INPUT_FORMAT_CHOICES)
    # the model
    model: str = _option("", "checkpoint: a hub id (org/name), a local folder (config.json + tokenizer), or an "
                             "s3:// prefix (copied once per node)")
    model_revision: str | None = _option(None, "hub revision (branch, tag or commit) of --model")
    compat: str | None = _option(None, "extractive: the input with whole words deleted; llmlingua: "
                                       "byte-for-byte llmlingua 0.2.2 output", COMPAT_CHOICES)
    device: str | None = _option(None, "where scoring replicas run; unset/auto: cuda on GPU replicas, else cpu",
                                 DEVICE_CHOICES)
    dtype: str | None = _option(None, "scoring precision; unset: bfloat16 on GPU replicas in extractive mode, else "
                                      "float32 (float16 needs a GPU; int8: CPU, extractive, approximate)", DTYPE_CHOICES)
    token_counter: str | None = _option(None, "how target-LLM tokens are counted: cl100k_base (when unset), "
                                              "o200k_base, or hf:<tokenizer id or path>")
    tiktoken_file: str | None = _option(None, "a local .tiktoken[.gz] file for the token counter (offline)")
    max_length: int | None = _option(None, "model window in tokens; unset: read from the tokenizer and config")
    max_batch_tokens: int | None = _option(None, "at most this many token positions per forward pass; unset: "
                                                 "8192 on CPU, 16384 on GPUs")
    trust_remote_code: bool = _option(False, "allow the checkpoint's own Python code (only for sources you trust)")
    allow_pickle: bool = _option(False, "allow pickle (non-safetensors) weights (only for sources you trust)")
    # compression options (Compressor.compress keyword arguments)
    compression: dict[str, Any] = field(default_factory=dict)
    # per-record output extras
    include_word_labels: bool = _option(False, "also write words, keep-probabilities and labels (re-threshold "
                                               "later without rescoring)")
    max_document_chars: int = _option(1_000_000, "longer texts get error 'too_large' instead of being compressed")
    # Ray resources
    ray_address: str | None = _option(None, "Ray cluster address; unset: RAY_ADDRESS, a running cluster, or a "
                                            "new local Ray")
    num_gpus: float | None = _option(None, "GPUs per scoring replica; unset: 0 with device cpu, 1 with a cuda "
                                           "device, else 1 if the cluster has GPUs")
    replica_resources: dict[str, float] = _option(None, "custom Ray resources each scoring replica asks for "
                                                        "(YAML only), e.g. {fake_gpu: 1}", factory=dict)
    score_num_cpus: float = _option(1.0, "CPUs per scoring replica")
    prepare_num_cpus: float = _option(1.0, "CPUs per prepare (tokenize and chunk) task")
    prepare_in: str = _option("auto", "where records are tokenized: tasks (CPU tasks beside the replicas, so a GPU "
                                      "never waits for its host), replica (each scoring replica prepares its own "
                                      "units: on CPU its cores are the ones the tasks would take), auto (tasks for "
                                      "GPU replicas, replica for CPU replicas)", choices=PREPARE_IN_CHOICES)
    replica_concurrency: int | None = _option(None, "units a scoring replica works on at once, each in its own "
                                                    "thread, so that one's host work (tokenizing, selecting words) "
                                                    "overlaps another's forward pass; a CPU replica splits its cores "
                                                    "between them. Unset: 2 on a GPU or on >= 2 CPUs, else 1")
    read_num_cpus: float = _option(1.0, "CPUs per id-check task (it only reads the id column)")
    min_replicas: int = _option(1, "scoring replicas that must be placed within --wait-for-resources-s")
    max_replicas: int = _option(1, "scoring replicas asked for (no more than units to score); work starts as soon "
                                   "as one is placed")
    batch_size: int = _option(128, "records per scoring call (more chunks to sort into well-filled forward "
                                   "passes)")
    prepare_batch_size: int = _option(128, "records per prepare task call")
    max_task_retries: int = _option(5, "Ray retries of a crashed prepare/commit task or a replica's unit")
    io_retry_seconds: float = _option(120.0, "how long the driver keeps retrying an unreachable object store")
    wait_for_resources_s: float = _option(300.0, "how long to wait for --min-replicas scoring replicas to be "
                                                 "placed (an autoscaler adding GPU nodes) before failing")
    # units of work: runs of row groups, so a big file is scored by several replicas at once
    # a prepare task holds its whole unit tokenized, ~200 bytes of Python objects per model token (measured:
    # 1.2 GB for 100k records of 200 characters), so units are sized for a prepare task's memory, not for I/O
    unit_rows: int = _option(50_000, "a unit of work holds at most this many rows (whole row groups)")
    unit_bytes: int = _option(32 << 20, "a unit of work holds at most this many uncompressed bytes (whole row "
                                        "groups)")
    # the output prefix: one writer at a time, and a guard against overwriting another job's output
    lease_ttl_s: float = _option(120.0, "the output lease's lifetime; renewed every third of it while the run "
                                        "lives")
    break_lease: bool = _option(False, "take over the output's lease even if it has not expired (its run is gone)")
    overwrite: bool = _option(False, "replace an output written with other options or from another input")
    progress_interval_s: float = _option(10.0, "seconds between progress log lines")
    # accounting and incremental runs
    incremental: bool = _option(False, "carry over unchanged records (same id, same text hash) from the previous "
                                       "output")
    previous: str | None = _option(None, "previous run's output prefix for --incremental; unset: --output")
    check_duplicate_ids: bool = _option(True, "refuse an input whose ids repeat or are null")
    summary_path: str | None = _option(None, "also write the summary JSON to this local file")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> "JobConfig":
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        compression: dict[str, Any] = {}
        for key, value in mapping.items():
            key = str(key).replace("-", "_")  # str: YAML keys may be numbers or booleans
            if key == "compression":
                if value is None:
                    continue
                if not isinstance(value, Mapping):
                    raise JobConfigError("'compression' must be a mapping of Compressor.compress options")
                compression.update({str(k).replace("-", "_"): v for k, v in value.items()})
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
        for f in fields(self):  # first: every check below may then rely on the declared types
            setattr(self, f.name, _typed(f.name, _FIELD_TYPES[f.name], getattr(self, f.name)))
        if require_locations:
            for name in ("input", "output", "model"):
                if not getattr(self, name):
                    raise JobConfigError(f"'{name}' is required (--{name} or '{name}:' in the config)")
        if self.id_column == "":
            self.id_column = None
        if self.compat == "extractive":
            self.compat = None
        if self.compat not in (None, "llmlingua"):
            raise JobConfigError(f"compat must be extractive (default) or llmlingua, got {self.compat!r}")
        if self.input_format not in INPUT_FORMAT_CHOICES:
            raise JobConfigError(f"input_format must be auto, parquet or hf, got {self.input_format!r}")
        if self.replica_concurrency is not None and self.replica_concurrency < 1:
            raise JobConfigError(f"replica_concurrency must be >= 1, got {self.replica_concurrency}")
        if self.prepare_in not in PREPARE_IN_CHOICES:
            raise JobConfigError(f"prepare_in must be auto, tasks or replica, got {self.prepare_in!r}")
        if self.device == "auto":
            self.device = None
        if self.device is not None and not re.fullmatch(r"cpu|cuda(:\d+)?", str(self.device)):
            raise JobConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.dtype is not None and DTYPE_ALIASES.get(str(self.dtype), self.dtype) not in DTYPE_CHOICES:
            raise JobConfigError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {self.dtype!r}")
        if self.dtype == "int8" and (self.compat or str(self.device or "").startswith("cuda")):
            raise JobConfigError("dtype int8 (dynamic quantisation) is for extractive mode on CPU replicas")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise JobConfigError("need 1 <= min_replicas <= max_replicas")
        if self.batch_size < 1 or self.prepare_batch_size < 1:
            raise JobConfigError("batch sizes must be >= 1")
        if self.max_document_chars < 1:
            raise JobConfigError("max_document_chars must be >= 1")
        if self.unit_rows < 1 or self.unit_bytes < 1:
            raise JobConfigError("unit_rows and unit_bytes must be >= 1")
        if self.lease_ttl_s < 3:
            raise JobConfigError("lease_ttl_s must be >= 3 seconds")
        if ALL_COLUMNS in self.passthrough_columns and len(self.passthrough_columns) > 1:
            raise JobConfigError(f"pass-through columns: {ALL_COLUMNS!r} (every column) stands alone, got "
                                 f"{self.passthrough_columns}")
        if self.keep_text and self.text_column in OUTPUT_COLUMNS:
            raise JobConfigError(f"keep_text: the text column {self.text_column!r} clashes with an output column")
        reserved = {self.text_column, "path"} | set(OUTPUT_COLUMNS)
        clash = sorted(set(self.passthrough_columns) & reserved)
        if clash:
            raise JobConfigError(f"pass-through columns {clash} clash with the text column or output columns")
        if self.id_column and self.id_column in self.passthrough_columns:
            raise JobConfigError(f"the id column {self.id_column!r} is always written: leave it out of the "
                                 "pass-through columns")
        repeated = sorted({c for c in self.passthrough_columns if self.passthrough_columns.count(c) > 1})
        if repeated:
            raise JobConfigError(f"pass-through columns named more than once: {repeated}")
        if self.id_column in set(OUTPUT_COLUMNS) | {self.text_column}:
            raise JobConfigError(f"id column {self.id_column!r} clashes with the text column or an output column")
        if self.incremental and not self.id_column:
            raise JobConfigError("incremental runs need an id column")
        self.options()  # raises on invalid compression options
        if self.compat == "llmlingua" and self.options().protect:
            raise JobConfigError("protect is an option of the extractive mode; compat llmlingua has none")

    def replica_gpus(self, cluster_gpus: float | None = None) -> float | None:
        """GPUs per scoring replica: ``num_gpus`` when set, none for ``device: cpu``, one for a cuda device,
        else one if the cluster has GPUs (``cluster_gpus``; None when not known yet gives None here)."""
        if self.num_gpus is not None:
            return float(self.num_gpus)
        if self.device is not None:
            return 0.0 if self.device == "cpu" else 1.0
        return None if cluster_gpus is None else (1.0 if cluster_gpus > 0 else 0.0)

    def replica_count(self, units_to_score: int) -> tuple[int, int]:
        """Scoring replicas to start and how many of them must be placed: ``max_replicas`` and ``min_replicas``,
        but never more than there are units to score (each replica loads a model, perhaps on a GPU of its own,
        and one unit keeps one replica busy: an incremental run with two changed files needs two)."""
        started = max(1, min(int(self.max_replicas), int(units_to_score)))
        return started, min(int(self.min_replicas), started)

    def options(self) -> CompressionOptions:
        try:
            return CompressionOptions.from_kwargs(**self.compression)
        except (TypeError, ValueError) as error:
            raise JobConfigError(str(error)) from error

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def job_key(self, scoring_dtype: str) -> str:
        """Hash of everything that decides a record's output: model, mode, options, output layout, and the
        precision replicas score in (``scoring_dtype``, resolved from ``dtype`` and the replicas' device)."""
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
        if scoring_dtype != "float32":  # only when reduced: float32 outputs made before keep their key (and carry-over)
            decisive["precision"] = PRECISION_LABELS[scoring_dtype]
        if self.keep_text:  # only when set: outputs made before the option existed keep their key (and carry-over)
            decisive["keep_text"] = True
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]


_FIELD_TYPES = typing.get_type_hints(JobConfig)
_NONE = type(None)


def _expected(hint: Any) -> str:
    """What a value of the declared type ``hint`` is, in an operator's words."""
    args = typing.get_args(hint)
    if _NONE in args:
        return f"{_expected(next(a for a in args if a is not _NONE))} or null (unset)"
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list of strings (or one comma-separated string)"
    if origin is dict:
        return "a mapping of names to numbers" if args[1] is float else "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def _typed(name: str, hint: Any, value: Any) -> Any:
    """``value`` as a field of declared type ``hint``: text a number field's command-line option would take
    ("8") is converted, as argparse does, and nothing else is (YAML's 1.5 for an integer, "no" for a flag);
    raises JobConfigError naming the key and what it expected."""
    kind = hint
    if _NONE in typing.get_args(hint):
        if value is None:
            return None
        kind = next(a for a in typing.get_args(hint) if a is not _NONE)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and (isinstance(value, str) or (number and isinstance(value, int))):
            return int(value)
        if kind is float and (isinstance(value, str) or number) and float(value) == float(value):  # not NaN
            return float(value)
        if kind is str and isinstance(value, (str, os.PathLike)):  # a pathlib.Path from Python callers
            return str(value)
        if origin is list:
            items = [v for v in value.split(",") if v] if isinstance(value, str) else value
            if isinstance(items, (list, tuple)) and all(isinstance(v, str) for v in items):
                return list(items)
        if origin is dict and isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            if args[1] is float:
                return {k: _typed(f"{name}.{k}", float, v) for k, v in value.items()}
            return dict(value)
    except (ValueError, JobConfigError):
        pass
    shown = json.dumps(value, default=repr)
    raise JobConfigError(f"{name} must be {_expected(hint)}, got {shown[:80] + '...' if len(shown) > 80 else shown}")


ALL_COLUMNS = "*"  # as the pass-through columns: every input column but the text (expanded at plan time)
OUTPUT_COLUMNS = (
    "compressed_text", "origin_tokens", "compressed_tokens", "ratio", "rate", "n_chunks", "error", "content_hash",
    "words", "word_keep_probabilities", "word_labels",
)
