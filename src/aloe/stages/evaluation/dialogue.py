"""Stage 5's conversations: each model under test talks with every benchmark persona, turn
by turn, all conversations of a turn at once; the judge scores each reply; the inference
probe asks the model, in a side branch, what it has learned. Resumes per (model, persona,
turn); a conversation whose request failed is named, never dropped silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from aloe.core import protocols
from aloe.core.chat import Message
from aloe.core.config import EvalModelSpec, Params
from aloe.core.progress import Reporter, count, money
from aloe.core.records import append_records, read_records
from aloe.core.schemas import (
    probe_check,
    record_check,
)
from aloe.llm import LLM, LLMError
from aloe.prompts import render
from aloe.roles.judges import Judgement, score_inference, score_reply
from aloe.roles.simulator import SIMULATOR_ATTEMPTS, simulate_user, simulator_messages
from aloe.stages.evaluation.benchmark import Conversationist
from aloe.stages.evaluation.run import EvaluationRun
from aloe.stages.plan_lengths import Lengths, PromptCounter
from aloe.stages.planned import PlannedRequest, history_slots, persona_slots, policy_role, reasked
from aloe.stages.policy import Reply, Responder

Record = dict[str, Any]


# ------------------------------------------------------------------------------------------
# The protocol
# ------------------------------------------------------------------------------------------
@dataclass
class ModelProgress:
    """What one model's pass did: turns found finished, turns run now, conversations cut
    short, and the side measures run now."""

    model: str
    turns_before: int = 0
    turns_run: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # persona id -> error
    probes_run: int = 0
    simulator_checks_run: int = 0
    # side measures that could not finish: (model, persona and turn) -> which role failed, why
    side_failed: dict[str, str] = field(default_factory=dict)


def history_of(done: dict[int, Record], upto: int | None = None) -> list[Message]:
    history: list[Message] = []
    for turn in sorted(done):
        if upto is not None and turn > upto:
            break
        history += [{"role": "user", "content": done[turn]["user"]},
                    {"role": "assistant", "content": done[turn]["reply"]}]
    return history


def finished_turns(run: EvaluationRun, spec: EvalModelSpec,
                   variant: str | None = None) -> dict[str, dict[int, Record]]:
    """The turns already recorded, per persona id (only this benchmark's, only turns <= K)."""
    variant = variant or run.source(spec).variant
    done: dict[str, dict[int, Record]] = {str(p["id"]): {} for p in run.personas}  # in order
    check = record_check(run.protocol, spec.name)
    for record in read_records(run.layout.eval_records(spec.name, variant), check=check):
        pid, turn = str(record["persona_id"]), int(record["turn"])
        if pid in done and turn <= run.turns:
            done[pid].setdefault(turn, record)  # the first record of a turn is the one used
    return done


def keyed_records(path: Any,
                  check: Callable[[Record], str | None]) -> dict[tuple[str, int], Record]:
    """Side records (probes, simulator checks) by (persona id, turn), read with their file's
    schema (`check`, which refuses a pair written twice)."""
    return {(str(r["persona_id"]), int(r["turn"])): r for r in read_records(path, check=check)}


def remaining_turns(run: EvaluationRun, spec: EvalModelSpec) -> int:
    done = finished_turns(run, spec)
    return sum(run.turns - len(turns) for turns in done.values())


def missing_probes(run: EvaluationRun, spec: EvalModelSpec,
                   done: dict[str, dict[int, Record]]) -> int:
    if not run.settings.inference_probe:
        return 0
    probed = keyed_records(run.layout.probe_records(spec.name, run.source(spec).variant),
                           probe_check(spec.name))
    return sum(1 for pid, turns in done.items() for turn in turns if (pid, turn) not in probed)


def gather(llm: LLM, coroutines: list[Any]) -> list[Any]:
    async def all_of() -> list[Any]:
        return await asyncio.gather(*coroutines, return_exceptions=True)

    return llm.run(all_of())


@dataclass
class LiveProgress:
    """The stage's live progress across its models: turns recorded of all of them, and which
    model and turn is running (`aloe.core.progress`)."""

    reporter: Reporter
    llm: LLM
    done: int = 0

    def show(self, model: str, turn: int, turns: int, force: bool = False) -> None:
        usage = self.llm.ledger.totals()
        self.reporter.update(self.done, [f"model {model}", f"turn {turn}/{turns}",
                                         count(usage.requests, "requests"),
                                         money(usage.cost_usd)], force=force)


def replayed_users(run: EvaluationRun) -> dict[str, dict[int, str]]:
    """The reference model's live user messages, per persona id and turn."""
    e = run.settings
    reference = next(m for m in e.models if m.name == e.reference_model)
    done = finished_turns(run, reference, run.source(reference).variant)
    return {pid: {turn: r["user"] for turn, r in turns.items()} for pid, turns in done.items()}


def evaluate_model(run: EvaluationRun, llm: LLM, spec: EvalModelSpec,
                   open_model: Callable[[EvalModelSpec], Responder],
                   replay: dict[str, dict[int, str]] | None = None,
                   live: LiveProgress | None = None) -> ModelProgress:
    """Run one model through the benchmark, turn by turn, resuming what is recorded.

    At turn k the conversations whose turns 1..k-1 are recorded and turn k is not are
    advanced together: user messages (concurrently; the protocol's fixed first message, or the
    reference model's recorded ones when `replay` is given), replies (one batched pass),
    judgements (concurrently); then their k-th records are appended in one write. A
    conversation whose user or judge request fails for good stops there (named in `failed`);
    the others go on. Then, with `evaluation.inference_probe`, every recorded turn without a
    probe gets one (`probe_model`). `open_model` loads or reaches the model under test;
    `live` shows the stage's progress after each step.
    """
    e, protocol, personas, who = run.settings, run.protocol, run.personas, run.who
    source = run.source(spec)
    out_file = run.layout.eval_records(spec.name, source.variant)
    check = record_check(protocol, spec.name)
    done = finished_turns(run, spec, source.variant)
    progress = ModelProgress(spec.name, turns_before=sum(len(d) for d in done.values()))
    total = len(personas) * e.turns
    if progress.turns_before >= total and not missing_probes(run, spec, done):
        return progress
    style = protocol.simulator_for(e.prompt_style)
    user_source = f"replay:{e.reference_model}" if replay is not None else "live"
    turn = 1

    def show(force: bool = False) -> None:
        if live is not None:
            live.show(spec.name, turn, e.turns, force)

    show(force=True)  # loading the model can take minutes
    responder = open_model(spec)
    bar = tqdm(total=total, initial=progress.turns_before, desc=f"evaluate {spec.name}",
               unit="turn")
    try:
        for turn in range(1, e.turns + 1):
            active = [p for p in personas
                      if str(p["id"]) not in progress.failed and turn not in done[str(p["id"])]
                      and all(k in done[str(p["id"])] for k in range(1, turn))]
            if replay is not None:
                for p in [p for p in active if turn not in replay.get(str(p["id"]), {})]:
                    progress.failed[str(p["id"])] = (
                        f"replay: the reference model '{e.reference_model}' has no user "
                        f"message at turn {turn} (evaluate it to turn {e.turns} first)")
                active = [p for p in active if str(p["id"]) not in progress.failed]
            if not active:
                continue
            show(force=True)
            histories = {str(p["id"]): history_of(done[str(p["id"])]) for p in active}
            users = gather(llm, [_user_message(llm, p, histories[str(p["id"])], turn, who,
                                               style, protocol.first_message, replay)
                                 for p in active])
            show()
            active, users = _drop_failed(active, users, progress, "user simulator")
            prompts = [histories[str(p["id"])] + [{"role": "user", "content": u}]
                       for p, u in zip(active, users)]
            replies = responder.reply_many(prompts) if prompts else []
            show()
            active, replies = _drop_failed(active, replies, progress, "model under test",
                                           keep=[prompts, users])
            judgements = gather(llm, [score_reply(llm.chat, who.persona_at(p, turn), h,
                                                  r.text, logprobs=e.judge_logprobs,
                                                  context=e.judge_context,
                                                  temperature=e.judge_temperature,
                                                  protocol=protocol)
                                      for p, h, r in zip(active, prompts, replies)])
            active, judgements = _drop_failed(active, judgements, progress, "judge",
                                              keep=[users, replies])
            records = [turn_record(spec.name, p, turn, u, r, j, protocol.name, user_source,
                                   who.shifted(turn))
                       for p, u, r, j in zip(active, users, replies, judgements)]
            append_records(out_file, records, check=check)  # the schema its readers hold
            for p, record in zip(active, records):
                done[str(p["id"])][turn] = record
            progress.turns_run += len(records)
            bar.update(len(records))
            if live:
                live.done += len(records)
            show(force=True)
        if e.inference_probe:
            progress.probes_run = probe_model(run, llm, spec, responder, done,
                                              progress.side_failed)
    finally:
        bar.close()
        responder.close()
    return progress


async def _user_message(llm: LLM, persona: dict[str, Any], history: list[Message], turn: int,
                        who: Conversationist, style: str, first_message: str | None,
                        replay: dict[str, dict[int, str]] | None) -> str:
    if replay is not None:
        return replay[str(persona["id"])][turn]
    if turn == 1 and first_message is not None:
        return first_message
    return await simulate_user(llm, who.persona_at(persona, turn), history, style=style,
                               length_request=False, note=who.note_at(persona, turn))


def _drop_failed(active: list[dict[str, Any]], results: list[Any], progress: ModelProgress,
                 step: str, keep: list[list[Any]] | None = None) -> tuple[list[Any], list[Any]]:
    """Drop the conversations whose `step` failed (recording why); the lists in `keep` are
    filtered in place the same way, so everything stays aligned with `active`."""
    for result in results:  # a bug or an interrupt is raised, not counted as a failed request
        if isinstance(result, BaseException) and not isinstance(result, LLMError):
            raise result
    good = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    for i, result in enumerate(results):
        if isinstance(result, BaseException):
            progress.failed[str(active[i]["id"])] = f"{step}: {type(result).__name__}: {result}"
    for values in keep or []:
        values[:] = [values[i] for i in good]
    return [active[i] for i in good], [results[i] for i in good]


def turn_record(model: str, persona: dict[str, Any], turn: int, user: str, reply: Reply,
                judgement: Judgement, protocol: str = "aloe", user_source: str = "live",
                shifted: bool = False) -> Record:
    record: Record = {"model": model, "persona_id": str(persona["id"]),
                      "profile_id": str(persona.get("profile_id") or persona["id"]), "turn": turn,
                      "user": user, "reply": reply.text, "truncated": reply.truncated,
                      "score": judgement.score, "raw_judgement": judgement.raw,
                      "judge_attempts": judgement.attempts, "protocol": protocol,
                      "user_source": user_source, "shifted": shifted}
    if judgement.expected is not None:
        record["expected_score"] = judgement.expected
    if reply.raw is not None:  # the model's whole answer, its reply extracted from it
        record.update(raw_reply=reply.raw, extracted=reply.extracted)
    return record


# ------------------------------------------------------------------------------------------
# Side measures: the inference probe, the simulated user, the second judge
# ------------------------------------------------------------------------------------------
def record_side_failure(failed: dict[str, str] | None, model: str, pid: str, turn: int,
                        what: str, step: str, error: BaseException) -> None:
    """Record a side measure that could not finish (a bug or an interrupt is raised)."""
    if not isinstance(error, LLMError):
        raise error
    if failed is not None:
        failed[f"{what} of model '{model}' persona {pid} turn {turn}"] = \
            f"{step}: {type(error).__name__}: {error}"


def probe_model(run: EvaluationRun, llm: LLM, spec: EvalModelSpec, responder: Responder,
                done: dict[str, dict[int, Record]],
                failed: dict[str, str] | None = None) -> int:
    """For every recorded turn k without a probe: the conversation up to the model's k-th
    reply, then the probe question (`probe_inference.txt`) as a side branch that is never
    continued; the model's answer is scored by the judge against the persona as it is at turn
    k (0-1). Batched per turn; appended to `eval/[VARIANT/]probes/MODEL.jsonl`; returns how
    many were run. A probe whose request failed goes into `failed`, naming the role."""
    who = run.who
    path = run.layout.probe_records(spec.name, run.source(spec).variant)
    check = probe_check(spec.name)  # has seen the file: refuses a probe written twice
    probed = keyed_records(path, check)
    question = {"role": "user", "content": render("probe_inference")}
    by_id = {str(p["id"]): p for p in run.personas}
    probes_run = 0
    for turn in range(1, run.turns + 1):
        todo = [pid for pid, turns in done.items()
                if turn in turns and (pid, turn) not in probed
                and all(k in turns for k in range(1, turn + 1))]
        if not todo:
            continue
        prompts = [history_of(done[pid], upto=turn) + [question] for pid in todo]
        statements = responder.reply_many(prompts)
        for pid, statement in zip(todo, statements):
            if isinstance(statement, BaseException):
                record_side_failure(failed, spec.name, pid, turn, "inference probe",
                                    "model under test", statement)
        ok = [(pid, s) for pid, s in zip(todo, statements) if not isinstance(s, BaseException)]
        scores = gather(llm, [score_inference(llm.chat, who.persona_at(by_id[pid], turn),
                                              s.text,
                                              temperature=run.settings.judge_temperature)
                              for pid, s in ok])
        records = []
        for (pid, statement), scored in zip(ok, scores):
            if isinstance(scored, BaseException):
                record_side_failure(failed, spec.name, pid, turn, "inference probe", "judge",
                                    scored)
                continue
            persona = by_id[pid]
            records.append({"model": spec.name, "persona_id": pid,
                            "profile_id": str(persona.get("profile_id") or pid), "turn": turn,
                            "statement": statement.text, "truncated": statement.truncated,
                            "accuracy": scored.value, "raw_judgement": scored.raw,
                            "judge_attempts": scored.attempts, "shifted": who.shifted(turn)})
        append_records(path, records, check=check)
        probes_run += len(records)
    return probes_run


# ------------------------------------------------------------------------------------------
# What a turn will send (`aloe plan`)
# ------------------------------------------------------------------------------------------
@dataclass
class PlannedTurn:
    """Turn `turn` of `personas` conversations of one model, for `aloe plan`: its requests,
    and the persona and the chat (placeholders of `counter`) the side measures ask about."""

    requests: list[PlannedRequest]
    counter: PromptCounter
    persona: dict[str, str]
    history: list[Message]


def planned_turn(params: Params, spec: EvalModelSpec, lengths: Lengths, turn: int,
                 personas: int, live: bool) -> PlannedTurn:
    """Turn `turn` as `evaluate_model` asks it: the simulated user (none for the protocol's
    fixed first message or replayed users), a reply from a model behind an endpoint, the
    judge (the protocol's request); with `inference_probe`, `probe_model`'s question and its
    judgement. Re-asks apart."""
    e = params.evaluation
    protocol = protocols.get(e.protocol)
    user, reply = lengths.completion["user"], lengths.completion["policy"]
    judge = lengths.completion["judge"]
    counter = lengths.counter()
    persona = persona_slots(counter, lengths.benchmark)
    before = history_slots(counter, turn - 1, user, reply)
    history = before + [{"role": "user", "content": counter.slot(user)}]
    scoring = protocol.judge_messages(persona, history, counter.slot(reply), e.judge_context)
    planned = []
    if live and not (turn == 1 and protocol.first_message is not None):
        asking = counter.tokens(simulator_messages(persona, before,
                                                   style=protocol.simulator_for(e.prompt_style),
                                                   length_request=False))
        planned += [PlannedRequest("user", personas, asking, user),
                    PlannedRequest("user", personas * (SIMULATOR_ATTEMPTS - 1), asking, user,
                                   reask=True)]
    planned += [
        PlannedRequest("judge", personas, counter.tokens(scoring), judge),
        PlannedRequest("judge", personas, counter.tokens(
            reasked(counter, scoring, judge, protocol.judge_reask)), judge, reask=True),
    ]
    if spec.base_url:
        planned.append(PlannedRequest(policy_role(spec), personas, counter.tokens(history),
                                      reply))
    if e.inference_probe:
        question = [{"role": "user", "content": render("probe_inference")}]
        if spec.base_url:
            planned.append(PlannedRequest(policy_role(spec), personas,
                                          counter.tokens(history + question), e.max_new_tokens))
        prompt = render("judge_inference", profile=persona["profile"],
                        personality=persona["personality"],
                        statement=counter.slot(e.max_new_tokens))
        planned.append(PlannedRequest("judge", personas, counter.tokens(
            [{"role": "user", "content": prompt}]), judge))
    return PlannedTurn(planned, counter, persona, history)
