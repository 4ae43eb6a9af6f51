"""The two judges: one small part each, a template, a parser and a re-ask rule.

- The **preference judge** (stage 2) sees the full persona, the chat so far and two replies,
  and names the one the user would like better: "1" or "2" (`parse_choice`), or, where the
  backend gives token log-probabilities, P("1") against P("2") (`choice_probabilities`). Its
  rules (`conversations.judge_rule`) decide a turn from one or two votes.
- The **score judge** (stage 5) sees the full persona, the chat (or, as released, the user's
  latest message only) and the model's latest reply, and scores the reply 1-5 (`parse_score`;
  `expected_score` from log-probabilities); under the RLPA protocol it role-plays the person
  and decides 1 or 0 (`parse_binary`; `aloe.protocols` defines both protocols).
- The **measuring judges** of stage 5 (`evaluation.inference_probe`,
  `evaluation.simulator_check`): how much of the true persona a model's statement of what it
  has learned gets right (`score_inference`, 0-10 read as 0-1), how much of the persona the
  simulated user's messages have given away (`score_revealed`, the same scale), and whether a
  simulated user's message contradicts its persona (`check_contradiction`, yes/no).

An answer the parser cannot read is asked again once, in the same chat (the judge's own answer,
then a short request for the format alone), and recorded as unreadable if that fails too:
never guessed (`ask_and_read`, which the persona inducer of stage 2 uses the same way). To
change what a judge is asked, edit its template in `aloe/prompts/` (`judge_preference.txt`,
`judge_score.txt`; the preference judge's worked example is `examples/judge_preference.json`,
rendered through the same template); to change how its answer is read, its parser here.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aloe.chat import Message, draw, seeded, transcript
from aloe.llm import Completion, LLMError
from aloe.prompts import few_shot, render

T = TypeVar("T")
Chat = Callable[..., Awaitable[Completion]]  # (role, messages, *, sample, logprobs) -> answer

JUDGE_ROLE = "judge"
HINTED, PLAIN = "hinted", "plain"
BRANCHES = (HINTED, PLAIN)
INCONSISTENT, UNPARSEABLE = "inconsistent", "unparseable"


# ------------------------------------------------------------------------------------------
# Ask, read, re-ask once
# ------------------------------------------------------------------------------------------
@dataclass
class Reading(Generic[T]):
    """What an annotator answered and what was read from it (None: unreadable twice)."""

    value: T | None
    texts: list[str]  # every answer, the re-ask's last
    first: Completion  # the first answer (its log-probabilities, when asked for)
    last: Completion

    @property
    def attempts(self) -> int:
        return len(self.texts)


async def ask_and_read(chat: Chat, role: str, messages: list[Message],
                       parse: Callable[[str], T | None], reask: str | None, *,
                       redraw: bool = False, sample: int = 0, logprobs: bool = False,
                       accept: Callable[[Completion], bool] | None = None,
                       **request: Any) -> Reading[T]:
    """Ask `role`; when `parse` cannot read the answer, ask once more.

    With a `reask` template the second ask continues the same chat (the answer, then the
    template), so it differs from the first even when the role decodes greedily. Without one,
    `redraw` asks the very same request again as another draw (the released protocol's retry);
    with neither, the role is asked once. `accept` may take an unparsed first answer anyway
    (e.g. one whose log-probabilities decide). `request` goes to every ask (e.g. temperature).
    """
    first = await chat(role, messages, sample=draw(sample, 0), logprobs=logprobs, **request)
    value = parse(first.text)
    if value is not None or (accept is not None and accept(first)):
        return Reading(value, [first.text], first, first)
    if reask is not None:
        again = messages + [{"role": "assistant", "content": first.text},
                            {"role": "user", "content": render(reask)}]
    elif redraw:
        again = messages
    else:
        return Reading(None, [first.text], first, first)
    second = await chat(role, again, sample=draw(sample, 1), logprobs=logprobs, **request)
    return Reading(parse(second.text), [first.text, second.text], first, second)


# ------------------------------------------------------------------------------------------
# The preference judge (stage 2)
# ------------------------------------------------------------------------------------------
_CHOICE_START = re.compile(r"^\W*(?:reply|response|answer|option)?\s*#?\s*([12])(?!\d)",
                           re.IGNORECASE)
_CHOICE_NAMED = re.compile(r"(?:reply|response|option)\s*#?\s*([12])(?!\d)", re.IGNORECASE)
_CHOICE_DIGIT = re.compile(r"(?<![\d.])([12])(?!\d|\.\d)")  # not part of 12 or 1.5
_ORDINALS = {"first": 1, "second": 2}


def parse_choice(text: str) -> int | None:
    """The judge's 1 or 2, or None when its answer names neither (or both, undecided)."""
    match = _CHOICE_START.match(text) or _CHOICE_NAMED.search(text)
    if match:
        return int(match.group(1))
    digits = {int(d) for d in _CHOICE_DIGIT.findall(text)}
    if len(digits) == 1:
        return digits.pop()
    words = {_ORDINALS[w.lower()] for w in re.findall(r"\b(first|second)\b", text, re.IGNORECASE)}
    return words.pop() if len(words) == 1 else None


def parse_exact_choice(text: str) -> int | None:
    """The released reading: 1 for the answer `first` exactly as returned, 2 for `second`,
    None for anything else ("First", "first.", "1" included)."""
    return {"first": 1, "second": 2}.get(text)


def choice_probabilities(logprobs: list[dict[str, Any]] | None) -> dict[str, float] | None:
    """P("1") and P("2"), renormalised over the two, at the first answer token that offers
    either; None when the backend returned no log-probabilities or neither digit."""
    for token in logprobs or []:
        candidates = dict(token.get("top") or {})
        candidates.setdefault(token.get("token", ""), token.get("logprob", -math.inf))
        mass = {"1": 0.0, "2": 0.0}
        for text, logprob in candidates.items():
            digit = str(text).strip()
            if digit in mass and logprob is not None:
                mass[digit] += math.exp(logprob)
        total = mass["1"] + mass["2"]
        if total > 0:
            return {d: p / total for d, p in mass.items()}
        if str(token.get("token", "")).strip():  # a real token that is no digit: give up
            return None
    return None


def preference_messages(persona: dict[str, Any], history: Sequence[Message],
                        first: str, second: str, style: str = "workbook") -> list[Message]:
    """The preference judge's request. workbook: the worked example, then the persona, the
    chat so far and the two replies in the order shown. reference (released): one user
    message with the persona and the two replies only (no transcript), answered first/second
    (`parse_choice` reads both "1"/"2" and "first"/"second")."""
    if style == "reference":
        return [{"role": "user", "content": render(
            "judge_preference_reference", profile=persona["profile"],
            personality=persona["personality"], reply_1=first, reply_2=second)}]
    return few_shot("judge_preference", profile=persona["profile"],
                    personality=persona["personality"], transcript=transcript(history),
                    reply_1=first, reply_2=second)


PREFERENCE_REASK = {"workbook": "judge_preference_reask",
                    "reference": "judge_preference_reference_reask"}


@dataclass
class PreferenceJudge:
    """Decides which of a turn's two replies (hinted, plain) the user would prefer.

    Rules: `both_orders` asks twice with the replies in both orders; agreeing votes decide,
    disagreeing ones make the turn inconsistent (position bias shows instead of hiding in the
    data). `single_random` asks once, in an order drawn with the run's seed. `logprobs`
    averages P(hinted) over both orders where the backend returns log-probabilities, and falls
    back to `both_orders` (with a note) where it does not or refuses them. `hinted_first` (the
    released rule) asks once with the hinted reply first and no re-ask; an answer that does not
    name the first reply, unreadable ones included, counts as preferring the plain reply.
    """

    chat: Chat
    rule: str
    seed: int
    style: str = "workbook"  # the prompt (see preference_messages)
    reading: str = "lenient"  # conversations.judge_reading: parse_choice, or parse_exact_choice
    logprobs_rejected: str | None = None  # why the backend refused `logprobs`, once it did

    async def vote(self, persona: dict[str, Any], history: Sequence[Message],
                   replies: dict[str, str], order: tuple[str, str], sample: int,
                   logprobs: bool = False) -> dict[str, Any]:
        """One vote with the replies shown in `order`; re-asked once if unreadable (unless
        its log-probabilities decide)."""
        messages = preference_messages(persona, history, replies[order[0]], replies[order[1]],
                                       self.style)
        vote: dict[str, Any] = {"order": list(order)}
        reask = None if self.rule == "hinted_first" else PREFERENCE_REASK[self.style]
        parse = parse_exact_choice if self.reading == "exact" else parse_choice
        reading = await ask_and_read(
            self.chat, JUDGE_ROLE, messages, parse, reask,
            sample=sample, logprobs=logprobs,
            accept=lambda answer: choice_probabilities(answer.logprobs) is not None)
        probabilities = choice_probabilities(reading.first.logprobs) if logprobs else None
        if probabilities is not None:
            vote["p"] = probabilities
            vote["p_hinted"] = probabilities["1" if order[0] == HINTED else "2"]
        choice = reading.value
        vote.update(text=reading.texts, choice=choice, pick=order[choice - 1] if choice else None)
        return vote

    async def verdict(self, conv_id: str, turn: int, persona: dict[str, Any],
                      history: Sequence[Message], replies: dict[str, str],
                      sample: int) -> dict[str, Any]:
        """The turn's verdict under the configured rule."""
        both = [(HINTED, PLAIN), (PLAIN, HINTED)]
        if self.rule == "hinted_first":
            vote = await self.vote(persona, history, replies, (HINTED, PLAIN), sample)
            verdict = {"rule": "hinted_first", "preferred": HINTED if vote["choice"] == 1
                       else PLAIN, "votes": [vote]}
            if vote["choice"] is None:
                verdict["note"] = "the answer named no reply: counted as plain (released rule)"
            return verdict
        if self.rule == "single_random":
            order = tuple(seeded(self.seed, conv_id, turn, "judge-order").sample(BRANCHES, 2))
            vote = await self.vote(persona, history, replies,
                                   order, sample)  # type: ignore[arg-type]
            return {"rule": "single_random", "preferred": vote["pick"] or UNPARSEABLE,
                    "votes": [vote]}
        if self.rule == "logprobs" and self.logprobs_rejected is None:
            try:
                votes = await asyncio.gather(*(self.vote(persona, history, replies, o, sample,
                                                         logprobs=True) for o in both))
            except LLMError as error:
                if not error.rejected:
                    raise
                self.logprobs_rejected = str(error)
            else:
                if all("p_hinted" in v for v in votes):
                    p_hinted = sum(v["p_hinted"] for v in votes) / 2
                    preferred = (HINTED if p_hinted > 0.5 else PLAIN if p_hinted < 0.5
                                 else INCONSISTENT)
                    return {"rule": "logprobs", "preferred": preferred, "votes": list(votes),
                            "p_hinted": p_hinted}
                verdict = agreement(list(votes))
                verdict["note"] = "no log-probabilities returned; decided by both_orders"
                return verdict
        votes = await asyncio.gather(*(self.vote(persona, history, replies, o, sample)
                                       for o in both))
        verdict = agreement(list(votes))
        if self.rule == "logprobs":
            verdict["note"] = "the backend rejected logprobs; decided by both_orders"
        return verdict


def agreement(votes: list[dict[str, Any]]) -> dict[str, Any]:
    """Both orders: agreeing votes decide, disagreeing ones make the turn inconsistent."""
    picks = [v["pick"] for v in votes]
    if None in picks:
        preferred = UNPARSEABLE
    elif picks[0] == picks[1]:
        preferred = picks[0]
    else:
        preferred = INCONSISTENT
    return {"rule": "both_orders", "preferred": preferred, "votes": votes}


# ------------------------------------------------------------------------------------------
# The score judge (stage 5)
# ------------------------------------------------------------------------------------------
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


@dataclass
class Judgement:
    score: int | None
    raw: str  # the judge's last answer (the re-ask's when it was asked twice)
    attempts: int
    expected: float | None = None


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


async def score_reply(chat: Chat, persona: dict[str, Any], history: Sequence[Message],
                      reply: str, *, logprobs: bool = False, context: str = "transcript",
                      temperature: float | None = None, protocol: str = "aloe",
                      role: str = JUDGE_ROLE) -> Judgement:
    """Judge one reply under `protocol`: 1-5 (aloe) or 1/0 (rlpa); an unreadable answer is
    re-asked once, then recorded as missing. `temperature` overrides the role's (None: the
    role's); `role` is the judge asked (the second judge measures the first with the same
    request)."""
    if protocol == "rlpa":
        reading = await ask_and_read(chat, role, rlpa_messages(persona, history, reply),
                                     parse_binary, "judge_rlpa_reask", temperature=temperature)
        return Judgement(reading.value, reading.texts[-1], reading.attempts)
    reading = await ask_and_read(chat, role, score_messages(persona, history, reply, context),
                                 parse_score, "judge_score_reask", logprobs=logprobs,
                                 temperature=temperature)
    return Judgement(reading.value, reading.texts[-1], reading.attempts,
                     expected_score(reading.last.logprobs, reading.value))


# ------------------------------------------------------------------------------------------
# RLPA's binary judge (stage 5, evaluation.protocol: rlpa)
# ------------------------------------------------------------------------------------------
_BOXED = re.compile(r"\\?boxed\s*\{\s*([01])\s*\}")
_VERDICT = re.compile(r"\b(?:verdict|answer|judgement|judgment|decision|result|output)\s*"
                      r"(?:is|:|=|-)?\s*[\"'(\[]?\s*([01])\b(?!\.\d|\d)", re.IGNORECASE)


def parse_binary(text: str | None) -> int | None:
    """The 1 or 0 of a binary judgement, or None when there is no single clear one.

    Read, in order: `\\boxed{1}` (the released RLPA prompt's format); "Verdict: 1" (or
    answer, decision, result); else the reply being the bare digit ("1", "**0**."); else its
    last line being one. Two different verdicts, or a digit standing elsewhere in reasons
    ("all 5 criteria", "1 of them"), give None: never a guess.
    """
    if not text:
        return None
    t = re.sub(r"[*_`#]", "", text)
    found = {int(m.group(1)) for m in _BOXED.finditer(t)}
    if not found:
        found = {int(m.group(1)) for m in _VERDICT.finditer(t)}
    if found:
        return found.pop() if len(found) == 1 else None
    for candidate in (t, (t.strip().splitlines() or [""])[-1]):
        bare = re.sub(r"[\s.!,;:()\[\]\"']", "", candidate)
        if bare in ("0", "1"):
            return int(bare)
    return None


def rlpa_messages(persona: dict[str, Any], history: Sequence[Message],
                  reply: str) -> list[Message]:
    """RLPA's judge: the person's own view of the reply (persona, the chat before the person's
    latest message, that message, the reply), answered 1 or 0 (`judge_rlpa.txt`)."""
    earlier = list(history[:-1])
    return [{"role": "user", "content": render(
        "judge_rlpa", profile=persona["profile"], personality=persona["personality"],
        transcript=transcript(earlier, user_label="You", assistant_label="Them") or "(nothing yet)",
        message=history[-1]["content"], reply=reply.strip() or "(an empty reply)")}]


# ------------------------------------------------------------------------------------------
# The measuring judges: inference accuracy, the simulator's disclosure and consistency
# ------------------------------------------------------------------------------------------
_OUT_OF_TEN = re.compile(r"(?<![\d.])(\d{1,2})\s*(?:/|out\s+of)\s*10\b", re.IGNORECASE)
_TEN_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
              "seven": 7, "eight": 8, "nine": 9, "ten": 10}


