"""JSON-lines records: appended atomically as work finishes, read back strictly.

Every stage writes its products through `append_records` and reads them through
`read_records`, so that a crash mid-write (a truncated last line) is detected and repaired,
and a malformed line anywhere else is reported with file and line, never read as data.

A full disk leaves every file as it was before the write (an append is cut back, a rewrite's
temporary sibling removed) and is reported as one line naming the file (`DiskFullError`).

Each run file has one schema (a `check`, at the end of this module and `evaluation.record_check`)
that its writer and every reader pass: a writer refuses to write a record its readers would
refuse (`SchemaError`, nothing written), a reader refuses a bad value naming file and line
(`DataError`).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from aloe.config import MAX_TURNS
from aloe.errors import EXIT_BAD_INPUT, AloeError, shown, writing

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


# ------------------------------------------------------------------------------------------
# The pieces the schemas are made of
# ------------------------------------------------------------------------------------------
def _is_count(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _is_id(value: Any) -> bool:
    return (isinstance(value, str) and value != "") or _is_count(value)


def _once(describe: Callable[[Any], str]) -> Callable[[Any], str | None]:
    """A memory of the keys of the lines seen so far: a key seen before is a problem that
    names the line it was first on."""
    lines: dict[Any, int] = {}

    def seen(key: Any) -> str | None:
        if key in lines:
            return f"{describe(key)} is written twice (first on line {lines[key]})"
        lines[key] = len(lines) + 1
        return None

    return seen


def turn_problem(turn: Any) -> str | None:
    """A turn is 1 to `config.MAX_TURNS` (a larger one no run can have, and a reader would
    build a table that wide)."""
    if not _is_count(turn, 1) or turn > MAX_TURNS:
        return f"turn {shown(turn)} is not a turn number (1-{MAX_TURNS})"
    return None


def scale_problem(name: str, value: Any, protocol: Any) -> str | None:
    """A judgement on `protocol`'s scale (`.name`, `.scale`), or none (unreadable); a 0/1
    protocol's verdicts may be booleans."""
    low, high = protocol.scale
    if value is None or (isinstance(value, bool) and (low, high) == (0, 1)):
        return None
    if not _is_number(value) or not low <= value <= high:
        return f"{name} {shown(value)} is not on the {protocol.name} protocol's {low}-{high} scale"
    return None


def _texts(record: dict[str, Any], *names: str) -> str | None:
    """Fields that are text when present (None: not recorded)."""
    for name in names:
        if not isinstance(record.get(name), (str, type(None))):
            return f"{name} is {type(record.get(name)).__name__}, not text"
    return None


def _flags(record: dict[str, Any], *names: str) -> str | None:
    """Fields that are true or false when present."""
    for name in names:
        if name in record and not isinstance(record[name], bool):
            return f"{name} {shown(record[name])} is not true or false"
    return None


def _counts(record: dict[str, Any], *names: str, required: bool = False) -> str | None:
    """Fields that are whole numbers from 0 (when present, or always with `required`)."""
    for name in names:
        if (required or name in record) and not _is_count(record.get(name)):
            return f"{name} {shown(record.get(name))} is not a count"
    return None


def _share(record: dict[str, Any], name: str, low: float = 0.0,
           required: bool = False) -> str | None:
    """A field that is a share from `low` to 1 (a similarity from -1), or none (unmeasured)
    unless `required`."""
    value = record.get(name)
    if (value is not None or required) and (not _is_number(value) or not low <= value <= 1):
        return (f"{name} {shown(value)} is not a number from {low:g} to 1"
                + ("" if required else " (or none)"))
    return None


def _ids(record: dict[str, Any], *names: str, required: tuple[str, ...] = ()) -> str | None:
    """Fields that are ids (non-empty text or a count) when present, or always if required."""
    for name in names:
        value = record.get(name)
        if (value is not None or name in required) and not _is_id(value):
            return f"{name} {shown(value)} is not an id"
    return None


def _of_model(record: dict[str, Any], model: str) -> str | None:
    """A side record of stage 5 (`MODEL.jsonl` of probes/ or simulator/): the file's model,
    a persona, a turn."""
    if record.get("model") != model:
        return f"model {shown(record.get('model'))} in the file of model '{model}'"
    return (_ids(record, "persona_id", "profile_id", required=("persona_id",))
            or turn_problem(record.get("turn")))


