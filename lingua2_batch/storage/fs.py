"""URIs to filesystems, input listing, small JSON documents and atomic commits.

A ``Location`` pairs an fsspec filesystem with a path in that filesystem's own form ("bucket/key" for
S3, an absolute path locally). Listings bypass s3fs's listing cache, because the job reads back what it
has just written (manifests, committed files).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import fsspec

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
log = logging.getLogger(__name__)


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
        if _is_http(self.fs):
            return path  # http paths are whole URLs already
        return f"{_protocol(self.fs)}://{path}"


def _protocol(fs: Any) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def _is_local(fs: Any) -> bool:
    return _protocol(fs) in ("file", "local")


def _is_http(fs: Any) -> bool:
    return _protocol(fs) in ("http", "https")


def resolve(uri: str) -> Location:
    """``s3://bucket/prefix``, ``gs://...``, ``file:///x``, ``/abs/path`` or ``relative/path``."""
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError("an input/output location is required")
    options: dict[str, Any] = {}
    if uri.startswith(("s3://", "s3a://")):
        uri = "s3://" + uri.split("://", 1)[1]
        options = {"use_listings_cache": False, "skip_instance_cache": True}
    elif "://" not in uri:  # a local path, taken literally (fsspec would read "::" in it as a URL chain)
        path = os.path.abspath(os.path.expanduser(uri))
        return Location(fsspec.filesystem("file"), path.rstrip("/") or "/", path)
    fs, path = fsspec.core.url_to_fs(uri, **options)
    return Location(fs, path.rstrip("/") or "/", uri)


def without_query(fs: Any, path: str) -> str:
    """The path less a URL's query string (``?X-Amz-Signature=...``); other filesystems' names keep their
    ``?``, which is part of a local file's name."""
    return path.split("?", 1)[0] if _is_http(fs) else path


def is_hidden(relative: str) -> bool:
    """A name under a ``_*`` or ``.*`` file or folder: job metadata by convention, which readers skip."""
    return any(part.startswith(("_", ".")) for part in relative.split("/"))


def has_parquet_suffix(name: str) -> bool:
    return name.lower().endswith(PARQUET_SUFFIXES)


@dataclass
class InputListing:
    """What the one listing rule made of an input location. ``files`` are read, every one of them;
    ``skipped`` are left out by rule and reported (never silently); ``refused`` stop the job up front."""

    root: str
    files: list[str]
    skipped: list[tuple[str, str]]  # (relative name, why)
    refused: list[tuple[str, str]]


def _unreadable_name(relative: str, local: bool) -> str | None:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in relative):
        return "its name contains a control character (tab, newline, ...)"
    if not local and "?" in relative:
        return "its name contains '?', which object-store clients read as the start of a query (?versionId=)"
    return None


def list_input_files(location: Location) -> InputListing:
    """The one listing rule, for a file, a folder (recursively) or a glob pattern (``*``, ``?``, ``[...]``; a
    path that exists is taken literally, and a folder the pattern matches is read recursively):

    * read: names ending in ``.parquet`` (any case), ``.pq`` or ``.parq``;
    * skipped and reported: names under a ``_*`` or ``.*`` file or folder (``_SUCCESS``, ``_staging/``,
      ``.git/``, a job's own metadata) and files with another suffix;
    * refused before any work: names that a reader cannot open reliably (control characters; ``?`` on
      object stores).

    Raises FileNotFoundError when nothing is left to read, so a typo never becomes an empty successful run."""
    fs, path = location.fs, location.path
    if _is_http(fs):  # a (presigned) URL: one file, whatever its query string says
        return InputListing(posixpath.dirname(without_query(fs, path)), [path], [], [])
    if any(ch in path for ch in "*?[") and not fs.exists(path):  # a name that exists is never a pattern
        found = []
        for match, info in fs.glob(path, detail=True).items():  # a matched folder is read like a folder
            found += fs.find(match) if info.get("type") == "directory" else [match]
        found = sorted(set(found))
        root = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
    elif fs.isfile(path):
        found, root = [path], posixpath.dirname(path)
    elif fs.isdir(path):
        root = path
        found = sorted(fs.find(path))
    else:
        raise FileNotFoundError(f"input {location.uri} does not exist")
    listing = InputListing(root, [], [], [])
    single = len(found) == 1 and found[0] == path
    for file in found:
        relative = posixpath.relpath(file, root)
        if not single and is_hidden(relative):
            listing.skipped.append((relative, "hidden or underscore name (job metadata by convention)"))
        elif not has_parquet_suffix(relative):
            listing.skipped.append((relative, f"not a Parquet suffix ({', '.join(PARQUET_SUFFIXES)}, any case)"))
        elif (why := _unreadable_name(relative, location.is_local)) is not None:
            listing.refused.append((relative, why))
        else:
            listing.files.append(file)
    if not listing.files and not listing.refused:
        raise FileNotFoundError(f"input {location.uri} matches no {'/'.join(PARQUET_SUFFIXES)} file")
    return listing


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
    _write_whole(fs, path, json.dumps(document, indent=2, sort_keys=True, default=str).encode("utf-8"))


def _write_whole(fs: Any, path: str, data: bytes, only_if_absent: bool = False) -> None:
    """Locally a temporary file renamed over ``path``; on an object store a PUT (atomic by itself).
    ``only_if_absent`` (local only): hard-link the temporary file to ``path`` instead, which fails with
    FileExistsError if anything is there, atomically, NFS included."""
    if _is_local(fs):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if only_if_absent:
            try:
                os.link(temporary, path)
                os.unlink(temporary)
                return
            except FileExistsError:
                os.unlink(temporary)
                raise
            except OSError:  # no hard links here (some FUSE mounts): the caller's comparison must do
                pass
        os.replace(temporary, path)
    else:
        fs.pipe_file(path, data)