def parse_ten(text: str | None) -> int | None:
    """A whole number 0-10 in a judge's answer ("7", "7/10", "Score: 7", "seven"), or None when
    there is no single one (two numbers, a decimal, a number above 10)."""
    if not text:
        return None
    t = re.sub(r"[*_`#]", "", text.lower())
    t = re.sub(r"\bfrom\s+0\s+to\s+10\b|\b0\s*(?:-|to)\s*10\b", " ", t)
    fractions = {int(m.group(1)) for m in _OUT_OF_TEN.finditer(t)}
    if fractions:
        value = fractions.pop() if len(fractions) == 1 else None
        return value if value is not None and value <= 10 else None
    if re.search(r"\d\.\d", t):
        return None
    numbers = {int(n) for n in re.findall(r"(?<![\d.])\d+(?![\d])", t)}
    if len(numbers) == 1:
        value = numbers.pop()
        return value if value <= 10 else None
    if not numbers:
        return _TEN_WORDS.get(re.sub(r"[^a-z]", "", t))
    return None


def parse_yes_no(text: str | None) -> bool | None:
    """True for yes, False for no, None when the answer says neither, or both."""
    if not text:
        return None
    words = set(re.findall(r"\b(yes|no)\b", text.lower()))
    return (words.pop() == "yes") if len(words) == 1 else None


