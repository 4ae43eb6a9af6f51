"""The judges: reading their answers (a choice of two replies, a 1-5 score, log-probabilities),
what they are shown, and the re-ask rule (once, in the same chat, as another cached draw)."""

from __future__ import annotations

import math

import pytest

from aloe.core.chat import transcript
from aloe.core.protocols import ALOE, RLPA
from aloe.core.protocols.aloe import expected_score, parse_score, score_messages
from aloe.core.protocols.rlpa import parse_binary
from aloe.llm import Completion, run_sync
from aloe.roles.judges import (
    choice_probabilities,
    parse_choice,
    parse_ten,
    parse_yes_no,
    preference_messages,
    score_reply,
)


# ------------------------------------------------------------------------------------------
# The preference judge: 1 or 2, or P("1") against P("2")
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("1", 1), ("2.", 2), (" Reply 2", 2), ("**1**", 1), ("I think response 1 is better", 1),
    ("The second one", 2), ("banana", None), ("1 or 2", 1), ("Reply 1 and Reply 2 tie", 1),
    ("Both 1 and 2", None), ("", None), ("12", None), ("I pick 2.", 2), ("about 1.5", None),
])
def test_parse_choice(raw: str, expected: int | None) -> None:
    assert parse_choice(raw) == expected


def test_choice_probabilities() -> None:
    tokens = [{"token": "1", "logprob": -0.2, "top": {"1": -0.2, "2": -1.8, " 2": -5.0}}]
    p = choice_probabilities(tokens)
    assert p is not None and p["1"] > p["2"] and abs(p["1"] + p["2"] - 1) < 1e-9
    assert choice_probabilities(None) is None
    assert choice_probabilities([{"token": "Hmm", "logprob": -0.1, "top": {"Hmm": -0.1}}]) is None


def test_preference_judge_sees_its_worked_example_then_the_question():
    persona = {"profile": "He is a 52-year-old ferry captain.", "personality": "He is gruff."}
    history = [{"role": "user", "content": "Storm warning again."}]
    messages = preference_messages(persona, history, "Stay safe!", "Here are ten tips.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    example, answer, question = (m["content"] for m in messages[1:])
    assert answer == "1"  # the worked example's answer
    # the worked example and the question come from the same template: same wording around
    # different fields
    assert example.split("\n")[-1] == question.split("\n")[-1]
    for part in ("52-year-old ferry captain", "He is gruff.", "User: Storm warning again.",
                 "Reply 1: Stay safe!", "Reply 2: Here are ten tips."):
        assert part in question and part not in example


def test_one_transcript_renderer_for_annotators_and_the_simulated_user():
    history = [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "hello"}]
    assert transcript(history) == "User: hi\nAssistant: hello"
    assert transcript(history, user_label="You") == "You: hi\nAssistant: hello"


# ------------------------------------------------------------------------------------------
# The score judge: parse_score gives a number when there is one clear score, else None
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, score", [
    ("4", 4),
    (" 5\n", 5),
    ("Score: 4", 4),
    ("**4**", 4),
    ("**Score:** 2", 2),
    ("### Score\n5", 5),
    ("`4`", 4),
    ("4/5", 4),
    ("Rating: 4/5", 4),
    ("four out of five", 4),
    ("I'd give it a 4.", 4),
    ("I would give this a score of 3", 3),
    ("I rate this response a 2 because it is generic.", 2),
    ("Rating: four", 4),
    ("Four.", 4),
    ("Rating - 3", 3),
    ("score = 1", 1),
    ("(3)", 3),
    ("Final rating: 5 (excellent)", 5),
    ("The reply deserves a 4.", 4),
    ("On a 1-5 scale, this reply earns 4.", 4),
    ("The score is 4 on a scale from 1 to 5.", 4),
    ("Between 1 and 5, I'd say 4", 4),
    ("Score: 4\nThe reply mentions the user's 2 kids.", 4),
    ("Style 4, content 2. Overall: 3", 3),
    ("Score: 4\n\nScore: 4", 4),
    ("Rating: five stars", 5),
    ("I'd rate this one a 4", 4),
    ("I would give this one a 2.", 2),
    ("I'd give it one star.", 1),
    # no single clear score
    ("3 or 4", None),
    ("I'd rate it 2 or 3", None),
    ("between 2 and 5", None),
    ("3-4", None),
    ("Score: 4-5", None),
    ("Score: 4.5", None),
    ("3.5", None),
    ("8/10", None),
    ("4 out of 10", None),
    ("Score: 10", None),
    ("0", None),
    ("6", None),
    ("", None),
    ("I cannot rate this reply.", None),
    ("This one is fine.", None),
    ("I would rate this one highly.", None),
    ("The user mentions two hobbies and the reply covers one.", None),
    ("Score: 3. Revised score: 4", None),
    ("Score: 4/5 for style, 3/5 for content", None),
    ("The assistant scores 4 on style and 2 on content", None),
    ("1. Style: good\n2. Content: relevant", None),
])
def test_parse_score(text, score):
    assert parse_score(text) == score


