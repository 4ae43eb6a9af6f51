"""Stage 5: the ALOE benchmark. Each model under test talks with every benchmark persona for K
turns; a simulated user (the same role-play as stage 2) writes each user message, the model
replies, and the judge scores the reply 1-5 for how well it fits that person.

What this adds to the released evaluation: every model of a run in one pass (the base model,
this run's SFT and DPO adapters, any Hugging Face model with an optional adapter, or a model
behind an OpenAI-compatible endpoint); in-process replies generated in batches, all the
benchmark conversations of a turn at once (left padding, each conversation through its own chat
template); judge replies read robustly (`parse_score`), re-asked once when unreadable and then
recorded as missing, never guessed (`aloe.judges`); and a stage that resumes per (model,
persona, turn). The models under test are loaded or reached through `aloe.policy`.

Records: `RUN/eval/MODEL.jsonl`, one per (persona, turn), appended when a turn of all the
conversations is finished: `{"model", "persona_id", "turn", "user", "reply", "score",
"raw_judgement", "judge_attempts"}`, plus `expected_score` when the judge's backend returns
token log-probabilities. Metrics: `RUN/metrics.json` (see `aloe.metrics`).

A model whose adapter folder is missing stops the stage before any work, with an error naming
the folder (for "sft"/"dpo": run stages 3-4 first, or drop the model from `evaluation.models`):
a run that silently skipped a model would publish a comparison that is not the one asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from aloe import metrics
from aloe.chat import Message
from aloe.config import EvalModelSpec, Params
from aloe.errors import AloeError, check_lost_items
from aloe.judges import Judgement, score_reply
from aloe.llm import LLM, LLMError, open_llm, run_sync
from aloe.policy import adapter_path, open_responder
from aloe.pools import load_aloe_benchmark
from aloe.records import append_records, read_records, write_json
from aloe.simulator import simulate_user

Record = dict[str, Any]


class EvaluationError(AloeError):
    """The stage cannot run (a missing benchmark) or conversations were cut short."""


# ------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------
def benchmark_personas(params: Params) -> list[dict[str, Any]]:
    """The personas to evaluate on, truncated to `evaluation.limit`.

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
        personas = read_records(path)
    if not personas:
        raise EvaluationError(f"the benchmark ({e.benchmark}) holds no personas")
    return personas[: e.limit] if e.limit else personas


# ------------------------------------------------------------------------------------------
# The protocol
# ------------------------------------------------------------------------------------------
@dataclass
class ModelProgress:
    """What one model's pass did: turns found finished, turns run now, conversations cut short."""

    model: str
    turns_before: int = 0
    turns_run: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # persona id -> error


def _history(done: dict[int, Record]) -> list[Message]:
    history: list[Message] = []
    for turn in sorted(done):
        history += [{"role": "user", "content": done[turn]["user"]},
                    {"role": "assistant", "content": done[turn]["reply"]}]
    return history


def _finished(params: Params, spec: EvalModelSpec,
              personas: list[dict[str, Any]]) -> dict[str, dict[int, Record]]:
    """The turns already recorded, per persona id (only this benchmark's, only turns <= K)."""
    done: dict[str, dict[int, Record]] = {str(p["id"]): {} for p in personas}  # benchmark order
    for record in read_records(params.layout.eval_records(spec.name)):
        pid, turn = str(record["persona_id"]), int(record["turn"])
        if pid in done and turn <= params.evaluation.turns:
            done[pid].setdefault(turn, record)  # the first record of a turn is the one used
    return done


def remaining_turns(params: Params, spec: EvalModelSpec, personas: list[dict[str, Any]]) -> int:
    done = _finished(params, spec, personas)
    return sum(params.evaluation.turns - len(turns) for turns in done.values())


def _gather(coroutines: list[Any]) -> list[Any]:
    async def all_of() -> list[Any]:
        return await asyncio.gather(*coroutines, return_exceptions=True)

    return run_sync(all_of())


