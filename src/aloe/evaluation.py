"""Stage 5: the benchmark. Each model under test talks with every benchmark persona for K
turns; a simulated user (the same role-play as stage 2) writes each user message, the model
replies, and the judge scores the reply for how well it fits that person, under the protocol
that `evaluation.protocol` names (`aloe.protocols`: ALOE's 1-5 scores, or RLPA's 1/0 judgement
on five criteria with a fixed first message "Hello").

What this adds to the released evaluation: every model of a run in one pass (the base model,
this run's SFT and DPO adapters, any Hugging Face model with an optional adapter, or a model
behind an OpenAI-compatible endpoint); in-process replies generated in batches, all the
benchmark conversations of a turn at once (left padding, each conversation through its own chat
template); judge replies read robustly (`parse_score`), re-asked once when unreadable and then
recorded as missing, never guessed (`aloe.judges`); and a stage that resumes per (model,
persona, turn). The models under test are loaded or reached through `aloe.policy`.

Beyond the paper's evaluation (each a key of `evaluation`, each stored apart, see
`aloe.layout`):
- `user_mode: replay`: every model gets the user messages that `replay_from` got in its live
  run, so that paired differences compare policies on identical inputs.
- `preference_shift`: from turn K the persona's personality (or profile) is another one; the
  simulated user is told so and the judge scores against the changed persona. `turns` has no
  upper bound (long dialogues).
- `inference_probe`: after each turn, in a side branch that does not continue the
  conversation, the model says what it has learned about the user; the judge scores that
  against the true persona (0-1).
- `simulator_check`: the judge measures how much of the persona the simulated user's messages
  have given away, and whether each contradicts it.
- `judge_check`: `roles.second_judge` re-judges a sample of replies; agreement with the main
  judge (`aloe.agreement`).

Records: `RUN/eval/[VARIANT/]MODEL.jsonl`, one per (persona, turn), appended when a turn of all
the conversations is finished: `{"model", "persona_id", "profile_id", "turn", "user", "reply",
"truncated", "score", "raw_judgement", "judge_attempts", "protocol", "user_source",
"shifted"}`, plus `expected_score` when the judge's backend returns token log-probabilities.
Metrics: `RUN/metrics.json` (the configured variant's) and each variant's own metrics.json
(see `aloe.metrics`).

A model whose adapter folder is missing stops the stage before any work, with an error naming
the folder (for "sft"/"dpo": run stages 3-4 first, or drop the model from `evaluation.models`):
a run that silently skipped a model would publish a comparison that is not the one asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from aloe import agreement, measures, metrics, protocols
from aloe.chat import Message, seeded
from aloe.config import EvalModelSpec, Params
from aloe.errors import AloeError, check_lost_items
from aloe.judges import Judgement, check_contradiction, score_inference, score_reply, score_revealed
from aloe.llm import LLM, LLMError, open_llm
from aloe.policy import Reply, adapter_path, open_responder
from aloe.pools import load_aloe_benchmark
from aloe.progress import Reporter, count, money, reporter
from aloe.prompts import render
from aloe.protocols import sources
from aloe.records import append_records, read_records, write_json
from aloe.schemas import (
    human_rating_check,
    persona_check,
    probe_check,
    record_check,
    second_judge_check,
    simulator_measure_check,
)
from aloe.simulator import shift_note, simulate_user

Record = dict[str, Any]
SECOND_JUDGE_ROLE = "second_judge"


class EvaluationError(AloeError):
    """The stage cannot run (a missing benchmark) or conversations were cut short."""


# ------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------
def benchmark_personas(params: Params) -> list[dict[str, Any]]:
    """The personas to evaluate on: the protocol's users (RLPA: the first 74), then
    `evaluation.limit`.

    `evaluation.benchmark: run` reads the run's own `benchmark.jsonl` (written by stage 1);
    `aloe` pairs the official benchmark files (20 profiles x the first 5 personalities = 100).
    """
    e = params.evaluation
    if e.benchmark == "aloe":
        missing = [key for key, value in (("evaluation.aloe_profiles", e.aloe_profiles),
                                          ("evaluation.aloe_personalities",
                                           e.aloe_personalities)) if not value]
        if missing:
            raise EvaluationError(f"{params.source}: evaluation.benchmark is 'aloe' but "
                                  f"{missing[0]} is not set (a path or URL of the official file)")
        personas = load_aloe_benchmark(e.aloe_profiles, e.aloe_personalities)
    else:
        path = params.layout.benchmark
        if not path.exists():
            raise EvaluationError(f"no benchmark personas at {path}: run stage 1 (personas) "
                                  "first, or set evaluation.benchmark: aloe")
        personas = read_records(path, check=persona_check())
    if not personas:
        raise EvaluationError(f"the benchmark ({e.benchmark}) holds no personas")
    n_users = protocols.get(e.protocol).n_users
    if n_users:
        personas = personas[:n_users]
    return personas[: e.limit] if e.limit else personas


# ------------------------------------------------------------------------------------------
# Variants: which conversations a model has, and where they are kept
# ------------------------------------------------------------------------------------------
def shifted_persona(params: Params, persona: dict[str, Any],
                    personas: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The persona after `evaluation.preference_shift` (None: no shift). Its personality (or
    profile) becomes the given text, or, without one, another benchmark persona's, drawn with
    the run's seed among those that differ from its own."""
    shift = params.evaluation.preference_shift
    if shift is None:
        return None
    key = shift.change
    if shift.text:
        new = shift.text
    else:
        others = sorted({str(p[key]) for p in personas if str(p[key]) != str(persona[key])})
        if not others:
            raise EvaluationError(f"evaluation.preference_shift: the benchmark has no other "
                                  f"{key} to change persona {persona['id']} to; give "
                                  "preference_shift.text")
        new = seeded(params.run.seed, "preference-shift", persona["id"]).choice(others)
    return {**persona, key: new}