@dataclass
class Measurement(Generic[T]):
    """A measuring judge's reading (None: unreadable twice), its last raw answer, attempts."""

    value: T | None
    raw: str
    attempts: int


async def _measure(chat: Chat, prompt: str, parse: Callable[[str], T | None], reask: str,
                   role: str = JUDGE_ROLE, temperature: float | None = None) -> Measurement[T]:
    reading = await ask_and_read(chat, role, [{"role": "user", "content": prompt}], parse,
                                 reask, temperature=temperature)
    return Measurement(reading.value, reading.texts[-1], reading.attempts)


async def score_inference(chat: Chat, persona: dict[str, Any], statement: str,
                          temperature: float | None = None) -> Measurement[float]:
    """How right a model's statement of what it learned about the user is: 0-10 read as 0-1."""
    return await _share_of_ten(chat, "judge_inference", temperature, persona,
                               statement=statement.strip() or "(nothing)")


async def score_revealed(chat: Chat, persona: dict[str, Any], said: Sequence[str],
                         temperature: float | None = None) -> Measurement[float]:
    """How much of its persona a simulated user's messages so far give away: 0-10 read as
    0-1."""
    messages = "\n".join(f"- {m.strip()}" for m in said) or "(none)"
    return await _share_of_ten(chat, "judge_revealed", temperature, persona, messages=messages)


