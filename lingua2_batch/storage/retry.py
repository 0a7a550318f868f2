"""Retrying storage calls made by the driver (staged writes, commits, manifests) while an object store
is briefly unreachable. Missing files and permission errors are not retried: they will not heal."""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
# botocore errors about the request or the client's own set-up (a malformed bucket name, no credentials, no
# region, an unknown profile): final, however long one waits
_PERMANENT_BOTOCORE = {"ParamValidationError", "NoCredentialsError", "PartialCredentialsError", "NoRegionError",
                       "ProfileNotFound", "InvalidConfigError", "UnknownCredentialError"}


def _transient(error: BaseException) -> bool:
    if isinstance(error, _PERMANENT):
        return False
    if isinstance(error, (OSError, ConnectionError, TimeoutError)):
        return True
    name = type(error).__name__
    module = type(error).__module__ or ""
    if module.startswith("botocore") and name in _PERMANENT_BOTOCORE:
        return False
    return module.startswith(("botocore", "aiobotocore", "aiohttp", "urllib3")) or "Timeout" in name


def with_retries(call: Callable[[], T], what: str, deadline_s: float = 120.0, first_wait_s: float = 0.5) -> T:
    """``call()``; on a transient error, wait (0.5 s doubling to 8 s) and try again until ``deadline_s``."""
    started = time.monotonic()
    wait = first_wait_s
    attempt = 1
    while True:
        try:
            return call()
        except Exception as error:  # noqa: BLE001
            if not _transient(error) or time.monotonic() - started + wait > deadline_s:
                raise
            log.warning("%s failed (attempt %d, %s); retrying in %.1f s", what, attempt, type(error).__name__, wait)
            time.sleep(wait)
            wait = min(wait * 2, 8.0)
            attempt += 1
