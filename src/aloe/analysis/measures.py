"""Stage 5's measures beyond the paper's AL(k): any per-turn measure with its interval
(inference accuracy, the simulated user's disclosure and contradictions), recovery after a
preference shift, and the simulated user measured without a judge (word overlap with its
persona).

Pure functions of records, on `aloe.analysis.metrics`' score matrix and bootstrap: the same units
are resampled as for AL(k), so every interval here speaks for the same users.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from aloe.analysis.metrics import (
    DEFAULT_BOOT,
    DEFAULT_CONFIDENCE,
    Estimate,
    Record,
    ScoreMatrix,
    boot_means,
    default_unit,
    finite_or_none,
    nanmean_columns,
    percentile_interval,
    score_matrix,
)


# ------------------------------------------------------------------------------------------
# Any per-turn measure with intervals (inference accuracy, disclosure, contradictions)
# ------------------------------------------------------------------------------------------
def value_matrix(records: Iterable[Record], key: str) -> ScoreMatrix:
    """Records of one model holding a number under `key` (or None), as a persona x turn
    matrix (the same arrangement as `score_matrix`)."""
    rows = [{**r, "score": r.get(key)} for r in records]
    for r in rows:
        if isinstance(r["score"], bool):
            r["score"] = float(r["score"])
    return score_matrix(rows)


def turn_curve(records: Iterable[Record], key: str, n_boot: int = DEFAULT_BOOT,
               confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
               unit: str | None = None) -> dict[str, Any]:
    """The mean of `key` at each turn over the personas, with bootstrap CIs (the same units
    and draws as AL(k)), and its mean over the turns with its CI.

    m(k) = (1 / |P_k|) sum_{p in P_k} v[p, k], P_k = the personas with a value at turn k;
    mean = (1/K) sum_k m(k). A True/False value counts as 1/0, so a share comes out. A record
    whose value is None (a judge that answered nothing readable) is left out and counted in
    `n_missing`, never taken as 0.
    """
    rows = list(records)
    unit = unit or default_unit(rows)
    matrix = value_matrix(rows, key)
    curve = nanmean_columns(matrix.scores)
    n = (~np.isnan(matrix.scores)).sum(axis=0) if matrix.personas else np.zeros(0, int)
    missing = (matrix.judged & np.isnan(matrix.scores)).sum(axis=0) if matrix.personas \
        else np.zeros(0, int)
    result: dict[str, Any] = {"turns": matrix.turns, "value": [finite_or_none(v) for v in curve],
                              "low": [None] * len(curve), "high": [None] * len(curve),
                              "n": [int(v) for v in n], "n_missing": [int(v) for v in missing],
                              "unit": unit,
                              "n_units": min(matrix.unit_sizes(unit).values(), default=0),
                              "mean": Estimate(math.nan, math.nan, math.nan).to_json()}
    if not matrix.personas or not np.any(~np.isnan(curve)):
        return result
    boot = boot_means(matrix.scores, matrix.draws(unit, n_boot, seed))
    low, high = percentile_interval(boot, confidence)
    result["low"] = [finite_or_none(v) for v in low]
    result["high"] = [finite_or_none(v) for v in high]
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            boot_mean = np.nanmean(boot, axis=1)
    m_low, m_high = percentile_interval(boot_mean[:, None], confidence)
    result["mean"] = Estimate(float(np.nanmean(curve)), float(m_low[0]),
                              float(m_high[0])).to_json()
    return result


# ------------------------------------------------------------------------------------------
# Recovery after a preference shift
# ------------------------------------------------------------------------------------------
def recovery_turns(al: Sequence[float], shift_turn: int) -> tuple[float, float]:
    """(turns to recover, drop) of an AL curve whose persona changed at turn K = shift_turn.

    The pre-shift level is AL(K-1), the level just before the change. The curve has recovered
    at the first turn k >= K with AL(k) >= AL(K-1); turns to recover = k - K (0: it did not
    fall below that level at all). NaN when it never recovers within the turns run, or AL(K-1)
    is missing. drop = AL(K-1) - AL(K) (positive: it fell).
    """
    y = np.asarray(al, dtype=float)
    if shift_turn < 2 or shift_turn > len(y) or math.isnan(y[shift_turn - 2]):
        return math.nan, math.nan
    before = y[shift_turn - 2]
    drop = before - y[shift_turn - 1]
    for k in range(shift_turn, len(y) + 1):
        if not math.isnan(y[k - 1]) and y[k - 1] >= before:
            return float(k - shift_turn), float(drop)
    return math.nan, float(drop)


def recovery(records: Iterable[Record], shift_turn: int, n_boot: int = DEFAULT_BOOT,
             confidence: float = DEFAULT_CONFIDENCE, seed: int = 0, unit: str | None = None,
             model: str | None = None, multiplier: float = 1.0) -> dict[str, Any]:
    """How one model's AL(k) answers a change of the user's preferences at turn K.

    The pre-shift level AL(K-1), AL(K), the drop, and the turns until AL regains the
    pre-shift level (`recovery_turns`), each with bootstrap CIs over the same draws as AL(k).
    Draws that never recover within the turns run are left out of the interval of the turns
    to recover and counted: `recovered_share` is the share of draws that did recover.
    """
    rows = list(records)
    unit = unit or default_unit(rows)
    matrix = score_matrix(rows, model, multiplier)
    al = nanmean_columns(matrix.scores)
    turns_to, drop = recovery_turns(al, shift_turn)
    result: dict[str, Any] = {"shift_turn": shift_turn, "turns_run": len(al),
                              "pre_shift_level": finite_or_none(al[shift_turn - 2])
                              if 2 <= shift_turn <= len(al) else None,
                              "at_shift": finite_or_none(al[shift_turn - 1])
                              if shift_turn <= len(al) else None,
                              "recovered": not math.isnan(turns_to),
                              "turns_to_recover": Estimate(turns_to, math.nan,
                                                           math.nan).to_json(),
                              "drop": Estimate(drop, math.nan, math.nan).to_json(),
                              "recovered_share": None}
    if not matrix.personas or shift_turn > len(al):
        return result
    boot_al = boot_means(matrix.scores, matrix.draws(unit, n_boot, seed))
    boot = np.array([recovery_turns(row, shift_turn) for row in boot_al])
    result["recovered_share"] = float(np.mean(~np.isnan(boot[:, 0])))
    for column, name, value in ((0, "turns_to_recover", turns_to), (1, "drop", drop)):
        low, high = percentile_interval(boot[:, column:column + 1], confidence)
        result[name] = Estimate(value, float(low[0]), float(high[0])).to_json()
    return result


# ------------------------------------------------------------------------------------------
# The simulated user measured without a judge: word overlap with its persona
# ------------------------------------------------------------------------------------------
_STOP = frozenset("""a about above after again all also am an and any are as at be because been
before being below between both but by can could did do does doing down during each enjoys few
for from further had has have having he her here hers herself him himself his how i if in into
is it its itself just likes loves me more most my myself no nor not now of off often on once
only or other our ours out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we
were what when where which while who whom why will with would you your yours always never
usually really being person people""".split())
_WORD = re.compile(r"[a-z][a-z'-]{2,}")


def content_words(text: str) -> set[str]:
    """The words of a text that carry content: lower case, three letters or more, no stop
    words (the, she, enjoys, ...), a plural's s removed."""
    words = set()
    for word in _WORD.findall(text.lower()):
        word = word.strip("'-")
        if word in _STOP or len(word) < 3:
            continue
        words.add(word[:-1] if word.endswith("s") and len(word) > 3 else word)
    return words


