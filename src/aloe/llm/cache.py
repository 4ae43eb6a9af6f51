"""A persistent, content-addressed response cache (SQLite), shared by every stage and run.

The key is a hash of everything that decides a reply: model, messages, sampling parameters,
the sample index and, for sampled requests (temperature above 0), the run's seed. A rerun or a
resumed run therefore sends no request it already has an answer to, two samples of the same
prompt stay distinct, and two runs with different seeds draw independent samples (a greedy
request, the same whatever the seed, stays shared).

The cache only saves requests: a run's products never depend on it. So a damaged cache file is
reported in one line that names it and says so (`CacheError`), and `check_cache` /
`repair_cache` (`aloe cache check [--repair]`) verify it, move a damaged file aside for a new
one with every answer that could still be read, and compact it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aloe.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    AloeError,
    DiskFullError,
    disk_full_message,
)

SCHEMA = ("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL,"
          " created REAL NOT NULL)")
DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")  # sqlite's names for a file that is not (or no
#                                                longer) a sound database
FULL = ("SQLITE_FULL",)


class CacheError(AloeError):
    """The response cache file is damaged; the message names it and says what to do."""

    exit_code = EXIT_BAD_INPUT


def request_key(model: str, messages: list[dict[str, Any]], sampling: dict[str, Any],
                sample: int, seed: int | None = None) -> str:
    payload: dict[str, Any] = {"model": model, "messages": messages, "sampling": sampling,
                               "sample": sample}
    if seed is not None:
        payload["seed"] = seed
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def answer_problem(answer: Any) -> str | None:
    """What makes a stored answer one the client could not use, or None: the one schema of a
    cached completion, held by `ResponseCache.put` (nothing malformed is cached), `get` (a
    malformed row from an older version is asked again) and `check_cache` (it is reported)."""
    if not isinstance(answer, dict):
        return f"not an object but {type(answer).__name__}"
    if not isinstance(answer.get("text"), str):
        return f"its text is {type(answer.get('text')).__name__}, not a string"
    if not isinstance(answer.get("finish_reason"), (str, type(None))):
        return "its finish_reason is not a string"
    for count in ("prompt_tokens", "completion_tokens"):
        value = answer.get(count)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"its {count} is not a count"
    tokens = answer.get("logprobs")
    if tokens is not None and not (isinstance(tokens, list) and all(
            isinstance(t, dict) and isinstance(t.get("token"), str)
            and _log_probability(t.get("logprob")) and isinstance(t.get("top"), dict)
            and all(_log_probability(v) for v in t["top"].values())
            for t in tokens)):
        return "its logprobs are not a list of tokens with log-probabilities"
    return None


class CacheUnavailable(AloeError):
    """The cache file could not be read or written just now (a full disk, an I/O error, no
    permission): not damage. Nothing was changed; the message says what to do."""

    exit_code = EXIT_FAILED


def _is_damage(error: sqlite3.DatabaseError) -> bool:
    name = getattr(error, "sqlite_errorname", "")
    return name in DAMAGED or "not a database" in str(error) or "malformed" in str(error)


def _log_probability(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and not math.isnan(value) and value <= 0


def damaged_message(path: Path, error: BaseException) -> str:
    return (f"{path}: the response cache is damaged ({error}); the run's products are intact "
            "(the cache only saves requests): move it aside with `aloe cache check --repair "
            "PARAMS` (or mv it away) and run again")


def _translate(path: Path, error: sqlite3.DatabaseError) -> AloeError | None:
    """A damaged file or a full disk as the workbook's one-line errors; None for the rest."""
    name = getattr(error, "sqlite_errorname", "")
    if _is_damage(error):
        return CacheError(damaged_message(path, error))
    if name in FULL or "database or disk is full" in str(error):
        return DiskFullError(disk_full_message(path))
    return None


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
    try:
        _refuse_other_databases(db, path)  # before anything is written to it
    except CacheUnavailable:
        db.close()
        raise
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(SCHEMA)
    return db