def evaluate_model(params: Params, llm: LLM, spec: EvalModelSpec,
                   personas: list[dict[str, Any]]) -> ModelProgress:
    """Run one model through the benchmark, turn by turn, resuming what is recorded.

    At turn k the conversations whose turns 1..k-1 are recorded and turn k is not are
    advanced together: user messages (concurrently), replies (one batched pass), judgements
    (concurrently); then their k-th records are appended in one write. A conversation whose
    user or judge request fails for good stops there (named in `failed`); the others go on.
    """
    e = params.evaluation
    done = _finished(params, spec, personas)
    progress = ModelProgress(spec.name, turns_before=sum(len(d) for d in done.values()))
    total = len(personas) * e.turns
    if progress.turns_before >= total:
        return progress
    responder = open_responder(params, spec)
    bar = tqdm(total=total, initial=progress.turns_before, desc=f"evaluate {spec.name}",
               unit="turn")
    try:
        for turn in range(1, e.turns + 1):
            active = [p for p in personas
                      if str(p["id"]) not in progress.failed and turn not in done[str(p["id"])]
                      and all(k in done[str(p["id"])] for k in range(1, turn))]
            if not active:
                continue
            histories = {str(p["id"]): _history(done[str(p["id"])]) for p in active}
            users = _gather([simulate_user(llm, p, histories[str(p["id"])]) for p in active])
            active, users = _drop_failed(active, users, progress, "user simulator")
            prompts = [histories[str(p["id"])] + [{"role": "user", "content": u}]
                       for p, u in zip(active, users)]
            replies = responder.reply_many(prompts) if prompts else []
            active, replies = _drop_failed(active, replies, progress, "model under test",
                                           keep=[prompts, users])
            judgements = _gather([score_reply(llm.chat, p, h, r, logprobs=e.judge_logprobs)
                                  for p, h, r in zip(active, prompts, replies)])
            active, judgements = _drop_failed(active, judgements, progress, "judge",
                                              keep=[users, replies])
            records = [_record(spec.name, p, turn, u, r, j)
                       for p, u, r, j in zip(active, users, replies, judgements)]
            append_records(params.layout.eval_records(spec.name), records)
            for p, record in zip(active, records):
                done[str(p["id"])][turn] = record
            progress.turns_run += len(records)
            bar.update(len(records))
    finally:
        bar.close()
        responder.close()
    return progress


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


def _record(model: str, persona: dict[str, Any], turn: int, user: str, reply: str,
            judgement: Judgement) -> Record:
    record: Record = {"model": model, "persona_id": str(persona["id"]), "turn": turn,
                      "user": user, "reply": reply, "score": judgement.score,
                      "raw_judgement": judgement.raw, "judge_attempts": judgement.attempts}
    if judgement.expected is not None:
        record["expected_score"] = judgement.expected
    return record


@dataclass
class EvaluationSummary:
    """What stage 5 computed (`metrics`, as written to metrics.json; see `aloe.metrics`) and
    what this call did per model (`progress`)."""

    metrics: dict[str, Any]
    progress: dict[str, ModelProgress]

    def table(self) -> pd.DataFrame:
        """Per model: turns found finished, turns run now."""
        return pd.DataFrame({name: {"turns_before": p.turns_before, "turns_run": p.turns_run}
                             for name, p in self.progress.items()}).T


def run_stage(params: Params) -> EvaluationSummary:
    """Evaluate every model of `evaluation.models` on the benchmark and write metrics.json.

    Checks every adapter that is still needed before any work; raises IncompleteStageError at
    the end when more than `evaluation.max_failed_share` of the benchmark conversations (model
    x persona) were cut short by failed requests (the finished turns are recorded: a rerun
    resumes only those).
    """
    e = params.evaluation
    personas = benchmark_personas(params)
    pending = [spec for spec in e.models if remaining_turns(params, spec, personas) > 0]
    for spec in pending:
        if not spec.base_url:
            adapter_path(params, spec)  # fail now, not after hours of other models
    progress: dict[str, ModelProgress] = {}
    with open_llm(params, "evaluate") as llm:
        for spec in e.models:
            progress[spec.name] = evaluate_model(params, llm, spec, personas)
    lost = [(f"model '{name}' persona {persona}", reason) for name, p in progress.items()
            for persona, reason in p.failed.items()]
    check_lost_items("benchmark conversations (model x persona)", lost,
                     len(e.models) * len(personas), e.max_failed_share,
                     "evaluation.max_failed_share")
    summary = compute_metrics(params, load_records(params, personas))
    write_json(params.layout.metrics, summary)
    return EvaluationSummary(summary, progress)


def compute_metrics(params: Params, records: list[Record]) -> dict[str, Any]:
    """metrics.json's content from evaluation records, with the run's bootstrap settings."""
    e = params.evaluation
    by_model: dict[str, list[Record]] = {}
    for record in records:
        by_model.setdefault(str(record["model"]), []).append(record)
    return metrics.summarise(by_model, n_boot=e.bootstrap_samples, confidence=e.confidence,
                             seed=params.run.seed, models=[m.name for m in e.models])


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
    by_model = {m: {(str(r["persona_id"]), int(r["turn"])): r
                    for r in read_records(params.layout.eval_records(m))} for m in models}
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
