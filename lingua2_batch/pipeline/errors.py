"""The job's failure kinds, by what an operator does next: ``InputError`` (fix the input or the
configuration; nothing was written; exit 2), ``JobError`` (rerun the same command; what was committed
stays committed; exit 1)."""

from __future__ import annotations


class JobError(RuntimeError):
    """The job cannot run or did not complete; nothing of the current file set is left half-written."""


class InputError(JobError):
    """The input or the configuration is unusable as a whole (reported before any output is committed)."""


class LeaseHeldError(InputError):
    """Another run holds the output prefix's lease."""


class AccountingError(JobError):
    """Rows were lost or duplicated between read and write."""
