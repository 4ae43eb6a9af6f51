"""The schema of every run file: one `check` per file, that its writer and every reader pass
(`aloe.core.records`: a writer refuses a record its readers would refuse, a reader names the file
and line of a bad value).

A check is a small factory: `persona_check()` returns a function of one record that says what is
wrong with it in words, or None. A check that must see each line once (ids that may not repeat)
remembers what it saw, so a reader makes a fresh one per file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from aloe.core.config import MAX_TURNS
from aloe.core.errors import shown
from aloe.core.records import Check

# What a usage ledger counts per role (`aloe.llm.ledger`), in its order
USAGE_FIELDS = ("requests", "cache_hits", "retries", "failures", "prompt_tokens",
                "completion_tokens", "cost_usd")


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


# ------------------------------------------------------------------------------------------
# Stage 5's records: one file per model under test
# ------------------------------------------------------------------------------------------
TEXT_FIELDS = ("user", "reply", "raw_judgement", "raw_reply")  # text or None (not recorded)
NUMBER_FIELDS = ("expected_score",)


def record_check(protocol: Any, model: str) -> Check:
    """The schema of a record of `model`'s file, for every reader: that model, a persona, a
    turn from 1, texts that are text, and scores on the protocol's scale or none (a judgement
    that could not be read)."""

    def problem(record: dict[str, Any]) -> str | None:
        if record.get("model") != model:
            return f"model {shown(record.get('model'))} in the file of model '{model}'"
        if not isinstance(record.get("persona_id"), (str, int)) \
                or isinstance(record.get("persona_id"), bool):
            return "no persona_id"
        turn = turn_problem(record.get("turn"))
        if turn is not None:
            return turn
        for name in TEXT_FIELDS:
            if not isinstance(record.get(name), (str, type(None))):
                return f"{name} is {type(record.get(name)).__name__}, not text"
        for name in ("score", *NUMBER_FIELDS):  # a 0/1 protocol's verdicts may be booleans
            off = scale_problem(name, record.get(name), protocol)
            if off is not None:
                return off
        return None

    return problem


# ------------------------------------------------------------------------------------------
# The usage ledger: usage/history.jsonl and the live files of running sessions
# ------------------------------------------------------------------------------------------
def _usage_problem(where: str, usage: Any) -> str | None:
    if not isinstance(usage, dict):
        return f"{where} is {shown(usage)}, not an object"
    for name in USAGE_FIELDS:
        value = usage.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            return f"{where}: {name} {shown(value)} is not a count"
    return None


def usage_entry_check() -> Check:
    """The schema of a ledger entry (a line of usage/history.jsonl, or a live file): the stage,
    when it started, and each role's counts and the totals as non-negative numbers."""

    def problem(entry: dict[str, Any]) -> str | None:
        if not isinstance(entry.get("stage"), str):
            return f"stage {shown(entry.get('stage'))} is not text"
        started = entry.get("started")
        if isinstance(started, bool) or not isinstance(started, (int, float)):
            return f"started {shown(started)} is not a time"
        roles = entry.get("roles")
        if not isinstance(roles, dict):
            return f"roles {shown(roles)} is not an object"
        for role, usage in roles.items():
            found = _usage_problem(f"role {role!r}", usage)
            if found is not None:
                return found
        return _usage_problem("totals", entry.get("totals"))

    return problem
