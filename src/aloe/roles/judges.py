"""The two judges: one small part each, a template, a parser and a re-ask rule.

- The **preference judge** (stage 2) sees the full persona, the chat so far and two replies,
  and names the one the user would like better: "1" or "2" (`parse_choice`), or, where the
  backend gives token log-probabilities, P("1") against P("2") (`choice_probabilities`). Its
  rules (`conversations.judge_rule`) decide a turn from one or two votes.
- The **score judge** (stage 5) sees the full persona, the chat (or, as released, the user's
  latest message only) and the model's latest reply, and judges it as the run's protocol
  says: its request, its reading and its scale are the protocol's (`aloe.core.protocols`: ALOE's
  1-5 score, RLPA's 1 or 0).
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
rendered through the same template); to change how its answer is read, its parser here (the
score judge's: in its protocol's module, `aloe/core/protocols/`).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from aloe.core.chat import Message, draw, seeded, transcript
from aloe.llm import Completion, LLMError
from aloe.prompts import few_shot, render

if TYPE_CHECKING:
    from aloe.core.protocols import Protocol

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
BOTH_ORDERS = ((HINTED, PLAIN), (PLAIN, HINTED))
ONE_VOTE_RULES = ("hinted_first", "single_random")  # every other rule asks in both orders


def votes_per_turn(rule: str) -> int:
    """The votes `PreferenceJudge.verdict` asks for a turn under `rule`, re-asks apart."""
    return 1 if rule in ONE_VOTE_RULES else len(BOTH_ORDERS)


def preference_reask(rule: str, style: str) -> str | None:
    """The template that asks an unreadable vote again (none under the released rule)."""
    return None if rule == "hinted_first" else PREFERENCE_REASK[style]


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
        reask = preference_reask(self.rule, self.style)
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
                                                         logprobs=True) for o in BOTH_ORDERS))
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
                                       for o in BOTH_ORDERS))
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
@dataclass
class Judgement:
    score: int | None
    raw: str  # the judge's last answer (the re-ask's when it was asked twice)
    attempts: int
    expected: float | None = None


async def score_reply(chat: Chat, persona: dict[str, Any], history: Sequence[Message],
                      reply: str, *, protocol: Protocol, logprobs: bool = False,
                      context: str = "transcript", temperature: float | None = None,
                      role: str = JUDGE_ROLE) -> Judgement:
    """Judge one reply under `protocol` (its request, its reading of the answer, its scale);
    an unreadable answer is re-asked once, then recorded as missing. `temperature` overrides
    the role's (None: the role's); `role` is the judge asked (the second judge measures the
    first with the same request)."""
    expects = protocol.expected_judgement
    reading = await ask_and_read(chat, role, protocol.judge_messages(persona, history, reply,
                                                                     context),
                                 protocol.read_judgement, protocol.judge_reask,
                                 logprobs=logprobs and expects is not None,
                                 temperature=temperature)
    expected = expects(reading.last.logprobs, reading.value) if expects is not None else None
    return Judgement(reading.value, reading.texts[-1], reading.attempts, expected)


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