async def _share_of_ten(chat: Chat, template: str, temperature: float | None,
                        persona: dict[str, Any], **fields: str) -> Measurement[float]:
    """The judge's 0-10 answer to `template` about `persona` (re-asked once with
    `TEMPLATE_reask`), read as a share 0-1."""
    prompt = render(template, profile=persona["profile"], personality=persona["personality"],
                    **fields)
    measured = await _measure(chat, prompt, parse_ten, f"{template}_reask",
                              temperature=temperature)
    value = None if measured.value is None else measured.value / 10.0
    return Measurement(value, measured.raw, measured.attempts)


async def check_contradiction(chat: Chat, persona: dict[str, Any], said: Sequence[str],
                              temperature: float | None = None,
                              shifted: bool = False) -> Measurement[bool]:
    """Whether a simulated user's latest message (`said[-1]`) contradicts its persona or its
    own earlier messages. After a preference shift (`shifted`: the persona is the shifted one)
    the judge is told, so that the change itself is not counted as a contradiction."""
    return await _measure(chat, contradiction_prompt(persona, said, shifted), parse_yes_no,
                          "judge_contradiction_reask", temperature=temperature)


def contradiction_prompt(persona: dict[str, Any], said: Sequence[str],
                         shifted: bool = False) -> str:
    """The contradiction check's request (also what `aloe plan` counts)."""
    earlier = "\n".join(f"- {m.strip()}" for m in said[:-1]) or "(none)"
    return render("judge_contradiction", profile=persona["profile"],
                  personality=persona["personality"], earlier=earlier,
                  message=said[-1].strip() if said else "",
                  shift_note="\n\n" + render("judge_contradiction_shift") if shifted else "")