# ------------------------------------------------------------------------------------------
# Stage 5's side records: the inference probes, the simulated user measured, the second judge
# ------------------------------------------------------------------------------------------
def probe_check(model: str) -> Check:
    """The schema of an `eval/[VARIANT/]probes/MODEL.jsonl` line: that model, a persona and a
    turn (each pair once: a repeated one would count twice in the inference curve), what the
    model said it learned (text) and the judge's accuracy, a share 0-1 (none: unreadable)."""
    once = _once(lambda key: f"the probe of persona {key[0]!r} at turn {key[1]}")

    def problem(record: dict[str, Any]) -> str | None:
        return (_of_model(record, model) or _texts(record, "statement", "raw_judgement")
                or _flags(record, "truncated", "shifted") or _share(record, "accuracy")
                or _counts(record, "judge_attempts")
                or once((str(record["persona_id"]), record["turn"])))

    return problem


def simulator_measure_check(model: str) -> Check:
    """The schema of an `eval/[VARIANT/]simulator/MODEL.jsonl` line: that model, a persona and
    a turn (each pair once), how much of the persona the user's messages gave away (a share
    0-1) and whether the latest contradicts it (true or false), each none when unreadable."""
    once = _once(lambda key: f"the check of persona {key[0]!r} at turn {key[1]}")

    def problem(record: dict[str, Any]) -> str | None:
        contradiction = record.get("contradiction")
        if contradiction is not None and not isinstance(contradiction, bool):
            return f"contradiction {shown(contradiction)} is not true or false (or none)"
        return (_of_model(record, model) or _texts(record, "revealed_raw", "contradiction_raw")
                or _flags(record, "shifted") or _share(record, "revealed")
                or once((str(record["persona_id"]), record["turn"])))

    return problem


def second_judge_check(protocol: Any) -> Check:
    """The schema of an `eval/[VARIANT/]judge_check.jsonl` line: a model, persona and turn
    (each reply judged once), the main judge's and the second judge's scores on `protocol`'s
    scale (none: unreadable), the second judge's answer (text)."""
    once = _once(lambda key: f"the second judgement of model {key[0]!r}, persona {key[1]!r}, "
                             f"turn {key[2]}")

    def problem(record: dict[str, Any]) -> str | None:
        if not isinstance(record.get("model"), str) or not record["model"]:
            return f"model {shown(record.get('model'))} is not a model's name"
        return (_ids(record, "persona_id", "profile_id", required=("persona_id",))
                or turn_problem(record.get("turn"))
                or scale_problem("main_score", record.get("main_score"), protocol)
                or scale_problem("second_score", record.get("second_score"), protocol)
                or _texts(record, "second_raw") or _counts(record, "second_attempts")
                or once((record["model"], str(record["persona_id"]), record["turn"])))

    return problem


# ------------------------------------------------------------------------------------------
# The human-rating kit: its key (JSON) and the imported ratings (JSONL)
# ------------------------------------------------------------------------------------------
def _category_problem(name: str, value: Any, categories: list[int]) -> str | None:
    """One of the protocol's categories (a 0/1 protocol's judge may have said true/false;
    a person's rating is always a number: see `human_rating_check`)."""
    if value is None:
        return None
    fits = categories == [0, 1] if isinstance(value, bool) else \
        _is_number(value) and value in categories
    return None if fits else (f"{name} {shown(value)} is not one of the kit's categories "
                              f"{categories}")


def human_rating_check(categories: list[int]) -> Check:
    """The schema of a `ratings/VARIANT-human.jsonl` line (`aloe ratings import`): a kit, a
    rater and an item (each rater rates an item once), the rating, one of the protocol's
    `categories` (a number, never `true`), and from the key the model, persona, turn and the
    judge's score."""
    categories = list(categories)
    once = _once(lambda key: f"the rating of item {key[1]!r} by {key[0]!r}")

    def problem(record: dict[str, Any]) -> str | None:
        for name in ("kit", "rater", "item"):
            if not isinstance(record.get(name), str) or not record[name].strip():
                return f"{name} {shown(record.get(name))} is not text"
        rating = record.get("rating")
        if isinstance(rating, bool) or rating is None:
            return f"rating {shown(rating)} is not one of the kit's categories {categories}"
        if not isinstance(record.get("model"), str):
            return f"model {shown(record.get('model'))} is not a model's name"
        return (_category_problem("rating", rating, categories)
                or _category_problem("judge_score", record.get("judge_score"), categories)
                or _ids(record, "persona_id", "profile_id", required=("persona_id",))
                or turn_problem(record.get("turn"))
                or once((record["rater"], record["item"])))

    return problem