# Conditional writes: a version token names what a writer last saw, and a write or removal happens only if the
# object is still at it (None: only if absent). On S3 the token is the ETag and the condition is the store's own
# (If-Match / If-None-Match, atomic; a store answering them 501 gets compare-then-write and one warning); locally it
# is the content's hash, compared and replaced under an exclusive flock of a lock file beside it; other stores
# compare, then write, which two simultaneous writers can interleave.
_LOST_RACE = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404")
_UNLOCKED_WARNED: set[str] = set()  # local paths whose filesystem refused a lock: warned once each
_UNCONDITIONAL_STORES: set[str] = set()  # endpoint, bucket, method answered "not implemented" when conditional


def _s3_error_code(error: BaseException) -> str | None:
    response = getattr(error.__cause__, "response", None) or getattr(error, "response", None) or {}
    return response.get("Error", {}).get("Code")


@contextlib.contextmanager
def _lock_beside(path: str) -> Iterator[None]:
    """An exclusive ``flock`` of ``<path>.lock`` (a file, kept: deleting a lock file races with its next
    taker). A file, not the folder: NFS emulates ``flock`` with POSIX locks, which need a file open for
    writing. Where the filesystem has no locks at all (some FUSE mounts), the change goes unlocked, as on
    stores without conditions, and a warning says so; a create there is still atomic where hard links work."""
    os.makedirs(posixpath.dirname(path), exist_ok=True)
    descriptor = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError as error:
            if path not in _UNLOCKED_WARNED:  # not at every heartbeat
                _UNLOCKED_WARNED.add(path)
                log.warning("no file lock on %s (%s): its conditional writes are compare-then-write (creating "
                            "it stays atomic)", path, error)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _read_bytes(fs: Any, path: str) -> bytes | None:
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def _version(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def read_versioned(fs: Any, path: str) -> tuple[bytes, str] | None:
    """The object's bytes and its version token, or None when there is none. On S3 the token is the ETag seen
    before the read: a write in between makes the next conditional call fail, as it should."""
    if _protocol(fs) in ("s3", "s3a"):
        bucket, key, _ = fs.split_path(path)
        try:
            etag = fs.call_s3("head_object", Bucket=bucket, Key=key)["ETag"]
            return fs.cat_file(path), etag
        except FileNotFoundError:
            return None
    data = _read_bytes(fs, path)
    return None if data is None else (data, _version(data))


def _at_version(fs: Any, path: str, version: str | None, s3_request: tuple[str, dict],
                change: Callable[[], None]) -> dict | None:
    """Change ``path`` only if it is at ``version``: on S3 the conditional request ``s3_request`` (method,
    arguments), elsewhere ``change`` after comparing (locally under a file lock). Returns the S3 response
    (an empty one elsewhere), or None when the object was not at ``version``."""
    if _protocol(fs) in ("s3", "s3a"):
        bucket, key, _ = fs.split_path(path)
        method, arguments = s3_request
        store = f"{fs.s3.meta.endpoint_url} {bucket} {method}"  # a store may condition PUT but not DELETE
        if store not in _UNCONDITIONAL_STORES:
            try:
                return fs.call_s3(method, Bucket=bucket, Key=key, **arguments)
            except OSError as error:  # s3fs raises FileExistsError, FileNotFoundError or OSError for these
                code = _s3_error_code(error)
                if code in _LOST_RACE:
                    return None
                if code != "NotImplemented":
                    raise
                _UNCONDITIONAL_STORES.add(store)
                log.warning("the store of bucket %s (%s) does not implement conditional %s requests (If-Match, "
                            "If-None-Match): those are compare-then-write there", bucket, fs.s3.meta.endpoint_url,
                            method)
        return _s3_compare_then(fs, bucket, key, version, method, arguments)
    with _lock_beside(path) if _is_local(fs) else contextlib.nullcontext():
        if _version(_read_bytes(fs, path)) != version:
            return None
        try:
            change()
        except FileExistsError:  # an exclusive create that another writer beat (a filesystem without locks)
            return None
        return {}


def _s3_compare_then(fs: Any, bucket: str, key: str, version: str | None, method: str,
                     arguments: dict) -> dict | None:
    """For an S3-compatible store that answers conditional requests with 501: compare the ETag, then send the
    request without its condition (two writers at the same moment can interleave, as on other stores)."""
    try:
        current = fs.call_s3("head_object", Bucket=bucket, Key=key)["ETag"]
    except FileNotFoundError:
        current = None
    if current != version:
        return None
    unconditional = {k: v for k, v in arguments.items() if k not in ("IfMatch", "IfNoneMatch")}
    return fs.call_s3(method, Bucket=bucket, Key=key, **unconditional)


def write_if_version(fs: Any, path: str, data: bytes, version: str | None) -> str | None:
    """Write ``data`` at ``path`` only if the object is at ``version`` (None: only if there is none). Returns
    the new version, or None when the object was elsewhere (another writer got there first)."""
    condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
    response = _at_version(fs, path, version, ("put_object", {"Body": data, **condition}),
                           lambda: _write_whole(fs, path, data, only_if_absent=version is None))
    return None if response is None else response.get("ETag", _version(data))


def remove_if_version(fs: Any, path: str, version: str) -> bool:
    """Remove ``path`` only if it is at ``version``: True when this call removed it."""
    return _at_version(fs, path, version, ("delete_object", {"IfMatch": version}), lambda: fs.rm(path)) is not None


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
