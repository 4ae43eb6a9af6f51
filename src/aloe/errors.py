"""One family of errors, so that the command line can map any of them to an exit code by type.

Every error the workbook raises on purpose derives from `AloeError` and carries the exit code a
person's shell should see: 2 for input that was refused (a bad parameter file, a run folder
another run holds), 1 for work that failed (a stage, a request that kept failing). Messages are
one line: what, where, and what to do.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class AloeError(Exception):
    """Base of the workbook's own errors; `exit_code` is what `aloe` exits with."""

    exit_code: int = EXIT_FAILED


class BadInputError(AloeError):
    """Input refused before any work: the message names the file or option and the key."""

    exit_code = EXIT_BAD_INPUT


class RunLockedError(BadInputError):
    """Another process holds the run folder."""
