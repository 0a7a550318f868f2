"""URIs to filesystems, input listing, small JSON documents and atomic commits.

A ``Location`` pairs an fsspec filesystem with a path in that filesystem's own form ("bucket/key" for
S3, an absolute path locally). Listings bypass s3fs's listing cache, because the job reads back what it
has just written (manifests, committed files).
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow.fs as pafs

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


class OutputPathError(ValueError):
    """An output path would fall outside the output prefix."""


@dataclass(frozen=True)
class Location:
    fs: Any  # fsspec.AbstractFileSystem
    path: str  # in the filesystem's own form, no trailing slash
    uri: str  # as the user gave it

    @property
    def is_local(self) -> bool:
        return _is_local(self.fs)

    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)

    def child(self, *parts: str) -> "Location":
        return Location(self.fs, self.join(*parts), self.uri.rstrip("/") + "/" + "/".join(parts))

    def to_uri(self, path: str) -> str:
        """A path of this filesystem as a URI (for manifests and messages)."""
        if self.is_local:
            return path
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return f"{protocol}://{path}"


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def resolve(uri: str) -> Location:
    """``s3://bucket/prefix``, ``gs://...``, ``file:///x``, ``/abs/path`` or ``relative/path``."""
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError("an input/output location is required")
    options: dict[str, Any] = {}
    if uri.startswith(("s3://", "s3a://")):
        uri = "s3://" + uri.split("://", 1)[1]
        options = {"use_listings_cache": False, "skip_instance_cache": True}
    elif "://" not in uri:
        uri = os.path.abspath(os.path.expanduser(uri))
    fs, path = fsspec.core.url_to_fs(uri, **options)
    return Location(fs, path.rstrip("/") or "/", uri)


def pyarrow_filesystem(location: Location) -> pafs.FileSystem:
    """The same filesystem as pyarrow sees it (for Ray Data's readers)."""
    if location.is_local:
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(location.fs))


def _hidden(relative: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.split("/"))


def list_input_files(location: Location, suffixes: tuple[str, ...] = PARQUET_SUFFIXES) -> tuple[str, list[str]]:
    """(root, sorted file paths) for a file, a folder (recursively, skipping ``_*`` and ``.*`` entries
    such as ``_SUCCESS`` or staging folders) or a glob pattern. Raises FileNotFoundError when nothing
    matches, so a typo never becomes an empty successful run."""
    fs, path = location.fs, location.path
    if any(ch in path for ch in "*?["):
        files = sorted(p for p in fs.glob(path) if fs.isfile(p))
        root = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
    elif fs.isfile(path):
        files, root = [path], posixpath.dirname(path)
    elif fs.isdir(path):
        root = path
        files = sorted(
            p for p in fs.find(path)
            if p.endswith(suffixes) and not _hidden(posixpath.relpath(p, path))
        )
    else:
        raise FileNotFoundError(f"input {location.uri} does not exist")
    if not files:
        raise FileNotFoundError(f"input {location.uri} matches no {'/'.join(suffixes)} file")
    return root, files


def confined_join(root: str, relative: str) -> str:
    """``root/relative``, refusing anything that would leave ``root`` (absolute paths, ``..``)."""
    if not relative or relative.startswith("/") or "\\" in relative or "\x00" in relative:
        raise OutputPathError(f"output name {relative!r} is not a plain relative path")
    normalised = posixpath.normpath(relative)
    if normalised.startswith("..") or normalised in (".", "") or any(p in ("..", ".") for p in relative.split("/")):
        raise OutputPathError(f"output name {relative!r} escapes the output prefix")
    joined = posixpath.join(root, normalised)
    if not joined.startswith(root.rstrip("/") + "/"):
        raise OutputPathError(f"output name {relative!r} escapes the output prefix")
    return joined


def read_json(fs: Any, path: str) -> Any | None:
    """The JSON document at ``path``, or None when there is none."""
    try:
        with fs.open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        return None


def write_json(fs: Any, path: str, document: Any) -> None:
    """Write atomically: a reader sees the old document or the new one, never half of one."""
    data = json.dumps(document, indent=2, sort_keys=True, default=str).encode("utf-8")
    if _is_local(fs):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    else:  # an object store PUT is atomic
        fs.pipe_file(path, data)


def commit_file(fs: Any, staged: str, final: str) -> None:
    """Move a completely written staged file to its final name. Locally an atomic rename; on object
    stores a server-side copy (the final object appears whole or not at all) then a delete."""
    if _is_local(fs):
        fs.makedirs(posixpath.dirname(final), exist_ok=True)
        os.replace(staged, final)
    else:
        fs.copy(staged, final)
        fs.rm(staged)


def remove_tree(fs: Any, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass
