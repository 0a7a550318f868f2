"""Stopping a run from outside. Ctrl-C (SIGINT) and SIGTERM (``kill``, ``ray job stop``, Kubernetes) both end
the job as *interrupted*: the job records status ``interrupted`` in ``_summary.json``, clears its staging and
releases the output's lease; the command exits 130 (SIGINT) or 143 (SIGTERM), as a shell reports a process
killed by that signal. Committed units are kept: rerunning the same command resumes."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

RESUME_HINT = "committed units are kept; rerun the same command to resume"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt so that one path handles both
    (inside a Ray call it arrives as a plain KeyboardInterrupt: see ``interrupt_signal``)."""

    def __str__(self) -> str:
        return "SIGTERM"


# Ray's blocking calls (ray.get, ray.wait) run signal handlers themselves and turn whatever a handler raises
# into a plain KeyboardInterrupt: which signal it was is remembered here, not only in the exception's type.
_sigterm_received = threading.Event()


def _raise_terminated(signum: int, frame: object) -> None:
    _sigterm_received.set()
    # a second SIGTERM while the job cleans up is ignored: the cleanup is what the first one asked for
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _terminated(interrupt: KeyboardInterrupt) -> bool:
    return isinstance(interrupt, Terminated) or _sigterm_received.is_set()


def interrupt_signal(interrupt: KeyboardInterrupt) -> str:
    return "SIGTERM" if _terminated(interrupt) else "SIGINT"


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal's number: what a shell reports for a process that the signal ended."""
    return 128 + (signal.SIGTERM if _terminated(interrupt) else signal.SIGINT)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside: SIGTERM raises ``Terminated`` in the main thread (outside the main thread, Python cannot
    install handlers and nothing changes). The previous handler is restored on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _sigterm_received.clear()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def keeping_sigterm_handler() -> Iterator[None]:
    """``ray.init`` replaces the SIGTERM handler with ``sys.exit(SIGTERM)``; put back the one that was there.
    A SIGTERM that arrives while Ray starts (and exits through Ray's handler) becomes ``Terminated`` when ours
    was installed, so the run ends as interrupted, with its message and exit code, not a silent exit 15."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    except SystemExit as error:
        if previous is _raise_terminated and error.code == signal.SIGTERM:
            _sigterm_received.set()
            raise Terminated() from None
        raise
    finally:
        if previous not in (None, signal.SIG_DFL):  # a handler someone installed on purpose
            signal.signal(signal.SIGTERM, previous)
