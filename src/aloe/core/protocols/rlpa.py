"""RLPA's protocol (arXiv 2505.15456, NeurIPS 2025, "Vanilla ALOE" in its Table 1 and
Appendix C.2-C.4): 74 users of the ALOE test set; the first user message fixed to "Hello"; a
simulated user told to reveal its profile gradually; 10 turns; the judge decides 1 or 0 per
reply: 1 only when the reply meets all five criteria (natural, relevant to the person's
interests and needs, logically answers the message, engaging, informative rather than
repetition or flattery); AL(k) = 100 x the share of 1s at turn k.

Its judge's request (`judge_rlpa.txt`) and the reading of its verdict (`parse_binary`) are here;
its simulated user is the `rlpa` prompt style (`user_simulator_rlpa.txt`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aloe.core.chat import Message, transcript
from aloe.core.protocols.base import Protocol
from aloe.prompts import render

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


def judge_messages(persona: dict[str, Any], history: Sequence[Message], reply: str,
                   context: str = "transcript") -> list[Message]:
    """RLPA's judge: the person's own view of the reply (persona, the chat before the person's
    latest message, that message, the reply), answered 1 or 0 (`judge_rlpa.txt`). It always
    reads the chat so far: `evaluation.judge_context` is ALOE's switch."""
    earlier = list(history[:-1])
    return [{"role": "user", "content": render(
        "judge_rlpa", profile=persona["profile"], personality=persona["personality"],
        transcript=transcript(earlier, user_label="You", assistant_label="Them") or "(nothing yet)",
        message=history[-1]["content"], reply=reply.strip() or "(an empty reply)")}]


RLPA = Protocol(
    name="rlpa", version="rlpa-1",
    source="RLPA, arXiv 2505.15456 (NeurIPS 2025), Sections 3.3 and 4.1, Appendix C.2-C.4; "
           "its response-reward prompt in github.com/XingYuSSS/RLPA scirpts/multi_turn_rfn.py",
    users="the first 74 personas of the benchmark (RLPA: 'the complete ALOE test set, "
          "consisting of 74 instances')",
    n_users=74, first_message="Hello", turns=10,
    simulator="user_simulator_rlpa", judge_template="judge_rlpa", judge_reask="judge_rlpa_reask",
    scale=(0, 1), multiplier=100.0,
    criteria=("natural: fluent, short, conversational, like a real exchange",
              "relevant: fits the person's interests and needs",
              "logical: answers the person's last message sensibly",
              "engaging: makes the person want to go on talking, not bored",
              "informative: more than repeating the person or flattering them"),
    aggregate="each reply judged 1 (all five criteria met) or 0 (any one missed); AL(k) = 100 "
              "x the share of 1s at turn k over the users; AVG = the mean of AL(k) over the "
              "turns; N-IR, N-R2 from the normalised AL curve",
    assumptions=(
        "which 74: RLPA does not list them; the ALOE benchmark files hold 100 users, so the "
        "first 74 in benchmark order are taken (on a smaller benchmark, all of them)",
        "profiles: RLPA converts each profile to ten slots in Chinese with GPT-4o-mini; here the "
        "simulated user and the judge read the profile and personality as written",
        "the simulated user's and the judge's prompts are shown in RLPA only as images (Figures "
        "8-11); this project's wording carries the instructions the text and the released "
        "training prompts describe: reveal the profile gradually, short casual replies, cold at "
        "first; the judge role-plays the person and answers 1 (would keep chatting) or 0",
        "what the judge reads: Appendix C.3 names the persona, the message and the reply; the "
        "released prompt also gives the chat so far, so the transcript is included",
        "judge model: RLPA used gpt-4o-2024-11-20 for evaluation; here roles.judge",
        "the protocol brings its own simulated user and judge prompts: evaluation.prompt_style "
        "and evaluation.judge_context (ALOE's switches) do not apply to it",
        "the fixed first message 'Hello' is the user's turn 1; the model's first reply to it is "
        "judged as turn 1",
        "the judge's strictness: RLPA's released judge prompt (scirpts/multi_turn_rfn.py) ends "
        "with two worked examples, one passing and one failing reply, that set how strict it "
        "is; this project's judge prompt has none, so its share of 1s may differ at equal "
        "replies",
        "the verdict's format: RLPA's judge answers in \\boxed{1} or \\boxed{0}; this one is "
        "asked for 'Verdict: 1' or 'Verdict: 0' (parse_binary reads both)",
        "an unreadable verdict: RLPA's code asks again until a verdict is readable; here it is "
        "asked once more, then recorded as missing and left out of AL(k)",
        "the simulated user's rules: RLPA's reveals at most 15% of the profile per message and "
        "never opens a new topic (it only follows the other side's); this one reveals at most "
        "one new detail per message and may change a topic that bores it",
        "the model under test answers as itself: RLPA's policy writes "
        "<profile>...</profile><response>...</response>; give it its system prompt "
        "(evaluation.models[].system_prompt) and response_pattern to score its response alone",
    ),
    judge_messages=judge_messages, read_judgement=parse_binary, simulator_style="rlpa",
    rating_labels={0: "0 would stop chatting", 1: "1 would keep chatting"},
    rating_lead="Imagine you are this person. Would you keep chatting after this reply? Only if "
                "it meets all five:",
    al_axis="AL(k): 100 x share of replies passing",
    published_judge="gpt-4o-2024-11-20", defined_on="aloe",
)
