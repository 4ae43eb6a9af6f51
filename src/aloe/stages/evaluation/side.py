"""Stage 5's side measures of its own instruments: the simulated user (how much of the
persona it gives away, whether it contradicts it) and the judge (a second judge on a sample).
"""

from __future__ import annotations

from typing import Any

from aloe.core import protocols
from aloe.core.chat import seeded
from aloe.core.config import Params
from aloe.core.config.schema import JudgeCheckConfig
from aloe.core.records import append_records, read_records
from aloe.core.schemas import (
    record_check,
    second_judge_check,
    simulator_measure_check,
)
from aloe.llm import LLM, LLMError
from aloe.prompts import render
from aloe.roles.judges import check_contradiction, contradiction_prompt, score_reply, score_revealed
from aloe.stages.evaluation.benchmark import SECOND_JUDGE_ROLE
from aloe.stages.evaluation.dialogue import (
    PlannedTurn,
    gather,
    history_of,
    keyed_records,
    record_side_failure,
)
from aloe.stages.evaluation.run import EvaluationRun
from aloe.stages.plan_lengths import Lengths
from aloe.stages.planned import PlannedRequest, history_slots, persona_slots

Record = dict[str, Any]


def check_simulator(run: EvaluationRun, llm: LLM, model: str, variant: str,
                    failed: dict[str, str] | None = None) -> int:
    """The simulated user of one model's recorded conversations measured by the judge, per
    turn: how much of the persona its messages so far give away (0-1), and whether its latest
    message contradicts the persona (as it is at that turn) or its own earlier messages.
    Appended to `eval/[VARIANT/]simulator/MODEL.jsonl`; returns how many turns were checked.
    A turn whose judge request failed goes into `failed`."""
    who = run.who
    path = run.layout.simulator_records(model, variant)
    check = simulator_measure_check(model)
    checked = keyed_records(path, check)
    records = read_records(run.layout.eval_records(model, variant),
                           check=record_check(run.protocol, model))
    by_conversation: dict[str, dict[int, Record]] = {}
    for r in records:
        by_conversation.setdefault(str(r["persona_id"]), {}).setdefault(int(r["turn"]), r)
    by_id = {str(p["id"]): p for p in run.personas}
    checks_run = 0
    temperature = run.settings.judge_temperature
    for turn in range(1, run.turns + 1):
        todo = [pid for pid, turns in by_conversation.items()
                if pid in by_id and turn in turns and (pid, turn) not in checked]
        if not todo:
            continue
        said = {pid: [by_conversation[pid][k]["user"] for k in sorted(by_conversation[pid])
                      if k <= turn] for pid in todo}
        revealed = gather(llm, [score_revealed(llm.chat, who.persona_at(by_id[pid], turn),
                                               said[pid], temperature=temperature)
                                for pid in todo])
        contradicts = gather(llm, [check_contradiction(llm.chat,
                                                       who.persona_at(by_id[pid], turn),
                                                       said[pid], temperature=temperature,
                                                       shifted=who.shifted(turn))
                                   for pid in todo])
        out = []
        for pid, r, c in zip(todo, revealed, contradicts):
            errors = [result for result in (r, c) if isinstance(result, BaseException)]
            for error in errors:
                record_side_failure(failed, model, pid, turn, "simulator check", "judge", error)
            if errors:
                continue
            persona = by_id[pid]
            out.append({"model": model, "persona_id": pid,
                        "profile_id": str(persona.get("profile_id") or pid), "turn": turn,
                        "revealed": r.value, "revealed_raw": r.raw,
                        "contradiction": c.value, "contradiction_raw": c.raw,
                        "shifted": who.shifted(turn)})
        append_records(path, out, check=check)
        checks_run += len(out)
    return checks_run


def judge_sample(check: JudgeCheckConfig | None, seed: int,
                 records: list[Record]) -> list[Record]:
    """The replies the second judge re-judges: `check.sample` (`evaluation.judge_check`) of the
    scored records, drawn with the run's `seed` from all of them in a fixed order (model,
    persona, turn), so that a rerun draws the same ones."""
    scored = sorted((r for r in records if r.get("score") is not None),
                    key=lambda r: (str(r["model"]), str(r["persona_id"]), int(r["turn"])))
    if check is None or not scored:
        return []
    return seeded(seed, "judge-check").sample(scored, min(check.sample, len(scored)))