@dataclass
class Conversationist:
    """Who a persona is at each turn, and what the simulated user is told then."""

    params: Params
    personas: Sequence[dict[str, Any]]
    _shifted: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def persona_at(self, persona: dict[str, Any], turn: int) -> dict[str, Any]:
        shift = self.params.evaluation.preference_shift
        if shift is None or turn < shift.turn:
            return persona
        pid = str(persona["id"])
        if pid not in self._shifted:
            self._shifted[pid] = shifted_persona(self.params, persona, self.personas)
        return self._shifted[pid] or persona

    def note_at(self, persona: dict[str, Any], turn: int) -> str | None:
        shift = self.params.evaluation.preference_shift
        if shift is None or turn < shift.turn:
            return None
        now = self.persona_at(persona, turn)
        label = "Your personality now" if shift.change == "personality" else "Your profile now"
        return shift_note(f"{label}: {now[shift.change]}")

    def shifted(self, turn: int) -> bool:
        shift = self.params.evaluation.preference_shift
        return shift is not None and turn >= shift.turn


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


def _history(done: dict[int, Record], upto: int | None = None) -> list[Message]:
    history: list[Message] = []
    for turn in sorted(done):
        if upto is not None and turn > upto:
            break
        history += [{"role": "user", "content": done[turn]["user"]},
                    {"role": "assistant", "content": done[turn]["reply"]}]
    return history


def _finished(params: Params, spec: EvalModelSpec, personas: list[dict[str, Any]],
              variant: str | None = None) -> dict[str, dict[int, Record]]:
    """The turns already recorded, per persona id (only this benchmark's, only turns <= K)."""
    variant = variant or sources(params.evaluation)[spec.name].variant
    done: dict[str, dict[int, Record]] = {str(p["id"]): {} for p in personas}  # benchmark order
    check = record_check(protocols.get(params.evaluation.protocol), spec.name)
    for record in read_records(params.layout.eval_records(spec.name, variant), check=check):
        pid, turn = str(record["persona_id"]), int(record["turn"])
        if pid in done and turn <= params.evaluation.turns:
            done[pid].setdefault(turn, record)  # the first record of a turn is the one used
    return done


