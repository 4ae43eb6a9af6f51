"""ALOE's protocol (arXiv 2410.03642, the released evaluation; see ../shared/aloe_reference/
PROTOCOL.md): the benchmark's users (the official one: 20 profiles x 5 personalities = 100);
the simulated user writes every message, the first included; 10 turns; the judge scores each
reply 1-5 on three criteria taken together (style fits the personality, content fits the
profile, human-like, engaging and concise); AL(k) = the mean score at turn k.

Its judge's request (`judge_score.txt`, or `judge_score_reference.txt` for the released
last-message context) and the reading of its answer (`parse_score`, `expected_score`) are here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from aloe.core.chat import Message, transcript
from aloe.core.protocols.base import Protocol
from aloe.prompts import render

_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
# a number word is a score only where it stands as one: "Rating: four", "five stars", not
# "this one", "rate one of them", "two hobbies"
_NUM = (r"(?:[1-5]|(?<!this )(?<!that )(?<!the )(?<!no )(?:one|two|three|four|five)"
        r"(?!\s+(?!stars?\b|points?\b)[a-z]))")
# a score must stand alone: not "3 or 4", "3-4", "3.5", "35"
_ALONE = r"(?![\d])(?!\.\d)(?!\s*(?:or|to|-|and|,|/)\s*(?:\d|one|two|three|four|five)\b)"
_SCALES = [  # mentions of the 1-5 scale itself, never a score
    r"(?:on\s+)?(?:a\s+)?(?:scale|range)\s*(?:of|from)?\s*(?:1|one)\s*(?:-|to)\s*(?:5|five)",
    r"\bfrom\s+(?:1|one)\s+to\s+(?:5|five)\b",
    r"\bbetween\s+(?:1|one)\s+and\s+(?:5|five)\b",
    r"(?<![\d.])1\s*-\s*5(?![\d.])",
]
_FRACTION = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?|one|two|three|four|five)\s*(?:/|out\s+of)\s*"
                       r"(\d+|five|ten)\b")
_KEYWORD = re.compile(
    r"\b(?:score|scores|scored|rating|rate|rated|grade|graded|verdict|mark)\b"
    r"(?:\s*[:=\-]|\s+(?:is|of|would|will|be|as|at|it|this|that|the|reply|response|answer|"
    r"a|an|i|final|overall|give|deserves|gets|get))*\s*[:=\-]?\s*"
    rf"({_NUM})\b{_ALONE}")
_GIVE = re.compile(
    r"\b(?:give|gives|giving|gave|award|assign)\s+(?:it|this|that|the\s+\w+|this\s+\w+)?\s*"
    rf"(?:a|an|the)?\s*(?:score\s+of\s+|rating\s+of\s+)?({_NUM})\b{_ALONE}")
_STANDALONE = re.compile(r"(?<![\d.])\d+(?:\.\d+)?(?![\d])")
_PER_CRITERION = re.compile(rf"\b({_NUM})\s+(?:on|for|in)\s+(?:the\s+)?[a-z]")  # "4 on style"
_OVERALL = re.compile(rf"\b(?:overall|final|total)(?:\s+(?:score|rating))?\s*[:=\-]?\s*"
                      rf"({_NUM})\b{_ALONE}")  # "Overall: 3"


def _value(token: str) -> int | None:
    token = token.strip().lower()
    if token in _NUMBER_WORDS:
        return _NUMBER_WORDS[token]
    return int(token) if token.isdigit() and 1 <= int(token) <= 5 else None


def parse_score(text: str | None) -> int | None:
    """The 1-5 score in a judge's reply, or None when there is no single clear one.

    Read, in order: fractions ("4/5", "four out of five"; any other denominator, e.g. "8/10",
    means another scale: None); scores named as such ("Score: 4", "rated it a 4", "I'd give
    it a 4", "Rating: four"); else the only number in the reply ("4", "**4**", "(4)"), or the
    reply being one number word ("Four."). Mentions of the scale itself ("on a 1-5 scale",
    "between 1 and 5") are ignored. Two different scores, a range ("3 or 4", "3-4", "between
    2 and 5"), a decimal ("3.5") or a number outside 1-5 give None: never a guess.
    """
    if not text:
        return None
    t = text.lower()
    t = re.sub(r"[\u2010-\u2015\u2212]", "-", t)  # dashes
    t = re.sub(r"[*_`#]", "", t)  # markdown emphasis and headings
    for scale in _SCALES:
        t = re.sub(scale, " ", t)
    strong: set[int] = set()
    for match in list(_FRACTION.finditer(t)):
        numerator, denominator = match.group(1), match.group(2)
        if denominator not in ("5", "five"):
            return None  # a score on another scale is not ours to convert
        value = _value(numerator)
        if value is None:
            return None  # "4.5/5", "0/5"
        strong.add(value)
    t = _FRACTION.sub(" ", t)
    strong.update(v for m in _KEYWORD.finditer(t) if (v := _value(m.group(1))) is not None)
    strong.update(v for m in _GIVE.finditer(t) if (v := _value(m.group(1))) is not None)
    strong.update(v for m in _OVERALL.finditer(t) if (v := _value(m.group(1))) is not None)
    if len({m.group(1) for m in _PER_CRITERION.finditer(t)}) > 1:  # criteria scored apart
        overall = {_value(m.group(1)) for m in _OVERALL.finditer(t)}
        return overall.pop() if len(overall) == 1 else None
    if strong:
        return strong.pop() if len(strong) == 1 else None
    numbers = _STANDALONE.findall(t)
    if len(numbers) == 1:
        return _value(numbers[0])
    if not numbers:
        bare = re.sub(r"[^a-z]", "", t)
        return _NUMBER_WORDS.get(bare)
    return None


def expected_score(logprobs: list[dict[str, Any]] | None, score: int | None) -> float | None:
    """The probability-weighted score sum_d d * p(d) / sum_d p(d) over the digits 1-5.

    Read at the first generated token that is a digit 1-5, from its top alternatives, and
    only when that token is the score `parse_score` read (else the digit may be something
    else, e.g. part of "1-5 scale"). None without log-probabilities.
    """
    if not logprobs or score is None:
        return None
    for position in logprobs:
        chosen = _value(re.sub(r"[^0-9]", "", str(position.get("token", ""))) or "x")
        if chosen is None:
            continue
        if chosen != score:
            return None
        options = dict(position.get("top") or {})
        options.setdefault(position["token"], position["logprob"])
        mass: dict[int, float] = {}
        for token, logprob in options.items():
            digit = _value(token.strip())
            if digit is not None and logprob is not None:
                mass[digit] = mass.get(digit, 0.0) + math.exp(logprob)
        total = sum(mass.values())
        return sum(d * p for d, p in mass.items()) / total if total > 0 else None
    return None


def score_messages(persona: dict[str, Any], history: Sequence[Message], reply: str,
                   context: str = "transcript") -> list[Message]:
    """The score judge's request: the full persona, the reply, and either the whole chat up to
    the user's message (`transcript`) or the user's latest message only (`last_message`, as
    released)."""
    reply = reply.strip() or "(an empty reply)"
    if context == "last_message":
        prompt = render("judge_score_reference", profile=persona["profile"],
                        personality=persona["personality"], message=history[-1]["content"],
                        reply=reply)
    else:
        prompt = render("judge_score", profile=persona["profile"],
                        personality=persona["personality"], transcript=transcript(history),
                        reply=reply)
    return [{"role": "user", "content": prompt}]


ALOE = Protocol(
    name="aloe", version="aloe-1",
    source="ALOE, arXiv 2410.03642; released code github.com/ShujinWu-0814/ALOE b1b8285 "
           "(evaluation/eval_own.py)",
    users="the benchmark's personas: evaluation.benchmark (the official one crosses 20 "
          "profiles with the first 5 personalities: 100 users)",
    n_users=None, first_message=None, turns=10,
    simulator="evaluation.prompt_style (workbook: user_simulator; reference: user_roleplay)",
    judge_template="evaluation.judge_context (transcript: judge_score; last_message: "
                   "judge_score_reference)",
    judge_reask="judge_score_reask", scale=(1, 5), multiplier=1.0,
    criteria=("style: the reply's tone and manner suit the person's personality",
              "content: what it says is relevant to the person's profile (and message)",
              "human-like: engaging and concise, like a message from a friend"),
    aggregate="AL(k) = the mean 1-5 score at turn k over the users (missing scores left out); "
              "IR, N-IR, N-R2 from the AL curve",
    judge_messages=score_messages, read_judgement=parse_score, expected_judgement=expected_score,
    rating_labels={1: "1 poor", 2: "2", 3: "3", 4: "4", 5: "5 excellent"},
    rating_lead="How well does the reply fit this particular person? One overall score on:",
    al_axis="AL(k): mean judge score (1-5)",
)