def test_expected_score_weights_the_digit_alternatives():
    logprobs = [{"token": "Score", "logprob": -0.1, "top": {"Score": -0.1}},
                {"token": ":", "logprob": -0.01, "top": {}},
                {"token": " 4", "logprob": math.log(0.6),
                 "top": {" 4": math.log(0.6), " 5": math.log(0.2), "3": math.log(0.1),
                         " great": math.log(0.1)}}]
    # (4 * .6 + 5 * .2 + 3 * .1) / (.6 + .2 + .1) = 3.7 / .9
    assert expected_score(logprobs, 4) == pytest.approx(3.7 / 0.9)
    assert expected_score(logprobs, 5) is None  # the digit read is not the score parsed
    assert expected_score(None, 4) is None and expected_score(logprobs, None) is None


def test_the_score_judge_asks_for_log_probabilities_only_where_its_protocol_reads_them():
    asked: list[bool] = []
    top = {" 4": math.log(0.5), " 5": math.log(0.5)}

    async def chat(role, messages, *, sample=0, logprobs=False, **kwargs):
        asked.append(logprobs)
        return Completion(text="1" if messages[0]["content"].startswith("Imagine") else "Score: 4",
                          logprobs=[{"token": " 4", "logprob": math.log(0.5), "top": top}]
                          if logprobs else None)

    persona = {"profile": "He brews beer.", "personality": "He is witty."}
    history = [{"role": "user", "content": "My IPA is too bitter."}]
    aloe = run_sync(score_reply(chat, persona, history, "Try hops.", protocol=ALOE,
                                logprobs=True))
    rlpa = run_sync(score_reply(chat, persona, history, "Try hops.", protocol=RLPA,
                                logprobs=True))
    assert aloe.expected == pytest.approx(4.5) and aloe.score == 4
    assert (rlpa.score, rlpa.expected) == (1, None)
    assert asked == [True, False]


def test_judge_sees_the_full_persona_and_the_reply():
    persona = {"profile": "She is a 41-year-old beekeeper.", "personality": "She is blunt."}
    history = [{"role": "user", "content": "My hives swarmed again!"}]
    messages = score_messages(persona, history, "Oh no, how many did you lose?")
    text = messages[-1]["content"]
    for part in ("41-year-old beekeeper", "She is blunt.", "User: My hives swarmed again!",
                 "Oh no, how many did you lose?"):
        assert part in text


class ScriptedJudge:
    """Answers the judge role from a script, recording what it was asked."""

    def __init__(self, answers: list[str]):
        self.answers, self.calls = list(answers), []

    async def chat(self, role, messages, *, sample=0, logprobs=False, **kwargs):
        self.calls.append({"role": role, "messages": messages, "sample": sample})
        return Completion(text=self.answers.pop(0))


@pytest.mark.parametrize("answers, score, attempts", [
    (["Score: 4"], 4, 1),
    (["It is a nice reply.", "3"], 3, 2),  # unreadable, asked once more
    (["3 or 4", "Hmm, 3 or maybe 4"], None, 2),  # still unreadable: missing, never a guess
])
def test_judge_reasks_once_then_records_missing(answers, score, attempts):
    persona = {"profile": "He brews beer.", "personality": "He is witty."}
    history = [{"role": "user", "content": "My IPA is too bitter."}]
    judge = ScriptedJudge(answers)
    result = run_sync(score_reply(judge.chat, persona, history, "Give it two weeks.",
                                  protocol=ALOE))
    assert (result.score, result.attempts, result.raw) == (score, attempts, answers[-1])
    assert len(judge.calls) == attempts and {c["role"] for c in judge.calls} == {"judge"}
    if attempts == 2:  # the re-ask continues the judge's chat, as another cached sample
        again = judge.calls[1]
        assert again["sample"] != judge.calls[0]["sample"]
        assert again["messages"][: 2] == judge.calls[0]["messages"] + \
            [{"role": "assistant", "content": answers[0]}]


def test_the_released_score_judge_reads_only_the_latest_user_message():
    persona = {"profile": "She keeps bees in Cork.", "personality": "She is blunt."}
    history = [{"role": "user", "content": "My hives swarmed!"},
               {"role": "assistant", "content": "Oh no!"},
               {"role": "user", "content": "Caught them in a box though."}]
    released = score_messages(persona, history, "Well done!", context="last_message")
    whole = score_messages(persona, history, "Well done!")
    assert "Caught them in a box though." in released[0]["content"]
    assert "My hives swarmed!" not in released[0]["content"]
    assert "My hives swarmed!" in whole[0]["content"]


