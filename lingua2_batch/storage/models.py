"""Checkpoints kept in object storage (``s3://bucket/models/x/``) for air-gapped clusters: copied once
per node into a local cache, guarded by a file lock so concurrent replicas on one node share one copy.
Hub ids and local folders are returned unchanged."""

from __future__ import annotations

import fcntl
import hashlib
import os
import posixpath
import shutil
from pathlib import Path

from .fs import resolve

MODEL_CACHE_ENV = "LINGUA2_MODEL_CACHE"
_DONE_MARKER = ".lingua2-complete"


def is_remote_model(model: str) -> bool:
    return "://" in model and not model.startswith("file://")


def model_cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lingua2_batch" / "models"
    return Path(os.environ.get(MODEL_CACHE_ENV, default))


def localize_model(model: str) -> str:
    """A local folder holding ``model``: the input itself unless it is a remote URI."""
    if model.startswith("file://"):
        return model[len("file://"):]
    if not is_remote_model(model):
        return model
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
