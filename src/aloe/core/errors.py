"""One family of errors, so that the command line can map any of them to an exit code by type.

Every error the workbook raises on purpose derives from `AloeError` and carries the exit code a
person's shell should see: 2 for input that was refused (a bad parameter file, a run folder
another run holds), 1 for work that failed (a stage, a request that kept failing, a stage that
could not finish some of its items, a full disk). Messages are one line: what, where, and what
to do.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class AloeError(Exception):
    """Base of the workbook's own errors; `exit_code` is what `aloe` exits with."""

    exit_code: int = EXIT_FAILED


class BadInputError(AloeError):
    """Input refused before any work: the message names the file or option and the key."""

    exit_code = EXIT_BAD_INPUT


class ParamsError(BadInputError, ValueError):
    """A parameter file is missing or invalid; the message is one line naming file and key."""


class RunLockedError(BadInputError):
    """Another process holds the run folder."""


class IncompleteStageError(AloeError):
    """A stage could not finish some of its items (requests that failed for good); what it
    finished is kept, and a rerun retries only the rest."""


def check_lost_items(what: str, lost: Sequence[tuple[str, str]], total: int,
                     allowed_share: float = 0.0, setting: str | None = None) -> None:
    """Raise IncompleteStageError when more than `allowed_share` of `total` items were lost.

    `lost` holds (item, reason) pairs; the message gives their count, the first reason (a
    failed request's names its role, model, URL and error) and what a rerun does, in one line.
    `setting` names the parameter that tolerates a share (Inspect's `fail_on_error`)."""
    if not lost or (total and len(lost) / total <= allowed_share):
        return
    item, reason = lost[0]
    tolerated = f" (more than {setting}: {allowed_share:g})" if setting else ""
    raise IncompleteStageError(
        f"{len(lost)} of {total} {what} could not finish{tolerated}; first: {item}: "
        f"{_one_line(reason)}; what finished is kept: a rerun retries only those {len(lost)}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class DiskFullError(AloeError):
    """The disk filled up while a file was written; the file was left as it was before."""


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, is a full disk (or quota)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError) or (isinstance(error, OSError)
                                                and error.errno in (errno.ENOSPC, errno.EDQUOT)):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_message(file: str | Path) -> str:
    return (f"no space left on device while writing {file}; free some space and run again "
            "(finished work is kept)")


@contextmanager
def writing(file: str | Path) -> Iterator[None]:
    """Turn a full disk while writing `file` into one line naming the file (DiskFullError)."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(disk_full_message(file)) from None
        raise


def did_you_mean(given: str, known: Iterable[str], prefix: str = "") -> str:
    """"; did you mean run.name?" when one of `known` is close to `given` (difflib's ratio of
    0.6 or more; the closest), else "": a typed key or command that is nearly right."""
    import difflib

    close = difflib.get_close_matches(given, list(known), n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def shown(value: object, limit: int = 60) -> str:
    """A value as an error message quotes it: its repr, cut to `limit` characters with its
    length said, so that a pasted 5,000-character value still leaves a one-line message."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit - 15]}... ({len(str(value)):,} characters)"
