"""Stage 5: the ALOE benchmark. Each model under test talks with every benchmark persona for K
turns; a simulated user (the same role-play as stage 2) writes each user message, the model
replies, and the judge scores the reply 1-5 for how well it fits that person.

What this adds to the released evaluation: every model of a run in one pass (the base model,
this run's SFT and DPO adapters, any Hugging Face model with an optional adapter, or a model
behind an OpenAI-compatible endpoint); in-process replies generated in batches, all the
benchmark conversations of a turn at once (left padding, each conversation through its own chat
template); judge replies read robustly (`parse_score`), re-asked once when unreadable and then
recorded as missing, never guessed; and a stage that resumes per (model, persona, turn).

Records: `RUN/eval/MODEL.jsonl`, one per (persona, turn), appended when a turn of all the
conversations is finished: `{"model", "persona_id", "turn", "user", "reply", "score",
"raw_judgement", "judge_attempts"}`, plus `expected_score` when the judge's backend returns
token log-probabilities. Metrics: `RUN/metrics.json` (see `aloe.metrics`).

A model whose adapter folder is missing stops the stage before any work, with an error naming
the folder (for "sft"/"dpo": run stages 3-4 first, or drop the model from `evaluation.models`):
a run that silently skipped a model would publish a comparison that is not the one asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from aloe import metrics
from aloe.config import EvalModelSpec, Params, RoleConfig, load_params, resolve_path
from aloe.llm import LLM, LLMError, open_llm, run_sync
from aloe.personas import load_aloe_benchmark, read_text_pool
from aloe.prompts import render
from aloe.records import append_records, read_records

__all__ = ["EvaluationError", "load_aloe_benchmark", "benchmark_personas", "parse_score",
           "expected_score", "judge_reply", "InProcessResponder", "EndpointResponder",
           "evaluate_model", "run_stage", "transcripts", "eval_path"]

Message = dict[str, str]
Record = dict[str, Any]
RUN_ADAPTERS = ("sft", "dpo")
JUDGE_REASK_SAMPLE = 1  # the cache's sample index of the one re-ask of an unreadable judgement


class EvaluationError(RuntimeError):
    """The stage cannot run (a missing benchmark or adapter) or conversations were cut short."""


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
        personas = load_aloe_benchmark(read_text_pool(_path_or_url(e.aloe_profiles)),
                                       read_text_pool(_path_or_url(e.aloe_personalities)))
    else:
        path = params.run_dir / "benchmark.jsonl"
        if not path.exists():
            raise EvaluationError(f"no benchmark personas at {path}: run stage 1 (personas) "
                                  "first, or set evaluation.benchmark: aloe")
        personas = read_records(path)
    if not personas:
        raise EvaluationError(f"the benchmark ({e.benchmark}) holds no personas")
    return personas[: e.limit] if e.limit else personas


def _path_or_url(value: str) -> str:
    return value if value.startswith(("http://", "https://")) else str(resolve_path(value))


# ------------------------------------------------------------------------------------------
# Reading the judge
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


# ------------------------------------------------------------------------------------------
# The judge
# ------------------------------------------------------------------------------------------
@dataclass
class Judgement:
    score: int | None
    raw: str  # the judge's last answer (the re-ask's when it was asked twice)
    attempts: int
    expected: float | None = None


def _transcript(history: Sequence[Message]) -> str:
    """The chat as the judge reads it: "User:" and "Assistant:" lines."""
    speaker = {"user": "User", "assistant": "Assistant"}
    return "\n".join(f"{speaker.get(m['role'], m['role'])}: {m['content'].strip()}"
                     for m in history)


def judge_messages(persona: dict[str, Any], history: Sequence[Message],
                   reply: str) -> list[Message]:
    """The judge's request: the full persona, the chat up to the user's message, the reply."""
    prompt = render("judge_score", profile=persona["profile"],
                    personality=persona["personality"], transcript=_transcript(history),
                    reply=reply.strip() or "(an empty reply)")
    return [{"role": "user", "content": prompt}]


async def judge_reply(llm: LLM, persona: dict[str, Any], history: Sequence[Message], reply: str,
                      *, logprobs: bool = False) -> Judgement:
    """Score one reply 1-5; an unreadable answer is re-asked once, then recorded as missing.

    The re-ask continues the judge's own chat (its answer, then a request for the digit alone),
    so it differs from the first request even when the judge decodes greedily.
    """
    messages = judge_messages(persona, history, reply)
    first = await llm.chat("judge", messages, logprobs=logprobs)
    score = parse_score(first.text)
    if score is not None:
        return Judgement(score, first.text, 1, expected_score(first.logprobs, score))
    again = messages + [{"role": "assistant", "content": first.text},
                        {"role": "user", "content": render("judge_score_reask")}]
    second = await llm.chat("judge", again, sample=JUDGE_REASK_SAMPLE, logprobs=logprobs)
    score = parse_score(second.text)
    return Judgement(score, second.text, 2, expected_score(second.logprobs, score))


# ------------------------------------------------------------------------------------------
# Models under test
# ------------------------------------------------------------------------------------------
class Responder(Protocol):
    """Writes the next assistant reply of many conversations at once."""

    def reply_many(self, histories: Sequence[Sequence[Message]]) -> list[str | BaseException]: ...

    def close(self) -> None: ...


def _device_and_dtype() -> tuple[str, Any]:
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


class InProcessResponder:
    """A Hugging Face causal LM (plus an optional PEFT adapter) answering in batches.

    All conversations of a turn go through `generate` together, `batch_size` at a time, sorted
    by length so that a batch holds prompts of similar length; each conversation is rendered by
    the tokenizer's own chat template, and prompts are padded on the left so that every row's
    reply starts right after its own last token.
    """

    def __init__(self, model: str, adapter: str | Path | None = None, *, batch_size: int = 16,
                 max_new_tokens: int = 96, temperature: float = 0.7, seed: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device, dtype = _device_and_dtype()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype,
                                                          device_map=self.device)
        if adapter is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter))
        self.model.eval()
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.temperature, self.seed = temperature, seed
        self._torch = torch

    def prompts(self, histories: Sequence[Sequence[Message]]) -> list[str]:
        return [self.tokenizer.apply_chat_template(list(h), tokenize=False,
                                                   add_generation_prompt=True) for h in histories]

    def _sampling(self) -> dict[str, Any]:
        if self.temperature <= 0:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature}

    def reply_many(self, histories: Sequence[Sequence[Message]], *,
                   batch_size: int | None = None) -> list[str | BaseException]:
        texts = self.prompts(histories)
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False).input_ids]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        size = batch_size or self.batch_size
        replies: list[str | BaseException] = [""] * len(texts)
        self._torch.manual_seed(self.seed)
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            batch = self.tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True,
                                   add_special_tokens=False).to(self.device)
            with self._torch.inference_mode():
                output = self.model.generate(**batch, max_new_tokens=self.max_new_tokens,
                                             pad_token_id=self.tokenizer.pad_token_id,
                                             **self._sampling())
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            for i, text in zip(rows, self.tokenizer.batch_decode(new_tokens,
                                                                 skip_special_tokens=True)):
                replies[i] = text.strip()
        return replies

    def close(self) -> None:
        del self.model
        gc.collect()
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


class EndpointResponder:
    """A model behind an OpenAI-compatible endpoint, through the shared client (cache, retries,
    bounded concurrency, usage ledger under its own stage name `evaluate-NAME`)."""

    def __init__(self, params: Params, spec: EvalModelSpec):
        e = params.evaluation
        model = spec.model or ("local" if spec.base_url == "local" else None)
        if model is None:
            raise EvaluationError(f"evaluation model '{spec.name}': an endpoint needs `model` "
                                  "(the name the server knows it by)")
        served = params.model_copy(deep=True)
        served.roles.assistant = RoleConfig(
            model=model, base_url=spec.base_url or "local", api_key_env=spec.api_key_env,
            temperature=e.temperature, max_tokens=e.max_new_tokens, concurrency=e.batch_size)
        self.llm = LLM(served, f"evaluate-{spec.name}")

    def reply_many(self, histories: Sequence[Sequence[Message]]) -> list[str | BaseException]:
        results = run_sync(self.llm.chat_many("assistant", [list(h) for h in histories]))
        return [r if isinstance(r, BaseException) else r.text.strip() for r in results]

    def close(self) -> None:
        self.llm.save_ledger()
        self.llm.cache.close()


def adapter_path(params: Params, spec: EvalModelSpec) -> Path | None:
    """The adapter folder of an in-process model; raises naming the folder when it is missing."""
    if not spec.adapter:
        return None
    if spec.adapter in RUN_ADAPTERS:
        path = params.run_dir / "adapters" / spec.adapter
        hint = (f"run stage {3 if spec.adapter == 'sft' else 4} ({spec.adapter}) first, or "
                f"remove model '{spec.name}' from evaluation.models")
    else:
        path, hint = resolve_path(spec.adapter), "check evaluation.models"
    if not (path / "adapter_config.json").exists():
        raise EvaluationError(f"model '{spec.name}': no PEFT adapter at {path} "
                              f"(no adapter_config.json); {hint}")
    return path


def base_model(params: Params, spec: EvalModelSpec) -> str:
    """The model an in-process spec loads: its own `model`, else the training base model."""
    from aloe.local_model import policy_base_model

    if spec.model:
        local = resolve_path(spec.model)
        return str(local) if local.exists() else spec.model
    return policy_base_model(params, "dpo" if spec.adapter == "dpo" else "sft")


def open_responder(params: Params, spec: EvalModelSpec) -> Responder:
    e = params.evaluation
    if spec.base_url:
        return EndpointResponder(params, spec)
    seed = int(hashlib.sha256(f"{params.run.seed}:{spec.name}".encode()).hexdigest()[:8], 16)
    return InProcessResponder(base_model(params, spec), adapter_path(params, spec),
                              batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
                              temperature=e.temperature, seed=seed)


# ------------------------------------------------------------------------------------------
# The protocol
# ------------------------------------------------------------------------------------------
def eval_path(params: Params, model: str) -> Path:
    return params.run_dir / "eval" / f"{model}.jsonl"


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
    for record in read_records(eval_path(params, spec.name)):
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
    from aloe.simulator import simulate_user

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
            judgements = _gather([judge_reply(llm, p, h, r, logprobs=e.judge_logprobs)
                                  for p, h, r in zip(active, prompts, replies)])
            active, judgements = _drop_failed(active, judgements, progress, "judge",
                                              keep=[users, replies])
            records = [_record(spec.name, p, turn, u, r, j)
                       for p, u, r, j in zip(active, users, replies, judgements)]
            append_records(eval_path(params, spec.name), records)
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


def run_stage(params: Params) -> dict[str, Any]:
    """Evaluate every model of `evaluation.models` on the benchmark and write metrics.json.

    Returns the metrics summary (see `aloe.metrics.summarise`) with a `progress` entry per
    model: turns found finished, turns run now. Checks every adapter that is still needed
    before any work; raises EvaluationError at the end when conversations were cut short by
    failed requests (the rest is recorded: rerun the stage to finish them).
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
    failed = {name: p.failed for name, p in progress.items() if p.failed}
    if failed:
        lines = [f"{name}: {len(f)} conversation(s), e.g. persona {next(iter(f))}: "
                 f"{next(iter(f.values()))}" for name, f in failed.items()]
        raise EvaluationError("conversations stopped early by failed requests (the finished "
                              "turns are recorded; rerun the stage to resume): "
                              + "; ".join(lines))
    records = load_records(params, personas)
    summary = metrics.summarise(records, n_boot=e.bootstrap_samples, confidence=e.confidence,
                                seed=params.run.seed, models=[m.name for m in e.models],
                                path=params.run_dir / "metrics.json")
    summary["progress"] = {name: {"turns_before": p.turns_before, "turns_run": p.turns_run}
                           for name, p in progress.items()}
    return summary


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
    import pandas as pd

    by_model = {m: {(str(r["persona_id"]), int(r["turn"])): r
                    for r in read_records(eval_path(params, m))} for m in models}
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


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m aloe.evaluation PARAMS [--limit N]`: run stage 5 outside the notebook."""
    parser = argparse.ArgumentParser(prog="python -m aloe.evaluation", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("params", help="parameter file (YAML)")
    parser.add_argument("--limit", type=int, help="evaluate on the first N benchmark personas")
    parser.add_argument("--benchmark", choices=["run", "aloe"], help="override the benchmark")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.limit is not None:
        params.evaluation.limit = args.limit
    if args.benchmark:
        params.evaluation.benchmark = args.benchmark
    summary = run_stage(params)
    print(metrics.summary_table(summary).to_string())
    print(f"metrics: {params.run_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
