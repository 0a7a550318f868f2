"""The Ray batch job: Parquet corpora in, compressed Parquet out, every row accounted for.

``run_job(JobConfig)`` is the whole job (``job``: plan → execute → commit); ``plan`` lists inputs and cuts
units of work from Parquet footers; ``stages`` holds the worker steps (prepare and commit tasks, the scoring
replica); ``output`` the commit protocol and manifest; ``lease`` the one-writer-per-prefix lease. The
compression core (``lingua2_batch.compressor`` and ``core``) knows nothing of Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import JobConfig, JobConfigError

__all__ = ["JobConfig", "JobConfigError", "InputError", "JobError", "LeaseHeldError", "JobReport", "run_job"]

if TYPE_CHECKING:
    from .errors import InputError, JobError, LeaseHeldError
    from .job import JobReport, run_job

_FROM_ERRORS = {"InputError", "JobError", "LeaseHeldError"}
_FROM_JOB = {"JobReport", "run_job"}


def __getattr__(name: str) -> Any:
    # the job module imports pyarrow, torch and Ray: only when the job is run, not for `--help`
    if name in _FROM_ERRORS:
        from . import errors

        return getattr(errors, name)
    if name in _FROM_JOB:
        from . import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
