"""Exit codes of every command (``lingua2-batch`` and the ``jobs/`` entry points): 0 success; 1 the job failed
or rows are unaccounted for; 2 invalid configuration or input."""

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
