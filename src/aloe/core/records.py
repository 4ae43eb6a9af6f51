"""JSON-lines records: appended atomically as work finishes, read back strictly.

Every stage writes its products through `append_records` and reads them through
`read_records`, so that a crash mid-write (a truncated last line) is detected and repaired,
and a malformed line anywhere else is reported with file and line, never read as data.

A full disk leaves every file as it was before the write (an append is cut back, a rewrite's
temporary sibling removed) and is reported as one line naming the file (`DiskFullError`).

Each run file has one schema (a `check`, in `aloe.core.schemas`) that its writer and every reader
pass: a writer refuses to write a record its readers would refuse (`SchemaError`, nothing
written), a reader refuses a bad value naming file and line (`DataError`).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from aloe.core.errors import EXIT_BAD_INPUT, AloeError, writing

Check = Callable[[dict[str, Any]], "str | None"]  # a record's problem in words, or None


class DataError(AloeError, ValueError):
    """A data file holds a line that is not a JSON record; the message names file and line."""

    exit_code = EXIT_BAD_INPUT


class SchemaError(AloeError):
    """A stage was about to write a record that its file's schema refuses (a value no reader
    would accept): nothing of that write is written; the message names the file and what is
    wrong."""


def _refuse_bad(file: Path, records: list[dict[str, Any]], check: Check | None) -> None:
    """The writer's side of a schema: SchemaError before anything is written."""
    for record in records if check is not None else []:
        problem = check(record)
        if problem is not None:
            raise SchemaError(f"{file}: refusing to write a record that breaks its schema "
                              f"({problem}); nothing was written")


@contextmanager
def _locked(handle: Any) -> Iterator[None]:
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def append_records(path: str | os.PathLike[str], records: Iterable[dict[str, Any]], *,
                   check: Check | None = None) -> int:
    """Append records as whole lines, flushed to disk before returning.

    Written under an exclusive lock: concurrent writers never interleave, and a crash leaves at
    most one partial last line, which `read_records` detects; a failed write (a full disk) is
    cut back to where the file ended. A record that `check` (the file's schema) refuses stops
    the write before anything is written (SchemaError).
    """
    file = Path(path)
    records = list(records)
    _refuse_bad(file, records, check)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not lines:
        return 0
    with writing(file):
        file.parent.mkdir(parents=True, exist_ok=True)
        with open(file, "ab", buffering=0) as handle, _locked(handle):
            fd = handle.fileno()
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                data = memoryview(lines.encode("utf-8"))
                while data:  # unbuffered: a failed write leaves nothing queued to flush
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            except OSError:  # e.g. a full disk: no partial line is left behind
                os.ftruncate(fd, end)
                raise
    return lines.count("\n")


def append_record(path: str | os.PathLike[str], record: dict[str, Any], *,
                  check: Check | None = None) -> None:
    append_records(path, [record], check=check)


def write_records(path: str | os.PathLike[str], records: Iterable[dict[str, Any]], *,
                  check: Check | None = None) -> int:
    """Replace a file's records atomically (write a sibling, then rename over it); a record
    that `check` refuses leaves the file as it was (SchemaError)."""
    file = Path(path)
    if check is not None:
        records = list(records)
        _refuse_bad(file, records, check)
    count = 0

    def write(handle: IO[str]) -> None:
        nonlocal count
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1

    replace_file(file, write)
    return count


def replace_file(path: str | os.PathLike[str], write: Callable[[IO[str]], object], *,
                 sync: bool = True) -> None:
    """Write a file whole or not at all: `write(handle)` fills a sibling temporary file, which
    then replaces `path`. On any failure (a full disk included) the sibling is removed and
    `path` keeps its old content."""
    file = Path(path)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    with writing(file):
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                write(handle)
                handle.flush()
                if sync:
                    os.fsync(handle.fileno())
            os.replace(tmp, file)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def read_records(path: str | os.PathLike[str], *, repair: bool = True,
                 check: Check | None = None) -> list[dict[str, Any]]:
    """All records of a JSONL file ([] when it does not exist).

    A last line without its newline that does not parse is what a crash mid-write leaves: with
    `repair` it is cut off (and said so on stderr), else it raises. A bad line anywhere else,
    or a line that is not a JSON object, always raises DataError naming file and line; so does
    a record that `check` (the file's schema: a problem in words, or None) finds wrong. Every
    line is read before `check` sees any, so that a schema that remembers what it saw (ids
    that must be unique) sees each line once.
    """
    file = Path(path)
    if not file.exists():
        return []
    raw = file.read_bytes()
    records: list[dict[str, Any]] = []
    offset = 0
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines)
        if is_last and not line:
            break
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            if is_last and not isinstance(error, RecursionError):  # an interrupted append
                if not repair:
                    raise DataError(f"{file}:{number}: truncated last line "
                                    "(interrupted write)") from None
                if not _truncate(file, offset, line, number):  # a writer was mid-append:
                    return read_records(file, repair=repair, check=check)  # whole now
                break
            why = "nested too deeply" if isinstance(error, RecursionError) else error
            raise DataError(f"{file}:{number}: not a JSON record ({why})") from None
        if not isinstance(record, dict):
            raise DataError(f"{file}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
        offset += len(line) + 1
    for number, record in enumerate(records, start=1):
        problem = check(record) if check is not None else None
        if problem is not None:
            raise DataError(f"{file}:{number}: {problem}; correct or remove the line (a rerun "
                            "redoes what is removed)")
    return records


def _truncate(file: Path, offset: int, tail: bytes, number: int) -> bool:
    """Cut the file at `offset` if it still ends in `tail`, under the writers' lock; False when
    the tail changed meanwhile (it was a live append seen half-way, not a crash's leftover)."""
    import sys

    with open(file, "r+b") as handle, _locked(handle):
        handle.seek(offset)
        if handle.read() != tail:
            return False
        handle.truncate(offset)
    print(f"repaired {file}: dropped the truncated line {number} left by an interrupted write",
          file=sys.stderr)
    return True


def write_json(path: str | os.PathLike[str], data: Any, *,
               check: Callable[[Any], str | None] | None = None) -> None:
    """Write a JSON document atomically (sibling file, then rename); a document that `check`
    (its schema) refuses is not written (SchemaError)."""
    problem = check(data) if check is not None else None
    if problem is not None:
        raise SchemaError(f"{path}: refusing to write a document that breaks its schema "
                          f"({problem}); nothing was written")
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    replace_file(path, lambda handle: handle.write(text), sync=False)


def follow_umask(folder: str | os.PathLike[str]) -> None:
    """Give every file in `folder` the mode a new file gets here (0666 less the umask).
    safetensors writes its files 0600, so an adapter or model folder copied to a shared place
    held one file its readers could not open."""
    mask = os.umask(0)
    os.umask(mask)
    for file in Path(folder).rglob("*"):
        if file.is_file():
            file.chmod(0o666 & ~mask)


def read_json(path: str | os.PathLike[str], *,
              check: Callable[[Any], str | None] | None = None) -> Any:
    """A JSON document; DataError naming the file when it is not JSON, or when `check` (its
    schema) finds it wrong."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{file}:{error.lineno}: not valid JSON ({error.msg})") from None
    except (UnicodeDecodeError, RecursionError) as error:
        why = "nested too deeply" if isinstance(error, RecursionError) else error
        raise DataError(f"{file}: not valid JSON ({why})") from None
    problem = check(data) if check is not None else None
    if problem is not None:
        raise DataError(f"{file}: {problem}; correct the file or write it again")
    return data