def _keyed(path: Any, check: Callable[[Record], str | None]) -> dict[tuple[str, int], Record]:
    """Side records (probes, simulator checks) by (persona id, turn), read with their file's
    schema (`check`, which refuses a pair written twice)."""
    return {(str(r["persona_id"]), int(r["turn"])): r for r in read_records(path, check=check)}


def remaining_turns(params: Params, spec: EvalModelSpec, personas: list[dict[str, Any]]) -> int:
    done = _finished(params, spec, personas)
    return sum(params.evaluation.turns - len(turns) for turns in done.values())


def _missing_probes(params: Params, spec: EvalModelSpec, personas: list[dict[str, Any]],
                    done: dict[str, dict[int, Record]]) -> int:
    if not params.evaluation.inference_probe:
        return 0
    source = sources(params.evaluation)[spec.name]
    probed = _keyed(params.layout.probe_records(spec.name, source.variant),
                    probe_check(spec.name))
    return sum(1 for pid, turns in done.items() for turn in turns if (pid, turn) not in probed)


def _gather(llm: LLM, coroutines: list[Any]) -> list[Any]:
    async def all_of() -> list[Any]:
        return await asyncio.gather(*coroutines, return_exceptions=True)

    return llm.run(all_of())


@dataclass
class LiveProgress:
    """The stage's live progress across its models: turns recorded of all of them, and which
    model and turn is running (`aloe.progress`)."""

    reporter: Reporter
    llm: LLM
    done: int = 0

    def show(self, model: str, turn: int, turns: int, force: bool = False) -> None:
        usage = self.llm.ledger.totals()
        self.reporter.update(self.done, [f"model {model}", f"turn {turn}/{turns}",
                                         count(usage.requests, "requests"),
                                         money(usage.cost_usd)], force=force)


def replayed_users(params: Params, personas: list[dict[str, Any]]) -> dict[str, dict[int, str]]:
    """The reference model's live user messages, per persona id and turn."""
    e = params.evaluation
    reference = next(m for m in e.models if m.name == e.reference_model)
    done = _finished(params, reference, personas, protocols.variant_name(e, "live"))
    return {pid: {turn: r["user"] for turn, r in turns.items()} for pid, turns in done.items()}