def test_the_released_simulated_user_gets_replies_as_they_are_in_stage_5():
    from aloe.roles.simulator import simulator_messages

    persona = {"profile": "He is a ferry captain.", "personality": "He is gruff."}
    history = [{"role": "user", "content": "Storm again."},
               {"role": "assistant", "content": "Stay safe out there."}]
    stage_2 = simulator_messages(persona, history, style="reference")
    stage_5 = simulator_messages(persona, history, style="reference", length_request=False)
    assert stage_5[-1] == {"role": "user", "content": "Stay safe out there."}
    assert stage_2[-1]["content"].startswith("Stay safe out there.")
    assert stage_2[-1]["content"] != stage_5[-1]["content"]  # + the request for 3 sentences


# ------------------------------------------------------------------------------------------
# RLPA's binary judge and the measuring judges
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [
    ("Verdict: 1", 1), ("verdict: 0", 0), ("\\boxed{1}", 1), ("Final: \\boxed{0}", 0),
    ("1", 1), ("**0**.", 0), ("It feels generic and repeats me.\n0", 0),
    ("It meets all 5 criteria.\nVerdict: 1", 1), ("Answer: 1", 1),
    ("Verdict: 1. On reflection, verdict: 0", None),  # two verdicts: never a guess
    ("It meets 1 of the criteria", None), ("I would keep chatting", None), ("", None),
    (None, None), ("Verdict: 1.5", None),
])
def test_parse_binary(text, value):
    assert parse_binary(text) == value


@pytest.mark.parametrize("text, value", [
    ("7", 7), ("7/10", 7), ("Score: 7", 7), ("seven", 7), ("10", 10), ("0", 0),
    ("I'd say 3 out of 10.", 3), ("3.5", None), ("12", None), ("3 or 4", None),
    ("11/10", None), ("", None),
])
def test_parse_ten(text, value):
    assert parse_ten(text) == value


@pytest.mark.parametrize("text, value", [
    ("yes", True), ("No.", False), ("Yes, she says she lives in Paris.", True),
    ("yes or no", None), ("maybe", None), (None, None),
])
def test_parse_yes_no(text, value):
    assert parse_yes_no(text) is value


def test_the_released_reading_counts_only_an_exact_first() -> None:
    """Issue 22: under hinted_first the released code compares the answer with 'first' as
    returned; the workbook's lenient reading also takes "First", "first.", "1", "Message 1"."""
    from aloe.roles.judges import parse_choice, parse_exact_choice

    for answer in ("First", "first.", "1", "Message 1", " first", "first\n"):
        assert parse_choice(answer) == 1, answer
        assert parse_exact_choice(answer) is None, answer
    assert parse_exact_choice("first") == 1 and parse_exact_choice("second") == 2


def test_the_reading_reaches_the_stage_two_judge(tmp_path) -> None:
    import asyncio

    from aloe.llm import Completion
    from aloe.roles.judges import PreferenceJudge

    async def answers_capital_first(role, messages, **kwargs):
        return Completion(text="First", finish_reason="stop", prompt_tokens=1,
                          completion_tokens=1)

    replies = {"hinted": "A tailored reply.", "plain": "A plain reply."}
    persona = {"profile": "He cooks.", "personality": "He is calm."}
    verdicts = {}
    for reading in ("lenient", "exact"):
        judge = PreferenceJudge(answers_capital_first, "hinted_first", 0, "reference",
                                reading=reading)
        verdicts[reading] = asyncio.run(judge.verdict("conv-00000", 1, persona, [], replies, 0))
    assert verdicts["lenient"]["preferred"] == "hinted"
    assert verdicts["exact"]["preferred"] == "plain"  # as the released code counts it


def test_the_contradiction_check_is_told_of_a_preference_shift() -> None:
    """Issue 22: after a shift the user departs from their earlier messages by design; the
    check must know, or it counts the shift itself as a contradiction. Unshifted, the request
    is the one it always was (cached answers stay valid)."""
    from aloe.prompts import render
    from aloe.roles.judges import contradiction_prompt

    persona = {"profile": "He cooks.", "personality": "He is terse now."}
    said = ["I love long stories.", "Keep it short."]
    plain = contradiction_prompt(persona, said)
    assert plain == render("judge_contradiction", profile="He cooks.",
                           personality="He is terse now.", earlier="- I love long stories.",
                           message="Keep it short.", shift_note="")
    assert "preferences changed" not in plain
    shifted = contradiction_prompt(persona, said, shifted=True)
    assert "Their preferences changed during the chat" in shifted
    assert shifted.index("Keep it short.") < shifted.index("preferences changed")
