"""Checkpoints kept in object storage (``s3://bucket/models/x/``) for air-gapped clusters: copied once
per node into a local cache, guarded by a file lock so concurrent replicas on one node share one copy.
Hub ids and local folders are returned unchanged."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import posixpath
import shutil
from pathlib import Path

from .fs import resolve

MODEL_CACHE_ENV = "LINGUA2_MODEL_CACHE"
_DONE_MARKER = ".lingua2-complete"
# files up to this size (config, tokenizer, vocabularies) are hashed whole; larger ones (weights) by size and mtime
_HASHED_WHOLE_BYTES = 64 << 20


def is_remote_model(model: str) -> bool:
    return "://" in model and not model.startswith("file://")


def model_cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lingua2_batch" / "models"
    return Path(os.environ.get(MODEL_CACHE_ENV, default))


def local_model_path(model: str) -> str:
    """``model`` as a local path: without ``file://`` and with ``~`` expanded (transformers would take an
    unexpanded ``~/m`` for a hub id). A hub id passes unchanged."""
    return os.path.expanduser(model[len("file://"):] if model.startswith("file://") else model)


def localize_model(model: str) -> str:
    """A local folder holding ``model``: the input itself (as a local path) unless it is a remote URI."""
    if not is_remote_model(model):
        return local_model_path(model)
    location = resolve(model)
    files = sorted(p for p in location.fs.find(location.path, detail=False) if location.fs.isfile(p))
    if not files:
        raise FileNotFoundError(f"model {model} holds no files")
    # keyed by the URI and the objects' sizes and ETags: a checkpoint replaced in place is copied again
    digest = hashlib.sha256(model.rstrip("/").encode())
    for path in files:
        info = location.fs.info(path)
        digest.update(f"{path}:{info.get('size')}:{info.get('ETag') or info.get('mtime')}".encode())
    key = digest.hexdigest()[:16]
    target = model_cache_dir() / f"{posixpath.basename(location.path.rstrip('/')) or 'model'}-{key}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(str(target) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (target / _DONE_MARKER).exists():
                return str(target)
            partial = Path(str(target) + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            for remote in files:
                relative = posixpath.relpath(remote, location.path)
                if relative.startswith(".."):
                    continue
                local = partial / relative
                local.parent.mkdir(parents=True, exist_ok=True)
                location.fs.get_file(remote, str(local))
            (partial / _DONE_MARKER).write_text(model)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(partial, target)
            return str(target)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _object_stamp(info: dict) -> str:
    return str(info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified"))


def model_identity(model: str, revision: str | None = None) -> str:
    """Which weights and tokenizer ``model`` names right now: a remote prefix by its objects' sizes and ETags,
    a local folder by its small files' contents and its large files' sizes and mtimes, a hub id by the
    revision asked for. Manifests record it (a change invalidates skips and carry-over) and per-process
    caches key on it, so a checkpoint replaced in place is never mistaken for the one before."""
    digest = hashlib.sha256()
    try:
        if is_remote_model(model):
            location = resolve(model)
            for path in sorted(location.fs.find(location.path)):
                info = location.fs.info(path)
                digest.update(json.dumps([posixpath.relpath(path, location.path), int(info.get("size") or 0),
                                          _object_stamp(info)]).encode())
            return f"{model}#{digest.hexdigest()[:16]}"
        local = local_model_path(model)
        if os.path.isdir(local):
            for root, folders, names in os.walk(local):
                folders.sort()
                for name in sorted(names):
                    full = os.path.join(root, name)
                    stat = os.stat(full)
                    digest.update(f"{os.path.relpath(full, local)}:{stat.st_size}".encode())
                    if stat.st_size <= _HASHED_WHOLE_BYTES:
                        with open(full, "rb") as handle:
                            digest.update(hashlib.sha256(handle.read()).digest())
                    else:
                        digest.update(str(stat.st_mtime_ns).encode())
            return f"{os.path.abspath(local)}#{digest.hexdigest()[:16]}"
    except OSError:
        pass
    return f"{model}@{revision or 'default'}"