class ResponseCache:
    """Thread-safe SQLite key-value store of completed responses (WAL, many processes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise CacheError(f"{self.path}: is a folder, not the response cache file: move it "
                             "away (or set run.output_dir elsewhere) and run again")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with _guarded(self.path):
            self._db = _connect(self.path)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock, _guarded(self.path):
            row = self._db.execute("SELECT response FROM responses WHERE key = ?",
                                   (key,)).fetchone()
        if row is None:
            return None
        try:
            answer = json.loads(row[0])
            problem = answer_problem(answer)
        except ValueError:
            problem = "not valid JSON"
        if problem is None:
            return answer
        # one unusable answer (an older version cached it): asked again (and replaced)
        print(f"warning: {self.path}: the cached answer {key[:12]} is unusable ({problem}); "
              "asking again (`aloe cache check --repair PARAMS` removes such rows)",
              file=sys.stderr)
        return None

    def put(self, key: str, response: dict[str, Any]) -> None:
        problem = answer_problem(response)
        if problem is not None:  # the client validates first: this is a bug, not bad input
            raise ValueError(f"refusing to cache a malformed answer ({problem})")
        blob = json.dumps(response, ensure_ascii=False)
        with self._lock, _guarded(self.path):
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                             (key, blob, time.time()))

    def __len__(self) -> int:
        with self._lock, _guarded(self.path):
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


@contextmanager
def _guarded(path: Path) -> Iterator[None]:
    """sqlite's errors about a damaged file or a full disk, as one-line errors naming it."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        translated = _translate(path, error)
        if translated is None:
            raise
        raise translated from None


# ------------------------------------------------------------------------------------------
# Checking and repairing (`aloe cache check [--repair]`)
# ------------------------------------------------------------------------------------------
@dataclass
class CacheCheck:
    """What `check_cache` found, and what `repair_cache` did."""

    path: Path
    exists: bool = True
    answers: int = 0  # rows whose answer reads as JSON
    bad_rows: list[str] = field(default_factory=list)  # keys whose answer does not
    problem: str | None = None  # the file is not a sound database: why
    size_bytes: int = 0
    actions: list[str] = field(default_factory=list)  # what a repair did

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.bad_rows

    def line(self) -> str:
        """One line for a person: what was found (and done), and what to do next."""
        size = f"{self.size_bytes / 1e6:.1f} MB"
        if not self.exists:
            state = "no cache file yet (nothing to check)"
        elif self.problem:
            state = f"damaged: {self.problem}"
        elif self.bad_rows:
            state = (f"{self.answers} answers, {len(self.bad_rows)} unreadable "
                     f"(e.g. {self.bad_rows[0][:12]})")
        else:
            state = f"sound: {self.answers} answers, {size}"
        done = f"; {'; '.join(self.actions)}" if self.actions else ""
        advice = ("; the run's products are intact: run `aloe cache check --repair` to move it "
                  "aside (answers that can still be read are kept)"
                  if not self.ok and not self.actions else "")
        return f"{self.path}: {state}{done}{advice}"


def check_cache(path: str | Path) -> CacheCheck:
    """Verify a cache file without changing it (opened read-only): sqlite's integrity check,
    then every row against the stored answer's schema. Damage is reported in the result; a file
    that cannot be read just now (full disk, I/O error, no permission) or that is not a response
    cache raises CacheUnavailable, since neither is damage a repair should act on."""
    file = Path(path)
    if file.is_dir():
        raise CacheUnavailable(f"{file}: is a folder, not the response cache file: move it "
                               "away and check again")
    if not file.exists():
        return CacheCheck(file, exists=False)
    result = CacheCheck(file, size_bytes=file.stat().st_size)
    try:
        db = sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=60, isolation_level=None)
        try:
            verdict = [row[0] for row in db.execute("PRAGMA integrity_check")]
            if verdict != ["ok"]:
                result.problem = f"integrity check: {'; '.join(verdict[:3])}"
                return result
            _refuse_other_databases(db, file)
            for key, blob in _rows(db):
                if _readable(blob):
                    result.answers += 1
                else:
                    result.bad_rows.append(key)
        finally:
            db.close()
    except sqlite3.DatabaseError as error:
        if not _is_damage(error):
            raise CacheUnavailable(_unavailable(file, "checked", error)) from None
        result.problem = str(error)
    return result


