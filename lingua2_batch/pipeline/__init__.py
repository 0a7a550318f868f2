"""The Ray batch job: Parquet corpora in, compressed Parquet out, every row accounted for.

``run_job(JobConfig)`` is the whole job; ``stages`` holds the Ray Data UDFs (prepare on CPU tasks,
score on an actor pool holding the model), ``output`` the per-input-file staged writer, manifest and
commit marker. The compression core (``lingua2_batch.compressor`` and ``core``) knows nothing of Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import JobConfig, JobConfigError

__all__ = ["JobConfig", "JobConfigError", "InputError", "JobError", "JobReport", "run_job"]

if TYPE_CHECKING:
    from .job import InputError, JobError, JobReport, run_job

_FROM_JOB = {"InputError", "JobError", "JobReport", "run_job"}


def __getattr__(name: str) -> Any:
    # the job module imports pyarrow, torch and Ray: only when the job is run, not for `--help`
    if name in _FROM_JOB:
        from . import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