def check_judge(run: EvaluationRun, llm: LLM, records: list[Record], variant: str) -> int:
    """`roles.second_judge` judges the sampled replies with the main judge's own request (same
    protocol, persona, context); appended to `eval/[VARIANT/]judge_check.jsonl`."""
    e = run.settings
    path = run.layout.judge_check(variant)
    check = second_judge_check(run.protocol)
    done = {(str(r["model"]), str(r["persona_id"]), int(r["turn"]))
            for r in read_records(path, check=check)}
    sample = [r for r in judge_sample(e.judge_check, run.seed, records)
              if (str(r["model"]), str(r["persona_id"]), int(r["turn"])) not in done]
    if not sample:
        return 0
    who = run.who
    by_id = {str(p["id"]): p for p in run.personas}
    conversations: dict[tuple[str, str], dict[int, Record]] = {}
    for r in records:
        conversations.setdefault((str(r["model"]), str(r["persona_id"])), {})[int(r["turn"])] = r
    requests = []
    for r in sample:
        turns = conversations[(str(r["model"]), str(r["persona_id"]))]
        history = history_of(turns, upto=int(r["turn"]) - 1) + [{"role": "user",
                                                                 "content": r["user"]}]
        persona = who.persona_at(by_id[str(r["persona_id"])], int(r["turn"]))
        requests.append(score_reply(llm.chat, persona, history, r["reply"],
                                    context=e.judge_context, protocol=run.protocol,
                                    role=SECOND_JUDGE_ROLE))
    out = []
    for r, judged in zip(sample, gather(llm, requests)):
        if isinstance(judged, BaseException):
            if not isinstance(judged, LLMError):
                raise judged
            continue
        out.append({"model": r["model"], "persona_id": r["persona_id"],
                    "profile_id": r.get("profile_id"), "turn": r["turn"],
                    "main_score": r["score"], "second_score": judged.score,
                    "second_raw": judged.raw, "second_attempts": judged.attempts})
    append_records(path, out, check=check)
    return len(out)


# ------------------------------------------------------------------------------------------
# What the side measures will send (`aloe plan`)
# ------------------------------------------------------------------------------------------
def planned_simulator_check(params: Params, turn: PlannedTurn, personas: int,
                            judge: float) -> list[PlannedRequest]:
    """`check_simulator`'s two judge requests per turn (how much the user's messages give
    away; whether they contradict the persona) of `personas` live conversations; `judge` is
    one judge completion's length."""
    persona, counter = turn.persona, turn.counter
    said = "\n".join(f"- {m['content']}" for m in turn.history if m["role"] == "user")
    prompts = (render("judge_revealed", profile=persona["profile"],
                      personality=persona["personality"], messages=said),
               contradiction_prompt(persona, [said, said],
                                    shifted=params.evaluation.preference_shift is not None))
    return [PlannedRequest("judge", personas, counter.tokens([{"role": "user", "content": p}]),
                           judge) for p in prompts]


def planned_judge_check(params: Params, lengths: Lengths) -> list[PlannedRequest]:
    """`check_judge`'s second-judge requests: `judge_check.sample` replies (at most: no more
    than were scored), each the main judge's request at the last turn."""
    e = params.evaluation
    if e.judge_check is None or params.roles.second_judge is None:
        return []
    protocol = protocols.get(e.protocol)
    user, reply = lengths.completion["user"], lengths.completion["policy"]
    counter = lengths.counter()
    persona = persona_slots(counter, lengths.benchmark)
    history = history_slots(counter, e.turns - 1, user, reply) + [
        {"role": "user", "content": counter.slot(user)}]
    return [PlannedRequest(SECOND_JUDGE_ROLE, e.judge_check.sample, counter.tokens(
        protocol.judge_messages(persona, history, counter.slot(reply), e.judge_context)),
        lengths.completion["judge"], turn=e.turns)]
