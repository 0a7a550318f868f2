"""The Ray batch job: Parquet corpora in, compressed Parquet out, every row accounted for.

``run_job(JobConfig)`` is the whole job; ``stages`` holds the Ray Data UDFs (prepare on CPU tasks,
score on an actor pool holding the model), ``output`` the per-input-file staged writer, manifest and
commit marker. The compression core (``lingua2_batch.compressor`` and ``core``) knows nothing of Ray.
"""

from .config import JobConfig, JobConfigError
from .job import InputError, JobError, JobReport, run_job

__all__ = ["JobConfig", "JobConfigError", "InputError", "JobError", "JobReport", "run_job"]
