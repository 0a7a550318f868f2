"""The Ray batch job: Parquet corpora in, compressed Parquet out, every row accounted for.

``run_job(JobConfig)`` is the whole job (``job``: plan → execute → commit); ``plan`` lists inputs and cuts
units of work from Parquet footers; ``stages`` holds the worker steps (prepare and commit tasks, the scoring
replica); ``output`` the commit protocol and manifest; ``lease`` the one-writer-per-prefix lease. The compression core (``lingua2_batch.compressor`` and ``core``) knows nothing of Ray.
"""

from .config import JobConfig, JobConfigError
from .errors import InputError, JobError, LeaseHeldError
from .job import JobReport, run_job

__all__ = ["JobConfig", "JobConfigError", "InputError", "JobError", "LeaseHeldError", "JobReport", "run_job"]