def _unavailable(file: Path, doing: str, error: BaseException) -> str:
    return (f"{file}: could not be {doing} just now ({error}); nothing was changed and the "
            "cache is not damaged by this: free disk space or fix its permissions, then try "
            "again")


def _refuse_other_databases(db: sqlite3.Connection, file: Path) -> None:
    """An SQLite file with tables but no `responses` table is someone else's database."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables and "responses" not in tables:
        raise CacheUnavailable(f"{file}: is an SQLite database but not a response cache "
                               f"(tables: {', '.join(sorted(tables)[:5])}); left as it is: "
                               "point run.output_dir elsewhere")


def _rows(db: sqlite3.Connection) -> Iterator[tuple[str, str]]:
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "responses" in tables:
        yield from db.execute("SELECT key, response FROM responses")


def _readable(blob: Any) -> bool:
    """A row the client would use: JSON, and an answer of the stored schema."""
    try:
        return answer_problem(json.loads(blob)) is None
    except (TypeError, ValueError):
        return False


def repair_cache(path: str | Path) -> CacheCheck:
    """Make the cache sound again, never losing a sound answer: a damaged file's readable
    answers are first copied into a new file beside it, and only once that is complete is the
    damaged file moved aside and the new one put in its place; unreadable rows are deleted; the
    file is compacted. A full disk or an I/O error at any step leaves the cache as it was and
    says so (CacheUnavailable). Run it while no run uses the cache."""
    found = check_cache(path)
    file = found.path
    if not found.exists:
        return found
    try:
        if found.problem:
            found.actions.append(_replace_damaged(file))
        elif found.bad_rows:
            db = _connect(file)
            try:
                db.executemany("DELETE FROM responses WHERE key = ?",
                               [(k,) for k in found.bad_rows])
            finally:
                db.close()
            found.actions.append(f"deleted {len(found.bad_rows)} unreadable answers")
    except (sqlite3.DatabaseError, OSError) as error:
        raise CacheUnavailable(_unavailable(file, "repaired", error)) from None
    before = file.stat().st_size
    try:
        _compact(file)
        found.actions.append(f"compacted ({before / 1e6:.1f} -> {file.stat().st_size / 1e6:.1f}"
                             " MB)")
    except (sqlite3.DatabaseError, OSError) as error:  # VACUUM leaves the file as it was
        found.actions.append(f"not compacted ({error})")
    checked = check_cache(file)
    found.answers, found.size_bytes = checked.answers, checked.size_bytes
    return found


def _replace_damaged(file: Path) -> str:
    """The readable answers of a damaged cache in a new file, which then takes its place; the
    damaged file (and its WAL) moved aside. The new file is complete before anything moves."""
    fresh = file.with_name(f"{file.name}.repairing")
    _remove_database(fresh)
    try:
        kept = _salvage(file, fresh)
    except BaseException:
        _remove_database(fresh)
        raise
    aside = file.with_name(f"{file.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{file}{suffix}")
        if source.exists():
            os.replace(source, Path(f"{aside}{suffix}"))
    os.replace(fresh, file)
    return (f"moved it to {aside.name} and started a new cache with the {kept} answers that "
            "could still be read")


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _salvage(damaged: Path, target: Path) -> int:
    """Copy every row that still reads (as a sound answer) from a damaged file into a new
    cache; stop at the first page sqlite cannot read. The new file is left whole (WAL folded
    in) or the error raised."""
    new = _connect(target)
    kept = 0
    try:
        old = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True, isolation_level=None)
        try:
            for key, blob in _rows(old):
                if _readable(blob):
                    new.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                                (key, blob, time.time()))
                    kept += 1
        except sqlite3.DatabaseError as error:
            if not _is_damage(error):
                raise
            # the rest of the damaged file cannot be read: what was copied is kept
        finally:
            old.close()
        new.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        new.close()
    return kept


def _compact(file: Path) -> None:
    db = _connect(file)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
    finally:
        db.close()