def evaluate_model(params: Params, llm: LLM, spec: EvalModelSpec,
                   personas: list[dict[str, Any]],
                   replay: dict[str, dict[int, str]] | None = None,
                   live: LiveProgress | None = None) -> ModelProgress:
    """Run one model through the benchmark, turn by turn, resuming what is recorded.

    At turn k the conversations whose turns 1..k-1 are recorded and turn k is not are
    advanced together: user messages (concurrently; the protocol's fixed first message, or the
    reference model's recorded ones when `replay` is given), replies (one batched pass),
    judgements (concurrently); then their k-th records are appended in one write. A
    conversation whose user or judge request fails for good stops there (named in `failed`);
    the others go on. Then, with `evaluation.inference_probe`, every recorded turn without a
    probe gets one (`probe_model`). `live` shows the stage's progress after each step.
    """
    e = params.evaluation
    protocol = protocols.get(e.protocol)
    source = sources(params.evaluation)[spec.name]
    out_file = params.layout.eval_records(spec.name, source.variant)
    check = record_check(protocol, spec.name)
    done = _finished(params, spec, personas, source.variant)
    progress = ModelProgress(spec.name, turns_before=sum(len(d) for d in done.values()))
    total = len(personas) * e.turns
    if progress.turns_before >= total and not _missing_probes(params, spec, personas, done):
        return progress
    who = Conversationist(params, personas)
    style = protocol.simulator_for(e.prompt_style)
    user_source = f"replay:{e.reference_model}" if replay is not None else "live"
    turn = 1

    def show(force: bool = False) -> None:
        if live is not None:
            live.show(spec.name, turn, e.turns, force)

    show(force=True)  # loading the model can take minutes
    responder = open_responder(params, spec)
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
            histories = {str(p["id"]): _history(done[str(p["id"])]) for p in active}
            users = _gather(llm, [_user_message(llm, p, histories[str(p["id"])], turn, who,
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
            judgements = _gather(llm, [score_reply(llm.chat, who.persona_at(p, turn), h,
                                                   r.text, logprobs=e.judge_logprobs,
                                                   context=e.judge_context,
                                                   temperature=e.judge_temperature,
                                                   protocol=protocol)
                                       for p, h, r in zip(active, prompts, replies)])
            active, judgements = _drop_failed(active, judgements, progress, "judge",
                                              keep=[users, replies])
            records = [_record(spec.name, p, turn, u, r, j, protocol.name, user_source,
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
            progress.probes_run = probe_model(params, llm, spec, personas, responder, done, who,
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


def _record(model: str, persona: dict[str, Any], turn: int, user: str, reply: Reply,
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
def _side_failure(failed: dict[str, str] | None, model: str, pid: str, turn: int,
                  what: str, step: str, error: BaseException) -> None:
    """Record a side measure that could not finish (a bug or an interrupt is raised)."""
    if not isinstance(error, LLMError):
        raise error
    if failed is not None:
        failed[f"{what} of model '{model}' persona {pid} turn {turn}"] = \
            f"{step}: {type(error).__name__}: {error}"


def probe_model(params: Params, llm: LLM, spec: EvalModelSpec, personas: list[dict[str, Any]],
                responder: Any, done: dict[str, dict[int, Record]],
                who: Conversationist | None = None,
                failed: dict[str, str] | None = None) -> int:
    """For every recorded turn k without a probe: the conversation up to the model's k-th
    reply, then the probe question (`probe_inference.txt`) as a side branch that is never
    continued; the model's answer is scored by the judge against the persona as it is at turn
    k (0-1). Batched per turn; appended to `eval/[VARIANT/]probes/MODEL.jsonl`; returns how
    many were run. A probe whose request failed goes into `failed`, naming the role."""
    who = who or Conversationist(params, personas)
    source = sources(params.evaluation)[spec.name]
    path = params.layout.probe_records(spec.name, source.variant)
    check = probe_check(spec.name)  # has seen the file: refuses a probe written twice
    probed = _keyed(path, check)
    question = {"role": "user", "content": render("probe_inference")}
    by_id = {str(p["id"]): p for p in personas}
    run = 0
    for turn in range(1, params.evaluation.turns + 1):
        todo = [pid for pid, turns in done.items()
                if turn in turns and (pid, turn) not in probed
                and all(k in turns for k in range(1, turn + 1))]
        if not todo:
            continue
        prompts = [_history(done[pid], upto=turn) + [question] for pid in todo]
        statements = responder.reply_many(prompts)
        for pid, statement in zip(todo, statements):
            if isinstance(statement, BaseException):
                _side_failure(failed, spec.name, pid, turn, "inference probe",
                              "model under test", statement)
        ok = [(pid, s) for pid, s in zip(todo, statements) if not isinstance(s, BaseException)]
        scores = _gather(llm, [score_inference(llm.chat, who.persona_at(by_id[pid], turn),
                                               s.text,
                                               temperature=params.evaluation.judge_temperature)
                               for pid, s in ok])
        records = []
        for (pid, statement), scored in zip(ok, scores):
            if isinstance(scored, BaseException):
                _side_failure(failed, spec.name, pid, turn, "inference probe", "judge", scored)
                continue
            persona = by_id[pid]
            records.append({"model": spec.name, "persona_id": pid,
                            "profile_id": str(persona.get("profile_id") or pid), "turn": turn,
                            "statement": statement.text, "truncated": statement.truncated,
                            "accuracy": scored.value, "raw_judgement": scored.raw,
                            "judge_attempts": scored.attempts, "shifted": who.shifted(turn)})
        append_records(path, records, check=check)
        run += len(records)
    return run


def check_simulator(params: Params, llm: LLM, model: str, personas: list[dict[str, Any]],
                    variant: str, failed: dict[str, str] | None = None) -> int:
    """The simulated user of one model's recorded conversations measured by the judge, per
    turn: how much of the persona its messages so far give away (0-1), and whether its latest
    message contradicts the persona (as it is at that turn) or its own earlier messages.
    Appended to `eval/[VARIANT/]simulator/MODEL.jsonl`; returns how many turns were checked.
    A turn whose judge request failed goes into `failed`."""
    who = Conversationist(params, personas)
    path = params.layout.simulator_records(model, variant)
    check = simulator_measure_check(model)
    checked = _keyed(path, check)
    records = read_records(params.layout.eval_records(model, variant),
                           check=record_check(protocols.get(params.evaluation.protocol), model))
    by_conversation: dict[str, dict[int, Record]] = {}
    for r in records:
        by_conversation.setdefault(str(r["persona_id"]), {}).setdefault(int(r["turn"]), r)
    by_id = {str(p["id"]): p for p in personas}
    run = 0
    temperature = params.evaluation.judge_temperature
    for turn in range(1, params.evaluation.turns + 1):
        todo = [pid for pid, turns in by_conversation.items()
                if pid in by_id and turn in turns and (pid, turn) not in checked]
        if not todo:
            continue
        said = {pid: [by_conversation[pid][k]["user"] for k in sorted(by_conversation[pid])
                      if k <= turn] for pid in todo}
        revealed = _gather(llm, [score_revealed(llm.chat, who.persona_at(by_id[pid], turn),
                                                said[pid], temperature=temperature)
                                 for pid in todo])
        contradicts = _gather(llm, [check_contradiction(llm.chat,
                                                        who.persona_at(by_id[pid], turn),
                                                        said[pid], temperature=temperature,
                                                        shifted=who.shifted(turn))
                                    for pid in todo])
        out = []
        for pid, r, c in zip(todo, revealed, contradicts):
            errors = [result for result in (r, c) if isinstance(result, BaseException)]
            for error in errors:
                _side_failure(failed, model, pid, turn, "simulator check", "judge", error)
            if errors:
                continue
            persona = by_id[pid]
            out.append({"model": model, "persona_id": pid,
                        "profile_id": str(persona.get("profile_id") or pid), "turn": turn,
                        "revealed": r.value, "revealed_raw": r.raw,
                        "contradiction": c.value, "contradiction_raw": c.raw,
                        "shifted": who.shifted(turn)})
        append_records(path, out, check=check)
        run += len(out)
    return run


def judge_sample(params: Params, records: list[Record]) -> list[Record]:
    """The replies the second judge re-judges: `evaluation.judge_check.sample` of the scored
    records, drawn with the run's seed from all of them in a fixed order (model, persona,
    turn), so that a rerun draws the same ones."""
    check = params.evaluation.judge_check
    scored = sorted((r for r in records if r.get("score") is not None),
                    key=lambda r: (str(r["model"]), str(r["persona_id"]), int(r["turn"])))
    if check is None or not scored:
        return []
    return seeded(params.run.seed, "judge-check").sample(scored, min(check.sample, len(scored)))


def check_judge(params: Params, llm: LLM, personas: list[dict[str, Any]],
                records: list[Record], variant: str) -> int:
    """`roles.second_judge` judges the sampled replies with the main judge's own request (same
    protocol, persona, context); appended to `eval/[VARIANT/]judge_check.jsonl`."""
    e = params.evaluation
    path = params.layout.judge_check(variant)
    check = second_judge_check(protocols.get(e.protocol))
    done = {(str(r["model"]), str(r["persona_id"]), int(r["turn"]))
            for r in read_records(path, check=check)}
    sample = [r for r in judge_sample(params, records)
              if (str(r["model"]), str(r["persona_id"]), int(r["turn"])) not in done]
    if not sample:
        return 0
    who = Conversationist(params, personas)
    by_id = {str(p["id"]): p for p in personas}
    conversations: dict[tuple[str, str], dict[int, Record]] = {}
    for r in records:
        conversations.setdefault((str(r["model"]), str(r["persona_id"])), {})[int(r["turn"])] = r
    requests = []
    for r in sample:
        turns = conversations[(str(r["model"]), str(r["persona_id"]))]
        history = _history(turns, upto=int(r["turn"]) - 1) + [{"role": "user",
                                                               "content": r["user"]}]
        persona = who.persona_at(by_id[str(r["persona_id"])], int(r["turn"]))
        requests.append(score_reply(llm.chat, persona, history, r["reply"],
                                    context=e.judge_context, protocol=protocols.get(e.protocol),
                                    role=SECOND_JUDGE_ROLE))
    out = []
    for r, judged in zip(sample, _gather(llm, requests)):
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
# The stage
# ------------------------------------------------------------------------------------------
@dataclass
class EvaluationSummary:
    """What stage 5 computed (`metrics`, as written to metrics.json; see `aloe.metrics`) and
    what this call did per model (`progress`)."""

    metrics: dict[str, Any]
    progress: dict[str, ModelProgress]

    def table(self) -> pd.DataFrame:
        """Per model: turns found finished, turns run now, side measures run now."""
        return pd.DataFrame({name: {"turns_before": p.turns_before, "turns_run": p.turns_run,
                                    "probes_run": p.probes_run,
                                    "simulator_checks_run": p.simulator_checks_run}
                             for name, p in self.progress.items()}).T


def run_stage(params: Params) -> EvaluationSummary:
    """Evaluate every model of `evaluation.models` on the benchmark and write metrics.json.

    Checks every adapter that is still needed before any work; in replay mode the reference
    model goes first (its live users are the others' inputs). Then the side measures that are
    switched on. Raises IncompleteStageError at the end when more than
    `evaluation.max_failed_share` of the benchmark conversations (model x persona) were cut
    short by failed requests (the finished turns are recorded: a rerun resumes only those).
    """
    e = params.evaluation
    personas = benchmark_personas(params)
    where = sources(params.evaluation)
    order = sorted(e.models, key=lambda m: where[m.name].mode != "live")  # reference first
    pending = [spec for spec in order
               if remaining_turns(params, spec, personas) > 0
               or _missing_probes(params, spec, personas,
                                  _finished(params, spec, personas)) > 0]
    for spec in pending:
        if not spec.base_url:
            adapter_path(params, spec)  # fail now, not after hours of other models
    progress: dict[str, ModelProgress] = {}
    total = len(e.models) * len(personas) * e.turns
    with open_llm(params, "evaluate") as llm:
        live = LiveProgress(reporter(params.layout.progress, "turns", total), llm,
                            done=total - sum(remaining_turns(params, s, personas)
                                             for s in e.models))
        replay = None
        for spec in order:
            if where[spec.name].mode == "replay" and replay is None:
                replay = replayed_users(params, personas)
            progress[spec.name] = evaluate_model(
                params, llm, spec, personas,
                replay if where[spec.name].mode == "replay" else None, live)
        if e.simulator_check:
            for spec in order:
                if where[spec.name].mode == "live":
                    progress[spec.name].simulator_checks_run = check_simulator(
                        params, llm, spec.name, personas, where[spec.name].variant,
                        progress[spec.name].side_failed)
        if e.judge_check is not None:
            check_judge(params, llm, personas, load_records(params, personas),
                        protocols.variant_name(e))
    lost = [(f"model '{name}' persona {persona}", reason) for name, p in progress.items()
            for persona, reason in p.failed.items()]
    check_lost_items("benchmark conversations (model x persona)", lost,
                     len(e.models) * len(personas), e.max_failed_share,
                     "evaluation.max_failed_share")
    side_lost = [item for p in progress.values() for item in p.side_failed.items()]
    side_run = sum(p.probes_run + p.simulator_checks_run for p in progress.values())
    check_lost_items("side measures (inference probes, simulator checks)", side_lost,
                     side_run + len(side_lost), e.max_failed_share,
                     "evaluation.max_failed_share")
    summary = compute_metrics(params, load_records(params, personas), personas)
    write_json(params.layout.metrics, summary)
    write_json(params.layout.variant_metrics(protocols.variant_name(e)), summary)
    return EvaluationSummary(summary, progress)


def with_design(records: list[Record], personas: list[dict[str, Any]] | None) -> list[Record]:
    """Records with their persona's personality id, which the records do not hold: what a
    two-way bootstrap (profiles x personalities) needs to know of the benchmark's design."""
    personality = {str(p["id"]): p.get("personality_id") for p in personas or []}
    return [{**r, "personality_id": personality[str(r["persona_id"])]}
            if not r.get("personality_id") and personality.get(str(r.get("persona_id")))
            else r for r in records]


def compute_metrics(params: Params, records: list[Record],
                    personas: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """metrics.json's content from evaluation records, with the run's bootstrap settings: the
    protocol (name, version, definition), the variant, AL(k) and its trend statistics per
    model, paired differences, and, where they ran, recovery after a preference shift,
    inference accuracy per turn, the simulated user's measures and the judges' agreement."""
    e = params.evaluation
    protocol = protocols.get(e.protocol)
    records = with_design(records, personas)
    by_model: dict[str, list[Record]] = {}
    for record in records:
        by_model.setdefault(str(record["model"]), []).append(record)
    unit = None if e.bootstrap_unit == "auto" else e.bootstrap_unit
    unit = unit or metrics.default_unit(records)
    boot = {"n_boot": e.bootstrap_samples, "confidence": e.confidence, "seed": params.run.seed,
            "unit": unit}
    summary = metrics.summarise(by_model, models=[m.name for m in e.models],
                                multiplier=protocol.multiplier, **boot)
    where = sources(params.evaluation)
    shift = e.preference_shift
    summary.update({
        "protocol": protocol.to_json(), "variant": protocols.variant_name(e),
        "user_mode": e.user_mode,
        "replay_from": e.reference_model if e.user_mode == "replay" else None,
        "user_sources": {name: f"{s.mode}" + (f" ({e.reference_model}'s users)"
                                                 if s.mode == "replay" else "")
                         for name, s in where.items()},
        "turns": e.turns,
        "preference_shift": shift.model_dump() if shift else None})
    if shift is not None:
        summary["recovery"] = {name: measures.recovery(rows, shift.turn, model=name,
                                                      multiplier=protocol.multiplier, **boot)
                               for name, rows in by_model.items()}
    layout = params.layout
    if e.inference_probe:
        summary["inference"] = {}
        for name in by_model:
            probes = read_records(layout.probe_records(name, where[name].variant),
                                  check=probe_check(name))
            if probes:
                summary["inference"][name] = measures.turn_curve(with_design(probes, personas),
                                                                "accuracy", **boot)
    persona_text = {str(p["id"]): f"{p['profile']} {p['personality']}" for p in personas or []}
    simulator: dict[str, Any] = {}
    for name, rows in by_model.items():
        if where[name].mode != "live" or not persona_text:
            continue
        lexical = with_design(measures.lexical_reveal_records(rows, persona_text), personas)
        checks = with_design(read_records(layout.simulator_records(name, where[name].variant),
                                          check=simulator_measure_check(name)),
                             personas) if e.simulator_check else []
        first_turn = 2 if protocols.get(e.protocol).first_message is not None else 1
        simulator[name] = measures.simulator_summary(checks, lexical, reveal_flag=e.reveal_flag,
                                                    first_turn=first_turn, **boot)
    if simulator:
        summary["simulator"] = simulator
    if e.judge_check is not None:
        judged = read_records(layout.judge_check(protocols.variant_name(e)),
                              check=second_judge_check(protocol))
        pairs = [r for r in judged
                 if r.get("main_score") is not None and r.get("second_score") is not None]
        result = agreement.agreement([r["main_score"] for r in pairs],
                                     [r["second_score"] for r in pairs], protocol.categories,
                                     clusters=[str(r.get(f"{unit}_id") or r["persona_id"])
                                               for r in pairs],
                                     n_boot=e.bootstrap_samples, confidence=e.confidence,
                                     seed=params.run.seed)
        main_judge, second = params.roles.judge, params.roles.second_judge
        result.update({"judge": main_judge.model, "second_judge": second.model if second else None,
                       "sampled": len(judged), "unreadable": len(judged) - len(pairs),
                       "same_model": bool(second and second.model == main_judge.model
                                          and second.base_urls == main_judge.base_urls)})
        summary["judge_agreement"] = result
    human = human_agreement(params)
    if human is not None:
        summary["human_agreement"] = human
    return summary


def human_agreement(params: Params) -> dict[str, Any] | None:
    """The judge against the people who rated the blinded sample (`aloe.ratings`): every
    (human rating, judge score) pair of the configured variant's imported ratings; None when
    none were imported (`aloe ratings import`)."""
    path = params.layout.human_ratings(protocols.variant_name(params.evaluation))
    if not path.exists():
        return None
    e = params.evaluation
    protocol = protocols.get(e.protocol)
    rows = [r for r in read_records(path, check=human_rating_check(protocol.categories))
            if r.get("judge_score") is not None]
    if not rows:
        return None
    result = agreement.agreement([r["judge_score"] for r in rows], [r["rating"] for r in rows],
                                 protocol.categories,
                                 clusters=[str(r.get("profile_id") or r["persona_id"])
                                           for r in rows],
                                 n_boot=e.bootstrap_samples, confidence=e.confidence,
                                 seed=params.run.seed)
    result["raters"] = sorted({r["rater"] for r in rows})
    result["items_rated"] = len({r["item"] for r in rows})
    return result


# ------------------------------------------------------------------------------------------
# Reading results
# ------------------------------------------------------------------------------------------
def load_records(params: Params, personas: list[dict[str, Any]] | None = None) -> list[Record]:
    """The evaluation records the metrics are computed from: the models of
    `evaluation.models`, the benchmark's personas (default: `benchmark_personas(params)`),
    turns 1..K, one record per (model, persona, turn) (the first, as resuming uses it)."""
    personas = benchmark_personas(params) if personas is None else personas
    records = []
    for spec in params.evaluation.models:
        for by_turn in _finished(params, spec, personas).values():
            records += [by_turn[turn] for turn in sorted(by_turn)]
    return records


def comparison_pair(params: Params) -> list[str]:
    """The two models to read side by side: base and DPO when both are evaluated, else the
    first and the last model."""
    names = [m.name for m in params.evaluation.models]
    if "base" in names and "dpo" in names:
        return ["base", "dpo"]
    return [names[0], names[-1]] if len(names) > 1 else names


def transcripts(params: Params, models: Sequence[str], persona_id: str | None = None) -> Any:
    """Side-by-side transcripts of one persona (default: the first one all `models` share):
    one row per turn, each model's user message, reply and score."""
    where = sources(params.evaluation)
    protocol = protocols.get(params.evaluation.protocol)
    by_model = {m: {(str(r["persona_id"]), int(r["turn"])): r
                    for r in read_records(params.layout.eval_records(m, where[m].variant),
                                          check=record_check(protocol, m))}
                for m in models}
    if persona_id is None:
        shared = [set(p for p, _ in records) for records in by_model.values()]
        common = set.intersection(*shared) if shared else set()
        first = next(iter(by_model.values()), {})
        ordered = [p for p, _ in first if p in common]
        if not ordered:
            return pd.DataFrame()
        persona_id = ordered[0]
    turns = sorted({t for records in by_model.values() for p, t in records if p == persona_id})
    rows = []
    for turn in turns:
        row: dict[str, Any] = {"turn": turn}
        for model in models:
            record = by_model[model].get((persona_id, turn), {})
            row[f"{model}: user"] = record.get("user")
            row[f"{model}: reply"] = record.get("reply")
            row[f"{model}: score"] = record.get("score")
        rows.append(row)
    table = pd.DataFrame(rows).set_index("turn")
    table.attrs["persona_id"] = persona_id
    return table


def sibling_metrics(params: Params) -> dict[str, dict[str, Any]]:
    """The metrics of every variant of this run's protocol that has been evaluated (e.g. the
    live and the replayed users of the same models), by variant name; the configured one
    included. Never another protocol's: their numbers are on another scale."""
    e = params.evaluation
    found: dict[str, dict[str, Any]] = {}
    candidates = [params.layout.variant_metrics()] + sorted(
        params.layout.eval_dir.glob("*/metrics.json"))
    from aloe.records import read_json

    for path in candidates:
        if path.exists():
            summary = read_json(path)
            if protocols.of_summary(summary) is protocols.get(e.protocol):
                found[summary.get("variant", "aloe")] = summary
    return found