def rating_key_check(categories: list[int]) -> Callable[[Any], str | None]:
    """The schema of a `ratings/VARIANT-key.json`: the kit's id, the protocol's `categories`,
    and per item the model, persona, turn and the judge's score it stands for."""
    categories = list(categories)

    def problem(key: Any) -> str | None:
        if not isinstance(key, dict):
            return f"a rating kit's key is an object, not {type(key).__name__}"
        if not isinstance(key.get("kit"), str) or not key["kit"]:
            return f"kit {shown(key.get('kit'))} is not a kit's id"
        if key.get("categories") != categories:
            return (f"categories {shown(key.get('categories'))} are not the protocol's "
                    f"{categories}")
        items = key.get("items")
        if not isinstance(items, dict):
            return f"items {shown(items)} is not the mapping of item to reply"
        for item, where in items.items():
            if not isinstance(where, dict):
                return f"item {item[:40]!r} is {type(where).__name__}, not an object"
            if not isinstance(where.get("model"), str):
                return f"item {item[:40]!r}: model {shown(where.get('model'))} is not a name"
            found = (_ids(where, "persona_id", "profile_id", required=("persona_id",))
                     or turn_problem(where.get("turn"))
                     or _category_problem("judge_score", where.get("judge_score"), categories))
            if found:
                return f"item {item[:40]!r}: {found}"
        return None

    return problem


# ------------------------------------------------------------------------------------------
# Stage 1: the pools, the rounds that grew them, every candidate screened, the leakage check
# ------------------------------------------------------------------------------------------
def pool_item_check() -> Check:
    """The schema of a pool file's line (profiles.jsonl, personalities.jsonl and the
    benchmark's): an id (not repeated), its text, where it came from, and for a benchmark item
    its highest similarity to the training pool (-1 to 1) and to which item."""
    once = _once(lambda key: f"pool item {key!r}")

    def problem(record: dict[str, Any]) -> str | None:
        item = record.get("id")
        if not isinstance(item, str) or not item:
            return f"pool item without an id (text): id {shown(item)}"
        if not isinstance(record.get("text"), str) or not record["text"].strip():
            return f"pool item {item!r} without a text"
        if not isinstance(record.get("source"), str):
            return f"pool item {item!r}: source {shown(record.get('source'))} is not text"
        return (_share(record, "train_similarity", low=-1.0)
                or _ids(record, "nearest_train_id") or once(item))

    return problem


ROUND_COUNTS = ("calls", "unusable", "candidates", "admitted", "pool_size")


def round_check() -> Check:
    """The schema of a persona_rounds.jsonl line: a pool and its round (each logged once), its
    counts (calls, unusable replies, candidates, admitted: no more than the candidates, the
    pool's size after it) and its admission rate (0-1)."""
    once = _once(lambda key: f"round {key[1]} of pool {key[0]!r}")

    def problem(record: dict[str, Any]) -> str | None:
        if not isinstance(record.get("pool"), str) or not record["pool"]:
            return f"pool {shown(record.get('pool'))} is not a pool's name"
        found = (_counts(record, "round", *ROUND_COUNTS, required=True)
                 or _counts(record, "dropped_fragments", "rejected", "surplus")
                 or _share(record, "admission_rate"))
        if found:
            return f"round {shown(record.get('round'))} of pool {record['pool']!r}: {found}"
        if record["admitted"] > record["candidates"]:
            return (f"round {record['round']} of pool {record['pool']!r}: admitted "
                    f"{record['admitted']} of {record['candidates']} candidates")
        for name in ("samples", "unusable_replies", "dropped"):
            if name in record and not isinstance(record[name], list):
                return (f"round {record['round']} of pool {record['pool']!r}: {name} is "
                        f"{type(record[name]).__name__}, not a list")
        return once((record["pool"], record["round"]))

    return problem


CANDIDATE_STATUSES = ("admitted", "rejected", "surplus")


def candidate_check() -> Check:
    """The schema of a persona_candidates.jsonl line: a pool, round and call, the text, its
    highest similarity to the pool (-1 to 1, none for the first), the nearest item, the
    screen's verdict, and the id it was admitted as."""

    def problem(record: dict[str, Any]) -> str | None:
        if not isinstance(record.get("pool"), str) or not record["pool"]:
            return f"pool {shown(record.get('pool'))} is not a pool's name"
        if record.get("status") not in CANDIDATE_STATUSES:
            return (f"status {shown(record.get('status'))} is not one of "
                    f"{', '.join(CANDIDATE_STATUSES)}")
        return (_counts(record, "round", "call", required=True) or _texts(record, "text")
                or _share(record, "max_similarity", low=-1.0)
                or _ids(record, "nearest_id", "id"))

    return problem


def leakage_check() -> Check:
    """The schema of a persona_leakage.jsonl line: a benchmark persona (once), its nearest
    training persona and their similarity (-1 to 1)."""
    once = _once(lambda key: f"benchmark persona {key!r}")

    def problem(record: dict[str, Any]) -> str | None:
        return (_ids(record, "benchmark_id", "nearest_train_id",
                     required=("benchmark_id", "nearest_train_id"))
                or _share(record, "similarity", low=-1.0, required=True)
                or once(str(record["benchmark_id"])))

    return problem
