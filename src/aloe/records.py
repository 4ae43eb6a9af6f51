"""JSON-lines records: appended atomically as work finishes, read back strictly.

Every stage writes its products through `append_records` and reads them through
`read_records`, so that a crash mid-write (a truncated last line) is detected and repaired,
and a malformed line anywhere else is reported with file and line, never read as data.

A full disk leaves every file as it was before the write (an append is cut back, a rewrite's
temporary sibling removed) and is reported as one line naming the file (`DiskFullError`).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from aloe.errors import EXIT_BAD_INPUT, AloeError, shown, writing


class DataError(AloeError, ValueError):
    """A data file holds a line that is not a JSON record; the message names file and line."""

    exit_code = EXIT_BAD_INPUT


@contextmanager
def _locked(handle: Any) -> Iterator[None]:
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def append_records(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> int:
    """Append records as whole lines, flushed to disk before returning.

    Written under an exclusive lock: concurrent writers never interleave, and a crash leaves at
    most one partial last line, which `read_records` detects; a failed write (a full disk) is
    cut back to where the file ended.
    """
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not lines:
        return 0
    file = Path(path)
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


def append_record(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    append_records(path, [record])


def write_records(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> int:
    """Replace a file's records atomically (write a sibling, then rename over it)."""
    file = Path(path)
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
                 check: Callable[[dict[str, Any]], str | None] | None = None
                 ) -> list[dict[str, Any]]:
    """All records of a JSONL file ([] when it does not exist).

    A last line without its newline that does not parse is what a crash mid-write leaves: with
    `repair` it is cut off (and said so on stderr), else it raises. A bad line anywhere else,
    or a line that is not a JSON object, always raises DataError naming file and line; so does
    a record that `check` (the file's schema: a problem in words, or None) finds wrong.
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
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            if is_last:  # no newline after it: an interrupted append
                if not repair:
                    raise DataError(f"{file}:{number}: truncated last line (interrupted write)") from None
                if not _truncate(file, offset, line, number):  # a writer was mid-append:
                    return read_records(file, repair=repair, check=check)  # whole now
                break
            raise DataError(f"{file}:{number}: not a JSON record ({error})") from None
        if not isinstance(record, dict):
            raise DataError(f"{file}:{number}: expected a JSON object, got {type(record).__name__}")
        problem = check(record) if check is not None else None
        if problem is not None:
            raise DataError(f"{file}:{number}: {problem}; correct or remove the line (a rerun "
                            "redoes what is removed)")
        records.append(record)
        offset += len(line) + 1
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


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write a JSON document atomically (sibling file, then rename)."""
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


def read_json(path: str | os.PathLike[str]) -> Any:
    file = Path(path)
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{file}:{error.lineno}: not valid JSON ({error.msg})") from None


# ------------------------------------------------------------------------------------------
# The schemas of run files that several modules read
# ------------------------------------------------------------------------------------------
def conversation_check() -> Callable[[dict[str, Any]], str | None]:
    """The schema of a conversations.jsonl line: an id not seen on an earlier line, and turns."""
    lines: dict[str, int] = {}

    def problem(record: dict[str, Any]) -> str | None:
        conv_id, turns, index = record.get("id"), record.get("turns"), record.get("index", 0)
        if not isinstance(conv_id, str) or not isinstance(turns, list):
            return "not a conversation tree (no id or no turns)"
        if not all(isinstance(turn, dict) for turn in turns):
            return f"conversation {conv_id}: a turn that is not an object"
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            return f"conversation {conv_id}: index {shown(index)} is not a position"
        if not isinstance(record.get("persona", {}), dict):
            return f"conversation {conv_id}: its persona is not an object"
        if conv_id in lines:
            return (f"conversation {conv_id} is written twice (first on line "
                    f"{lines[conv_id]})")
        lines[conv_id] = len(lines) + 1
        return None

    return problem


def persona_check() -> Callable[[dict[str, Any]], str | None]:
    """The schema of a personas.jsonl or benchmark.jsonl line: an id, and a profile and a
    personality that are text (every role's prompt is rendered from them); ids not repeated."""
    ids: set[str] = set()

    def problem(record: dict[str, Any]) -> str | None:
        persona_id = record.get("id")
        if not isinstance(persona_id, (str, int)) or isinstance(persona_id, bool) \
                or str(persona_id) == "":
            return "persona without an id"
        for field in ("profile", "personality"):
            if not isinstance(record.get(field), str) or not record[field].strip():
                return f"persona {shown(persona_id)} without a {field} (text)"
        if str(persona_id) in ids:
            return f"persona {shown(persona_id)} is listed twice"
        ids.add(str(persona_id))
        return None

    return problem