def lexical_reveal(persona_text: str, said: Sequence[str]) -> float:
    """The share of the persona's content words that the user's own messages so far contain.

    reveal = |W(persona) & W(messages)| / |W(persona)|, W = content_words. A blunt measure
    (a synonym is missed, a common word may match by chance) that needs no judge: a simulated
    user that pastes its profile into its first message scores near 1 at turn 1.
    """
    persona = content_words(persona_text)
    if not persona:
        return math.nan
    said_words: set[str] = set()
    for message in said:
        said_words |= content_words(message)
    return len(persona & said_words) / len(persona)


def lexical_reveal_records(records: Iterable[Record],
                           personas: Mapping[str, str]) -> list[Record]:
    """Per evaluation record, the word-overlap disclosure of the user's messages up to that
    turn (`lexical_reveal`), against the persona text in `personas` (persona id -> profile and
    personality as one text)."""
    by_conversation: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        by_conversation.setdefault((str(r["model"]), str(r["persona_id"])), []).append(r)
    out = []
    for (model, pid), rows in by_conversation.items():
        if pid not in personas:
            continue
        said: list[str] = []
        for r in sorted(rows, key=lambda row: int(row["turn"])):
            said.append(str(r.get("user") or ""))
            out.append({"model": model, "persona_id": pid, "profile_id": r.get("profile_id"),
                        "turn": int(r["turn"]), "lexical": lexical_reveal(personas[pid], said)})
    return out


def simulator_summary(checks: Iterable[Record], lexical: Iterable[Record], *,
                      reveal_flag: float = 0.5, n_boot: int = DEFAULT_BOOT,
                      confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                      unit: str | None = None, first_turn: int = 1) -> dict[str, Any]:
    """The simulated user of one model's conversations measured, per turn and over the run.

    revealed(k): the judge's share of the persona given away by the user's messages up to
    turn k (0-1); lexical(k): the word-overlap share (`lexical_reveal`); contradiction(k): the
    share of turn-k user messages the judge found contradicting the persona. Flags: `reveals
    at once` when the mean disclosure at the simulator's first message (turn `first_turn`: 2
    when a protocol fixes the first message, as RLPA's "Hello") reaches `reveal_flag` (by the
    judge when it measured, else by word overlap); `first_message_share`: the share of
    conversations whose first simulated message alone reaches it.
    """
    checks, lexical = list(checks), list(lexical)
    result: dict[str, Any] = {"reveal_flag": reveal_flag}
    measures = [("lexical", lexical, "lexical")]
    if checks:
        measures += [("revealed", checks, "revealed"), ("contradiction", checks, "contradiction")]
    for name, rows, key in measures:
        kept = [r for r in rows if not (isinstance(r.get(key), float) and math.isnan(r[key]))]
        result[name] = turn_curve(kept, key, n_boot, confidence, seed, unit) if kept else None
    def at_first(curve: dict[str, Any] | None) -> float | None:
        if not curve or first_turn not in curve.get("turns", []):
            return None
        return curve["value"][curve["turns"].index(first_turn)]

    judged = result.get("revealed")  # the judge's measure when it read a first message
    source = "revealed" if at_first(judged) is not None else "lexical"
    first = at_first(result.get(source))
    firsts = [float(r[source]) for r in (checks if source == "revealed" else lexical)
              if int(r["turn"]) == first_turn and r.get(source) is not None]
    result["flag_source"] = source
    result["first_simulated_turn"] = first_turn
    result["turn1_disclosure"] = first  # at first_turn: the simulator's first message
    result["first_message_share"] = (float(np.mean([v >= reveal_flag for v in firsts]))
                                     if firsts else None)
    result["reveals_at_once"] = bool(first is not None and first >= reveal_flag)
    if checks:
        flags = [bool(r["contradiction"]) for r in checks if r.get("contradiction") is not None]
        result["contradiction_rate"] = float(np.mean(flags)) if flags else None
    return result
