"""`aloe plan`: what a run will spend, before it spends anything. Offline: no request, no key,
no local server, no model loaded.

Per stage and role it counts requests, prompt and completion tokens and cost, each twice:

- **requests**: first attempts with an empty cache, from the parameters, as the stages send
  them. Stage 0: one probe per role (and per model under test behind an endpoint). Stage 1: up
  to `max_rounds x calls_per_round` per pool that is generated: the two training pools (unless
  imported as the whole pool), and the two benchmark pools only when the evaluation uses the
  run's own benchmark (`evaluation.benchmark: run`).
  Stage 2: `n_conversations x turns x (user 1 + inducer 1 + assistant 2 + judge votes)`, two
  votes for `both_orders` and `logprobs`, one for the one-vote rules. Stage 5: `benchmark
  personas x turns x models x (user 1 + judge 1)`, plus one reply per turn for a model under
  test behind an endpoint. Re-asks (an unreadable judge or inducer answer asked again, an
  empty simulated user message drawn again) and retries are not first attempts.
- **ceiling**: a true upper bound under the counting rules below: every completion at its
  `max_tokens`, every history at its longest (all earlier turns at their `max_tokens`), every
  persona text at the longest it can be, and every re-ask taken (shown apart as the ceiling's
  `allowance`). Retries of failed requests are not counted: a failed request returns no
  completion to bill.
- **forecast**: the same requests with typical lengths: each role's mean completion measured
  in the usage ledgers of this run's folder or of other runs under `run.output_dir` with the
  same model (the response cache holds token counts too but not which role asked, so the
  ledgers, which do, are read), else the documented defaults of `DEFAULT_COMPLETION`; persona
  texts at the mean of the run's personas, else of the seed and imported pools. Each role
  names its source.

Prompts are the real templates (`aloe/prompts/`), rendered through the same helpers the stages
use (`simulator_messages`, `few_shot`, `preference_messages`, the protocol's
`judge_messages`) with placeholders for the variable parts. Counting rule (no tokenizer is
loaded): fixed template text and texts read from files at `CEILING_CHARS_PER_TOKEN` (3; the
ceiling) or `FORECAST_CHARS_PER_TOKEN` (4; English prose with GPT tokenizers) characters a token,
plus `MESSAGE_TOKENS` a message and `REQUEST_TOKENS` a request for the chat format (the ceiling's
cover chat templates that add a default system prompt of their own); a generated
text shown again (a user message in a later prompt) counts the tokens it was generated with
(the same tokenizer, or one as efficient). tests/test_plan.py checks the ceiling rule against
the embedded model's real tokenizer.

GPU hours for training and evaluation come from tokens/s per GPU class in `gpu_figures.json`
(scaled by the policy's parameter count), written by `scripts/gpu_check.py --from-report`: the
class it ran on is measured, the others are datasheet estimates calibrated by it, and the plan
says which.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from aloe import protocols
from aloe.budget import CHARS_PER_TOKEN_AT_MOST
from aloe.chat import Message
from aloe.config import EvalModelSpec, Params, TrainingConfig, is_url, resolve_path
from aloe.conversation_prompts import (
    INDUCER_REASK,
    continued_chat,
    inducer_messages,
    reply_messages,
)
from aloe.judges import PREFERENCE_REASK, contradiction_prompt, preference_messages
from aloe.layout import TRAINING_STAGES
from aloe.pools import KINDS, MAX_ITEM_CHARS, builtin_seeds, kind_plural, read_text_pool
from aloe.prompts import render
from aloe.records import DataError, read_records
from aloe.simulator import SIMULATOR_ATTEMPTS, simulator_messages

CEILING_CHARS_PER_TOKEN = CHARS_PER_TOKEN_AT_MOST  # the budget's reservation uses the same
FORECAST_CHARS_PER_TOKEN = 4.0
# The chat format around the text: role markers around each message (OpenAI: 3-4 tokens;
# ChatML and Llama 3 templates: 5) and a request's reply primer (3). The ceiling also allows for
# chat templates that add a default system prompt of their own (SmolLM2: ~20 tokens).
MESSAGE_TOKENS = {"ceiling": 6, "forecast": 4}
REQUEST_TOKENS = {"ceiling": 32, "forecast": 3}
PROBE_MAX_TOKENS = 4  # stage 0's one-word probe of each backend
JUDGE_VOTES = {"both_orders": 2, "logprobs": 2}  # any other rule asks one vote
ALOE_BENCHMARK = (20, 5)  # the official benchmark: 20 profiles x the first 5 personalities
ALOE_BENCHMARK_PERSONALITIES = 5
# Forecast defaults where no ledger measured a role (tokens, capped at the role's max_tokens):
# what the templates ask for. The generator writes `generate_n` items of a seed's length.
DEFAULT_COMPLETION = {
    "user": 40,  # "one to three short sentences"
    "inducer": 40,  # two short lines
    "assistant": 60,  # "at most three sentences"
    "judge": 1,  # one digit
    "second_judge": 1,
}
DEFAULT_POLICY_SHARE = 0.8  # a model under test, told no length, fills most of max_new_tokens
DEFAULT_ADMISSION = 0.2  # share of generated persona candidates the novelty filter admits
DEFAULT_DECIDED = {"both_orders": 0.7, "logprobs": 0.9}  # turns that become examples; else 0.95
TRAINING_TEMPLATE_TOKENS = 5  # a chat template's markers around each message

# Disk, for the readiness check: what a run folder holds besides the base model download.
CONVERSATION_TURN_BYTES = 8_000  # one turn of a tree: user, hint, two replies, verdict
EVAL_TURN_BYTES = 2_000
LORA_PARAMS_PER_RANK = 3.27e-4  # LoRA on all linear layers: ~0.033% of the base per rank
CHECKPOINT_BYTES_PER_LORA_PARAM = 14  # fp32 adapter + optimiser state + gradients


# ==========================================================================================
# Counting tokens of rendered prompts
# ==========================================================================================
_SLOT = re.compile("\ue000(\\d+)\ue001")


class PromptCounter:
    """Renders prompts with placeholders for their variable parts and counts their tokens:
    each placeholder at its budget in tokens, the fixed text by the characters-a-token rule."""

    def __init__(self, chars_per_token: float, message_tokens: int, request_tokens: int):
        self.chars_per_token = chars_per_token
        self.message_tokens, self.request_tokens = message_tokens, request_tokens
        self._budgets: list[float] = []

    def slot(self, tokens: float) -> str:
        """A placeholder worth `tokens` tokens, to put where a variable text goes."""
        self._budgets.append(tokens)
        return f"\ue000{len(self._budgets) - 1}\ue001"

    def text(self, chars: float) -> float:
        return chars / self.chars_per_token

    def tokens(self, messages: list[Message]) -> float:
        total = float(self.request_tokens)
        for message in messages:
            content = message["content"]
            total += self.message_tokens + sum(self._budgets[int(m[1])]
                                               for m in _SLOT.finditer(content))
            total += self.text(len(_SLOT.sub("", content)))
        return total


# ==========================================================================================
# Lengths: the ceiling's and the forecast's
# ==========================================================================================
@dataclass
class Lengths:
    """Token lengths of the variable parts of every prompt, for one of ceiling or forecast."""

    kind: str  # "ceiling" or "forecast"
    chars_per_token: float
    completion: dict[str, float]  # role -> one completion; "policy": a model under test
    persona: dict[str, float]  # training personas: profile, personality
    benchmark: dict[str, float]  # benchmark personas: profile, personality
    pool_item: dict[str, float]  # an item of a pool shown to the generator, per kind
    sources: dict[str, str] = field(default_factory=dict)  # role -> where its length is from

    def counter(self) -> PromptCounter:
        return PromptCounter(self.chars_per_token, MESSAGE_TOKENS[self.kind],
                             REQUEST_TOKENS[self.kind])


def _texts(source: str | None) -> list[str] | None:
    """The texts of a pool file, or None when it cannot be read offline (a URL, a bad file)."""
    if not source or is_url(source):
        return None
    try:
        return read_text_pool(source)
    except DataError:
        return None


def _seed_texts(params: Params, kind: str) -> list[str]:
    config = params.personas
    if config.seeds == "builtin":
        return builtin_seeds(kind)
    return _texts(str(resolve_path(config.seeds) / f"{kind_plural(kind)}.jsonl")) or []


def _imported(params: Params, kind: str) -> str | None:
    return getattr(params.personas, f"import_{kind_plural(kind)}")


def pool_grows(params: Params, kind: str) -> bool:
    """A training pool is generated unless an import is the whole pool."""
    return not (_imported(params, kind) and params.personas.import_as == "pool")


def _initial_texts(params: Params, kind: str) -> list[str]:
    """What a training pool starts from (readable offline): seeds and imports."""
    texts = [] if not pool_grows(params, kind) else _seed_texts(params, kind)
    return texts + (_texts(_imported(params, kind)) or [])


def generated_item_cap(params: Params) -> float:
    """The most tokens a generated pool item can hold: one generator reply, and at most
    MAX_ITEM_CHARS characters (stage 1 drops longer ones)."""
    return min(params.roles.generator.max_tokens, MAX_ITEM_CHARS / CEILING_CHARS_PER_TOKEN)


def benchmark_uses_generated_pools(params: Params) -> bool:
    """Stage 1 grows a benchmark only for a run that evaluates on its own (`benchmark: run`)."""
    return params.evaluation.benchmark == "run"


def _benchmark_files(params: Params) -> tuple[str | None, str | None] | None:
    """The official files the benchmark is read from, or None when it is generated."""
    if params.evaluation.benchmark == "aloe":
        return params.evaluation.aloe_profiles, params.evaluation.aloe_personalities
    return None


def benchmark_size(params: Params) -> int:
    """How many benchmark personas stage 5 talks with (after `evaluation.limit`)."""
    files = _benchmark_files(params)
    m = (ALOE_BENCHMARK_PERSONALITIES if params.evaluation.benchmark == "aloe"
         else params.personas.benchmark_personalities)
    if files is None:
        size = params.personas.benchmark_profiles * params.personas.benchmark_personalities
    else:
        profiles, personalities = (_texts(files[0]), _texts(files[1]))
        size = (len(profiles) if profiles is not None else ALOE_BENCHMARK[0]) * min(
            m, len(personalities) if personalities is not None else ALOE_BENCHMARK[1])
    limit = params.evaluation.limit
    return min(size, limit) if limit else size


def _longest(texts: list[str] | None, fallback: float) -> float:
    return max((len(t) / CEILING_CHARS_PER_TOKEN for t in texts), default=0.0) \
        if texts else fallback


def _mean(texts: list[str] | None, fallback: float) -> float:
    return sum(len(t) for t in texts) / len(texts) / FORECAST_CHARS_PER_TOKEN if texts \
        else fallback


def _ceiling_personas(params: Params) -> tuple[dict[str, float], dict[str, float]]:
    """The longest a training and a benchmark persona text can be, per kind."""
    cap = generated_item_cap(params)
    unknown = MAX_ITEM_CHARS / CEILING_CHARS_PER_TOKEN  # an official file not readable offline
    training, bench = {}, {}
    files = _benchmark_files(params)
    for index, kind in enumerate(KINDS):
        longest = _longest(_initial_texts(params, kind), 0.0)
        training[kind] = max(longest, cap) if pool_grows(params, kind) else longest
        bench[kind] = cap if files is None else _longest(_texts(files[index]), unknown)
    return training, bench


def _forecast_personas(params: Params) -> tuple[dict[str, float], dict[str, float]]:
    """Typical persona texts: the run's own when it has them, else the seeds and imports."""
    training, bench = {}, {}
    written = read_records(params.layout.personas)
    written_bench = read_records(params.layout.benchmark)
    files = _benchmark_files(params)
    for index, kind in enumerate(KINDS):
        base = _mean(_initial_texts(params, kind), 60.0)
        training[kind] = _mean([p[kind] for p in written], base) if written else base
        fallback = base if files is None else _mean(_texts(files[index]), base)
        bench[kind] = _mean([p[kind] for p in written_bench], fallback) if written_bench \
            else fallback
    return training, bench


def ceiling_lengths(params: Params) -> Lengths:
    roles = params.roles
    completion = {role: float(config.max_tokens) for role, config in roles.as_mapping().items()}
    completion["policy"] = float(params.evaluation.max_new_tokens)
    training, bench = _ceiling_personas(params)
    items = {kind: training[kind] for kind in KINDS}
    sources = {role: "max_tokens" for role in completion}
    return Lengths("ceiling", CEILING_CHARS_PER_TOKEN, completion, training, bench, items,
                   sources)


def forecast_lengths(params: Params, measured: dict[tuple[str, str], Measured] | None = None
                     ) -> Lengths:
    measured = measured_completions(params) if measured is None else measured
    training, bench = _forecast_personas(params)
    completion: dict[str, float] = {}
    sources: dict[str, str] = {}
    for role, config in params.roles.as_mapping().items():
        default = (DEFAULT_COMPLETION.get(role) if role != "generator"
                   else params.personas.generate_n
                   * (training["profile"] + training["personality"]) / 2)
        completion[role], sources[role] = _typical(measured, role, config.model,
                                                   config.max_tokens, float(default or 0))
    max_new = params.evaluation.max_new_tokens
    completion["policy"], sources["policy"] = DEFAULT_POLICY_SHARE * max_new, (
        f"default: {DEFAULT_POLICY_SHARE:.0%} of max_new_tokens")
    items = {kind: training[kind] for kind in KINDS}
    return Lengths("forecast", FORECAST_CHARS_PER_TOKEN, completion, training, bench, items,
                   sources)


# ==========================================================================================
# Measured completion lengths (the usage ledgers)
# ==========================================================================================
@dataclass
class Measured:
    requests: int = 0
    completion_tokens: int = 0
    runs: set[str] = field(default_factory=set)

    @property
    def mean(self) -> float:
        return self.completion_tokens / self.requests if self.requests else 0.0


def _ledger_entries(params: Params) -> Iterator[tuple[str, dict[str, Any]]]:
    """(run name, entry) for every stage session in the ledgers under run.output_dir."""
    from aloe.llm.ledger import load_usage_history

    layout = params.layout
    for entry in load_usage_history(layout):
        yield layout.run_dir.name, entry
    parent = layout.run_dir.parent
    for other in sorted(parent.glob("*/usage/history.jsonl")) if parent.is_dir() else []:
        run = other.parent.parent.name
        if run != layout.run_dir.name:
            try:
                yield from ((run, entry) for entry in read_records(other))
            except DataError:
                continue


def measured_completions(params: Params) -> dict[tuple[str, str], Measured]:
    """Completion tokens per request, by (role, model), over every finished request the
    ledgers under run.output_dir recorded (the preflight's probes left out)."""
    found: dict[tuple[str, str], Measured] = {}
    for run, entry in _ledger_entries(params):
        if entry.get("stage") == "preflight":
            continue
        for role, usage in (entry.get("roles") or {}).items():
            if usage.get("requests", 0) > 0 and usage.get("completion_tokens", 0) > 0:
                item = found.setdefault((role, str(usage.get("model"))), Measured())
                item.requests += int(usage["requests"])
                item.completion_tokens += int(usage["completion_tokens"])
                item.runs.add(run)
    return found


def _model_matches(configured: str, recorded: str) -> bool:
    """A ledger names the served model; `local` roles record the served folder's path."""
    return recorded == configured or (configured == "local" and "/" in recorded)


def _typical(measured: dict[tuple[str, str], Measured], role: str, model: str,
             max_tokens: int, default: float) -> tuple[float, str]:
    hits = [m for (r, recorded), m in measured.items() if r == role and
            _model_matches(model, recorded)]
    requests = sum(m.requests for m in hits)
    if requests:
        mean = sum(m.completion_tokens for m in hits) / requests
        runs = sorted(set().union(*(m.runs for m in hits)))
        return min(mean, max_tokens), (f"measured: {requests:,} requests of {model} "
                                       f"in run(s) {', '.join(runs)}")
    return min(default, max_tokens), "default (no measured requests)"


# ==========================================================================================
# Requests per stage
# ==========================================================================================
@dataclass
class Batch:
    """`count` requests of one role sharing a prompt length and a completion length."""

    role: str
    count: float
    prompt: float
    completion: float
    reask: bool = False  # part of the ceiling's allowance, not a first attempt


def _history(counter: PromptCounter, turns: int, user: float, reply: float) -> list[Message]:
    messages: list[Message] = []
    for _ in range(turns):
        messages += [{"role": "user", "content": counter.slot(user)},
                     {"role": "assistant", "content": counter.slot(reply)}]
    return messages


def _persona(counter: PromptCounter, lengths: dict[str, float]) -> dict[str, str]:
    return {kind: counter.slot(lengths[kind]) for kind in KINDS}


def _reasked(counter: PromptCounter, messages: list[Message], answer: float,
             template: str) -> list[Message]:
    """A request asked again in the same chat: its answer, then the re-ask template."""
    return messages + [{"role": "assistant", "content": counter.slot(answer)},
                       {"role": "user", "content": render(template)}]


def preflight_batches(params: Params, lengths: Lengths) -> list[Batch]:
    counter = lengths.counter()
    probe = counter.tokens([{"role": "user", "content": render("probe_ready")}])
    batches = [Batch(role, 1, probe, PROBE_MAX_TOKENS) for role in params.roles.as_mapping()]
    batches += [Batch(policy_role(spec), 1, probe, PROBE_MAX_TOKENS)
                for spec in params.evaluation.models if spec.base_url]
    return batches


def generated_pools(params: Params) -> list[tuple[str, str]]:
    """(pool name, kind) of every pool stage 1 generates for this run."""
    pools = [(kind_plural(kind), kind) for kind in KINDS if pool_grows(params, kind)]
    if benchmark_uses_generated_pools(params):
        pools += [(f"benchmark_{kind_plural(kind)}", kind) for kind in KINDS]
    return pools


def personas_batches(params: Params, lengths: Lengths, forecast: bool = False) -> list[Batch]:
    """Up to max_rounds x calls_per_round generator calls per generated pool (the forecast:
    the rounds its target needs at the measured or default admission rate)."""
    p = params.personas
    batches = []
    for pool, kind in generated_pools(params):
        counter = lengths.counter()
        examples = "\n".join(counter.slot(lengths.pool_item[kind]) for _ in range(p.sample_k))
        prompt = counter.tokens([{"role": "user", "content": render(
            f"generate_{kind_plural(kind)}", n=p.generate_n, examples=examples)}])
        rounds = _forecast_rounds(params, pool, kind) if forecast else p.max_rounds
        batches.append(Batch("generator", rounds * p.calls_per_round, prompt,
                             lengths.completion["generator"]))
    return batches


def _pool_target(params: Params, pool: str, kind: str) -> tuple[int, int]:
    """A pool's target size and the items it starts with."""
    p = params.personas
    if pool.startswith("benchmark_"):
        return (p.benchmark_profiles if kind == "profile" else p.benchmark_personalities), 0
    return getattr(p, f"{kind_plural(kind)}_target"), len(_initial_texts(params, kind))


def _forecast_rounds(params: Params, pool: str, kind: str) -> int:
    p = params.personas
    target, initial = _pool_target(params, pool, kind)
    logged = [r for r in read_records(params.layout.persona_rounds) if r.get("pool") == pool]
    candidates = sum(r.get("candidates", 0) for r in logged)
    rate = sum(r.get("admitted", 0) for r in logged) / candidates if candidates \
        else DEFAULT_ADMISSION
    per_round = p.calls_per_round * p.generate_n * max(rate, 1e-3)
    return min(p.max_rounds, math.ceil(max(target - initial, 0) / per_round))


def conversations_batches(params: Params, lengths: Lengths) -> list[Batch]:
    """Every turn of every conversation: the user, the inducer, two assistant replies and the
    judge's votes, each with the history before it at its length and in the run's prompt style
    (the same message builders as the stage); re-asks apart."""
    c = params.conversations
    votes = JUDGE_VOTES.get(c.judge_rule, 1)
    style = c.prompt_style
    n = c.n_conversations
    user, reply = lengths.completion["user"], lengths.completion["assistant"]
    inducer, judge = lengths.completion["inducer"], lengths.completion["judge"]
    batches = []
    for turn in range(1, c.turns + 1):
        counter = lengths.counter()
        persona = _persona(counter, lengths.persona)
        earlier = [{"turn": k, "user": counter.slot(user), "hinted": counter.slot(reply),
                    "plain": counter.slot(reply), "continued_with": "hinted",
                    "inferred": {"raw": counter.slot(inducer), "profile": counter.slot(inducer),
                                 "personality": counter.slot(0)}}
                   for k in range(1, turn)]
        before = continued_chat(earlier)
        said = counter.slot(user)
        history = before + [{"role": "user", "content": said}]
        asking_user = counter.tokens(simulator_messages(persona, before, style=style))
        induce = inducer_messages(persona, history, style)
        inferred = {"raw": counter.slot(inducer), "profile": counter.slot(inducer),
                    "personality": counter.slot(0)}
        judging = preference_messages(persona, history, counter.slot(reply), counter.slot(reply),
                                      style)
        reask_judge = None if c.judge_rule == "hinted_first" else PREFERENCE_REASK[style]
        batches += [
            Batch("user", n, asking_user, user),
            Batch("user", n * (SIMULATOR_ATTEMPTS - 1), asking_user, user, reask=True),
            Batch("inducer", n, counter.tokens(induce), inducer),
            Batch("inducer", n, counter.tokens(
                induce if INDUCER_REASK[style] is None  # drawn again as it is
                else _reasked(counter, induce, inducer, INDUCER_REASK[style])),
                inducer, reask=True),
            Batch("assistant", n, counter.tokens(reply_messages(earlier, said, inferred, style)),
                  reply),
            Batch("assistant", n, counter.tokens(reply_messages(earlier, said, None, style)),
                  reply),
            Batch("judge", n * votes, counter.tokens(judging), judge),
        ]
        if reask_judge is not None:
            batches.append(Batch("judge", n * votes, counter.tokens(
                _reasked(counter, judging, judge, reask_judge)), judge, reask=True))
    return batches


def policy_role(spec: EvalModelSpec) -> str:
    """The plan's name of a model under test behind an endpoint."""
    return f"policy:{spec.name}"


def evaluate_batches(params: Params, lengths: Lengths) -> list[Batch]:
    """Every benchmark persona, turn and model under the run's protocol: the simulated user
    (none for a fixed first message or replayed users), the judge (re-asks apart), a reply
    request per turn for a model under test behind an endpoint; then the side measures that
    are switched on: the inference probe (a reply and a judgement per turn), the simulator
    check (two judgements per turn of a live model), the judge check (one second-judge request
    per sampled reply)."""
    e = params.evaluation
    protocol = protocols.get(e.protocol)
    personas = benchmark_size(params)
    if protocol.n_users is not None:
        personas = min(personas, protocol.n_users)
    where = protocols.sources(params)
    style = protocol.simulator_for(e.prompt_style)
    user, reply, judge = (lengths.completion["user"], lengths.completion["policy"],
                          lengths.completion["judge"])
    batches = []
    for spec in e.models:
        live = where[spec.name].mode == "live"
        for turn in range(1, e.turns + 1):
            counter = lengths.counter()
            persona = _persona(counter, lengths.benchmark)
            before = _history(counter, turn - 1, user, reply)
            history = before + [{"role": "user", "content": counter.slot(user)}]
            answer = counter.slot(reply)
            scoring = protocol.judge_messages(persona, history, answer, e.judge_context)
            if live and not (turn == 1 and protocol.first_message is not None):
                asking = counter.tokens(simulator_messages(persona, before, style=style,
                                                           length_request=False))
                batches += [Batch("user", personas, asking, user),
                            Batch("user", personas * (SIMULATOR_ATTEMPTS - 1), asking, user,
                                  reask=True)]
            batches += [
                Batch("judge", personas, counter.tokens(scoring), judge),
                Batch("judge", personas, counter.tokens(
                    _reasked(counter, scoring, judge, protocol.judge_reask)), judge,
                    reask=True),
            ]
            if spec.base_url:
                batches.append(Batch(policy_role(spec), personas, counter.tokens(history), reply))
            batches += _side_measures(params, spec, counter, persona, history, personas, live,
                                      judge)
    if e.judge_check is not None and params.roles.second_judge is not None:
        counter = lengths.counter()
        persona = _persona(counter, lengths.benchmark)
        history = _history(counter, e.turns - 1, user, reply) + [
            {"role": "user", "content": counter.slot(user)}]
        batches.append(Batch("second_judge", e.judge_check.sample, counter.tokens(
            protocol.judge_messages(persona, history, counter.slot(reply), e.judge_context)),
            judge))
    return batches


def _side_measures(params: Params, spec: EvalModelSpec, counter: PromptCounter,
                   persona: dict[str, str], history: list[Message], personas: int,
                   live: bool, judge: float) -> list[Batch]:
    """One turn's side measures for `personas` conversations: the prompts at their size (a
    judge's long template: the inference probe's statement, the simulator's messages so far);
    `judge` is one judge completion's length."""
    e = params.evaluation
    judged = counter.slot(e.max_new_tokens)
    batches = []
    if e.inference_probe:
        question = [{"role": "user", "content": render("probe_inference")}]
        if spec.base_url:
            batches.append(Batch(policy_role(spec), personas,
                                 counter.tokens(history + question), e.max_new_tokens))
        prompt = render("judge_inference", profile=persona["profile"],
                        personality=persona["personality"], statement=judged)
        batches.append(Batch("judge", personas, counter.tokens(
            [{"role": "user", "content": prompt}]), judge))
    if e.simulator_check and live:
        said = "\n".join(f"- {m['content']}" for m in history if m["role"] == "user")
        for prompt in (render("judge_revealed", profile=persona["profile"],
                              personality=persona["personality"], messages=said),
                       contradiction_prompt(persona, [said, said],
                                            shifted=e.preference_shift is not None)):
            batches.append(Batch("judge", personas, counter.tokens(
                [{"role": "user", "content": prompt}]), judge))
    return batches


def forecast_by_stage(params: Params) -> dict[str, float]:
    """The forecast cost of each stage in US dollars (what `aloe.budget` puts beside the
    actual spend)."""
    by_stage: dict[str, float] = {}
    for role in role_plans(params):
        by_stage[role.stage] = by_stage.get(role.stage, 0.0) + role.forecast.cost_usd
    return by_stage


# ==========================================================================================
# The plan
# ==========================================================================================
@dataclass
class Usage:
    requests: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    cost_usd: float = 0.0

    def add(self, other: Usage) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd

    def to_json(self) -> dict[str, Any]:
        return {"requests": int(round(self.requests)),
                "prompt_tokens": int(math.ceil(self.prompt_tokens)),
                "completion_tokens": int(math.ceil(self.completion_tokens)),
                "cost_usd": round(self.cost_usd, 2)}


@dataclass
class RolePlan:
    """One role in one stage: first attempts, the forecast, the ceiling and its allowance."""

    stage: str
    role: str
    model: str
    requests: int
    forecast: Usage
    ceiling: Usage  # first attempts and re-asks
    allowance: Usage  # the re-asks alone
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests,
                "forecast": {**self.forecast.to_json(), "source": self.source},
                "ceiling": {**self.ceiling.to_json(), "allowance": self.allowance.to_json()}}


def _prices(params: Params, role: str) -> tuple[float, float, str]:
    config = params.roles.as_mapping().get(role)
    if config is None:  # a model under test behind an endpoint: no price configured
        spec = next(s for s in params.evaluation.models if policy_role(s) == role)
        return 0.0, 0.0, spec.model or "local"
    return config.price_input_per_1m, config.price_output_per_1m, config.model


def _usage(batches: list[Batch], price_in: float, price_out: float) -> Usage:
    usage = Usage()
    for b in batches:
        usage.add(Usage(b.count, b.count * b.prompt, b.count * b.completion,
                        b.count * (b.prompt * price_in + b.completion * price_out) / 1e6))
    return usage


BatchMaker = Callable[[Params, Lengths], list[Batch]]


def _stage_makers() -> dict[str, tuple[BatchMaker, BatchMaker]]:
    """Each stage's requests: (ceiling, forecast); they differ only in stage 1's rounds."""
    return {
        "preflight": (preflight_batches, preflight_batches),
        "personas": (personas_batches,
                     lambda p, lengths: personas_batches(p, lengths, forecast=True)),
        "conversations": (conversations_batches, conversations_batches),
        "evaluate": (evaluate_batches, evaluate_batches),
    }


def role_plans(params: Params, forecast: Lengths | None = None) -> list[RolePlan]:
    ceiling = ceiling_lengths(params)
    forecast = forecast or forecast_lengths(params)
    plans = []
    for stage, (make_ceiling, make_forecast) in _stage_makers().items():
        high, typical = make_ceiling(params, ceiling), make_forecast(params, forecast)
        for role in dict.fromkeys(b.role for b in high):
            price_in, price_out, model = _prices(params, role)
            first = [b for b in high if b.role == role and not b.reask]
            again = [b for b in high if b.role == role and b.reask]
            expected = [b for b in typical if b.role == role and not b.reask]
            ceiling_usage = _usage(first + again, price_in, price_out)
            source = (f"a {PROBE_MAX_TOKENS}-token probe" if stage == "preflight"
                      else forecast.sources.get(role.split(":")[0], ""))
            plans.append(RolePlan(stage, role, model, int(round(sum(b.count for b in first))),
                                  _usage(expected, price_in, price_out), ceiling_usage,
                                  _usage(again, price_in, price_out), source))
    return plans


@dataclass
class Plan:
    params_source: str
    roles: list[RolePlan]
    gpu: dict[str, Any]
    disk_gb: float

    def total(self) -> dict[str, Any]:
        forecast, ceiling, allowance = Usage(), Usage(), Usage()
        for role in self.roles:
            forecast.add(role.forecast)
            ceiling.add(role.ceiling)
            allowance.add(role.allowance)
        return {"requests": sum(r.requests for r in self.roles), "forecast": forecast.to_json(),
                "ceiling": {**ceiling.to_json(), "allowance": allowance.to_json()}}

    def to_json(self) -> dict[str, Any]:
        stages: dict[str, Any] = {}
        for role in self.roles:
            stages.setdefault(role.stage, {"roles": {}})["roles"][role.role] = role.to_json()
        return {"stages": stages, "total": self.total(), "gpu_hours": self.gpu}

    def table(self) -> pd.DataFrame:
        """One row per stage and role: requests, then forecast and ceiling side by side."""
        rows = []
        for r in self.roles:
            f, c = r.forecast.to_json(), r.ceiling.to_json()
            rows.append({"stage": r.stage, "role": r.role, "model": r.model,
                         "requests": r.requests, "forecast prompt": f["prompt_tokens"],
                         "forecast completion": f["completion_tokens"],
                         "forecast $": f["cost_usd"], "ceiling prompt": c["prompt_tokens"],
                         "ceiling completion": c["completion_tokens"], "ceiling $": c["cost_usd"],
                         "re-asks in ceiling": r.allowance.to_json()["requests"],
                         "forecast source": r.source})
        return pd.DataFrame(rows).set_index(["stage", "role"])

    def gpu_table(self) -> pd.DataFrame:
        """GPU hours per GPU class and stage, forecast / ceiling."""
        rows = {}
        for gpu, hours in self.gpu["by_gpu"].items():
            rows[gpu] = {stage: f"{_hours(h['forecast'])} / {_hours(h['ceiling'])}"
                         for stage, h in hours.items()}
        return pd.DataFrame(rows).T.rename_axis("GPU (forecast / ceiling)")


def _hours(value: float) -> str:
    """GPU time as people say it: 32 h, 7.8 h, 25 min, <1 min."""
    if value >= 10:
        return f"{value:,.0f} h"
    if value >= 1:
        return f"{value:.1f} h"
    return f"{value * 60:.0f} min" if value * 60 >= 1 else "<1 min"


COUNTING = ("requests: first attempts with an empty cache; ceiling: every completion at "
            "max_tokens, every history at its longest, every re-ask taken (its allowance "
            f"shown apart); tokens: templates rendered with placeholders, fixed text at "
            f"{CEILING_CHARS_PER_TOKEN:g} chars/token (ceiling) or "
            f"{FORECAST_CHARS_PER_TOKEN:g} (forecast), plus {MESSAGE_TOKENS['ceiling']} tokens a "
            f"message and {REQUEST_TOKENS['ceiling']} a request for the chat format (ceiling; "
            f"forecast {MESSAGE_TOKENS['forecast']} and {REQUEST_TOKENS['forecast']}); "
            "forecast lengths from the run ledgers' measured completions, else defaults")


def make_plan(params: Params) -> Plan:
    """The whole plan of a parameter file, offline."""
    ceiling, forecast = ceiling_lengths(params), forecast_lengths(params)
    return Plan(params.source, role_plans(params, forecast), gpu_hours(params, ceiling, forecast),
                disk_gb(params))


# ==========================================================================================
# GPU hours, memory and disk
# ==========================================================================================
def gpu_figures() -> dict[str, Any]:
    """The table of tokens/s and memory per GPU class (`gpu_figures.json`, package data)."""
    text = resources.files("aloe").joinpath("gpu_figures.json").read_text(encoding="utf-8")
    return json.loads(text)


def policy_reference(params: Params, stage: str = "sft") -> str:
    """The model a training stage tunes, without converting the embedded model."""
    from aloe.local_model import EMBEDDED_NAME

    configured = getattr(params, stage).base_model or params.local_model.path
    if configured:
        return configured
    return str(resolve_path(params.local_model.cache_dir) / EMBEDDED_NAME)


def policy_parameters(params: Params, stage: str = "sft") -> tuple[float, str]:
    """The tuned model's parameter count, and where it came from."""
    from aloe.policy import parameter_count

    reference = policy_reference(params, stage)
    counted = parameter_count(reference)
    if counted:
        return float(counted), f"{reference} ({counted / 1e9:.2f}B parameters)"
    ref = gpu_figures()["reference"]
    return float(ref["parameters"]), (f"{reference} (size unknown offline: assumed "
                                      f"{ref['parameters'] / 1e9:.2f}B, as {ref['model']})")


def _decided_share(params: Params) -> float:
    """The share of judged turns that become training examples (forecast)."""
    path = params.layout.export_summary
    if path.exists():
        from aloe.records import read_json

        summary = read_json(path)
        turns, kept = summary.get("turns"), summary.get("examples")
        if isinstance(turns, int) and isinstance(kept, int) and turns:
            return kept / turns
    return DEFAULT_DECIDED.get(params.conversations.judge_rule, 0.95)


def _example_tokens(lengths: Lengths, turns: int, max_length: int, sequences: int) -> float:
    """Mean tokens of one training example over the turns: the history up to a turn's user
    message and the reply (`sequences` of them: 1 for SFT, chosen and rejected for DPO),
    each sequence cut at max_length."""
    user, reply = lengths.completion["user"], lengths.completion["assistant"]
    total = 0.0
    for turn in range(1, turns + 1):
        prompt = turn * user + (turn - 1) * reply + (2 * turn - 1) * TRAINING_TEMPLATE_TOKENS
        total += sequences * min(max_length, prompt + reply + TRAINING_TEMPLATE_TOKENS)
    return total / turns


def training_tokens(params: Params, lengths: Lengths, stage: str, ceiling: bool) -> float:
    """Tokens one training stage processes (every epoch, or max_steps worth of examples)."""
    c, config = params.conversations, getattr(params, stage)
    trainer = config.trainer
    share = 1.0 if ceiling else _decided_share(params)
    examples = c.n_conversations * c.turns * share * (1 - c.validation_fraction)
    if int(trainer.get("max_steps", -1)) > 0:
        examples = (int(trainer["max_steps"]) * int(trainer["per_device_train_batch_size"])
                    * int(trainer["gradient_accumulation_steps"]))
    else:
        examples *= float(trainer.get("num_train_epochs", 1.0))
    per_example = _example_tokens(lengths, c.turns, int(trainer["max_length"]),
                                  1 if stage == "sft" else 2)
    return examples * per_example


def generation_tokens(params: Params, lengths: Lengths) -> float:
    """Reply tokens the in-process models under test generate in stage 5."""
    in_process = sum(1 for spec in params.evaluation.models if not spec.base_url)
    return (in_process * benchmark_size(params) * params.evaluation.turns
            * lengths.completion["policy"])


def gpu_hours(params: Params, ceiling: Lengths, forecast: Lengths) -> dict[str, Any]:
    """Hours of each GPU class for SFT, DPO and in-process evaluation, forecast and ceiling,
    from the figures' tokens/s scaled by the policy's parameter count."""
    figures = gpu_figures()
    parameters, about = policy_parameters(params)
    scale = parameters / figures["reference"]["parameters"]
    tokens = {
        stage: {"forecast": training_tokens(params, forecast, stage, ceiling=False),
                "ceiling": training_tokens(params, ceiling, stage, ceiling=True)}
        for stage in TRAINING_STAGES}
    tokens["evaluate"] = {"forecast": generation_tokens(params, forecast),
                          "ceiling": generation_tokens(params, ceiling)}
    rate_key = {"sft": "sft_tokens_per_s", "dpo": "dpo_tokens_per_s",
                "evaluate": "generate_tokens_per_s"}
    by_gpu: dict[str, Any] = {}
    for gpu, figure in figures["gpus"].items():
        hours = {stage: {kind: count * scale / figure[rate_key[stage]] / 3600
                         for kind, count in counts.items()} for stage, counts in tokens.items()}
        hours["total"] = {kind: sum(h[kind] for h in hours.values()) for kind in ("forecast",
                                                                              "ceiling")}
        by_gpu[gpu] = {stage: {k: round(v, 2) for k, v in h.items()} for stage, h in hours.items()}
    measured = [gpu for gpu, figure in figures["gpus"].items() if figure.get("measured")]
    return {"assumption": ("tokens/s per GPU class from aloe/gpu_figures.json, scaled by the "
                           "policy's parameters; " + gpu_figures_basis(figures)),
            "measured": measured, "policy": about,
            "tokens": {s: {k: int(v) for k, v in t.items()} for s, t in tokens.items()},
            "by_gpu": by_gpu}


def gpu_figures_basis(figures: dict[str, Any]) -> str:
    """Which GPU classes' figures were measured, in words."""
    measured = [gpu for gpu, figure in figures["gpus"].items() if figure.get("measured")]
    if not measured:
        return ("ESTIMATES, not measurements: scripts/gpu_check.py has not run on a GPU of "
                "these classes")
    return (f"measured on {', '.join(measured)} (scripts/gpu_check.py); the other classes are "
            "datasheet estimates calibrated by that measurement")


def training_memory_gb(params: Params, stage: str) -> float:
    """Peak GPU memory a training stage needs: the figures' measured line (fixed, and per
    1,024 tokens of a micro-batch) scaled by the policy's parameters (`method.peak_memory_gb`)."""
    figures = gpu_figures()
    memory = figures["peak_memory_gb"]
    fit = memory["fit"][stage]
    config: TrainingConfig = getattr(params, stage)
    parameters, _ = policy_parameters(params, stage)
    size = parameters / figures["reference"]["parameters"]
    tokens = int(config.trainer["max_length"]) * int(config.trainer["per_device_train_batch_size"])
    fixed = fit["fixed_gb"] * (1.0 if config.load_in_4bit else memory["unquantised_fixed_factor"])
    return size * (fixed + fit["per_1k_tokens_gb"] * tokens / 1024)


def disk_gb(params: Params) -> float:
    """Disk a run folder fills: the conversations, exports, evaluation records, adapters,
    the checkpoints kept while training, merged models when asked."""
    from aloe.qlora import KEEP_CHECKPOINTS

    c, e = params.conversations, params.evaluation
    total = c.n_conversations * c.turns * CONVERSATION_TURN_BYTES * 3  # the trees and 2 exports
    total += len(e.models) * benchmark_size(params) * e.turns * EVAL_TURN_BYTES
    for stage in TRAINING_STAGES:
        config: TrainingConfig = getattr(params, stage)
        parameters, _ = policy_parameters(params, stage)
        lora = parameters * LORA_PARAMS_PER_RANK * config.lora_r
        total += lora * 4 + KEEP_CHECKPOINTS * lora * CHECKPOINT_BYTES_PER_LORA_PARAM
        if config.merge:
            total += parameters * 2  # bfloat16
    return total / 1e9


def base_model_download_gb(params: Params) -> float:
    """What downloading the policy's weights (bfloat16 safetensors) takes, if it is a hub id."""
    reference = policy_reference(params)
    if Path(reference).is_absolute() or resolve_path(reference).exists():
        return 0.0
    parameters, _ = policy_parameters(params)
    return parameters * 2 / 1e9


# ==========================================================================================
# What each stage produces, and the plan as text
# ==========================================================================================
def products_table(params: Params) -> pd.DataFrame:
    """What each stage will produce."""
    p, c, e = params.personas, params.conversations, params.evaluation
    benchmark = benchmark_size(params)
    rows = [
        ("1 personas", f"{p.profiles_target} profiles x {p.pairings_per_profile} pairings",
         p.profiles_target * p.pairings_per_profile),
        ("1 benchmark", f"{e.benchmark} benchmark personas", benchmark),
        ("2 conversations", f"{c.n_conversations} conversations x {c.turns} turns",
         c.n_conversations * c.turns),
        ("3 sft", f"QLoRA r={params.sft.lora_r}, max_steps={params.sft.trainer['max_steps']}",
         None),
        ("4 dpo", f"QLoRA r={params.dpo.lora_r}, beta={params.dpo.trainer['beta']}, "
                  f"from {params.dpo.start_from}", None),
        ("5 evaluate", f"{len(e.models)} models x {benchmark} users x {e.turns} turns",
         len(e.models) * benchmark * e.turns),
    ]
    return pd.DataFrame(rows, columns=["stage", "plan", "items"]).astype({"items": "Int64"})


def _requests(role: RolePlan) -> str:
    """First attempts; '~F/N' where the forecast expects fewer (stage 1 stops at its target)."""
    expected = int(round(role.forecast.requests))
    return f"{role.requests:,}" if expected == role.requests else f"~{expected:,}/{role.requests:,}"


def _money(value: float) -> str:
    return f"${value:,.2f}"


def format_plan(plan: Plan) -> str:
    """The plan as the terminal shows it: one line per stage and role, the totals, GPU hours."""
    header = (f"{'stage':<14}{'role':<16}{'requests':>10}  {'forecast: prompt':>17}"
              f"{'completion':>12}{'cost':>11}  {'ceiling: prompt':>16}{'completion':>12}"
              f"{'cost':>11}")
    lines = [f"aloe plan {plan.params_source} (offline: nothing was sent)", "", header]
    for r in plan.roles:
        f, c = r.forecast.to_json(), r.ceiling.to_json()
        lines.append(f"{r.stage:<14}{r.role:<16}{_requests(r):>10}  {f['prompt_tokens']:>17,}"
                     f"{f['completion_tokens']:>12,}{_money(f['cost_usd']):>11}  "
                     f"{c['prompt_tokens']:>16,}{c['completion_tokens']:>12,}"
                     f"{_money(c['cost_usd']):>11}")
    total = plan.total()
    f, c = total["forecast"], total["ceiling"]
    lines.append(f"{'total':<30}{total['requests']:>10,}  {f['prompt_tokens']:>17,}"
                 f"{f['completion_tokens']:>12,}{_money(f['cost_usd']):>11}  "
                 f"{c['prompt_tokens']:>16,}{c['completion_tokens']:>12,}"
                 f"{_money(c['cost_usd']):>11}")
    allowance = c["allowance"]
    lines += ["", f"requests: first attempts (~F/N: the forecast expects F of at most N); the "
              f"ceiling also takes {allowance['requests']:,} re-asks "
              f"({_money(allowance['cost_usd'])}); forecast lengths:"]
    seen: dict[str, str] = {}
    for r in plan.roles:
        if r.stage != "preflight":
            seen.setdefault(r.role.split(":")[0], r.source)
    lines += [f"  {role}: {source}" for role, source in seen.items() if source]
    lines += ["",
              f"GPU hours, forecast / ceiling ({plan.gpu['assumption']}; {plan.gpu['policy']}):",
              plan.gpu_table().to_string(), "",
              f"disk for the run folder: {plan.disk_gb:,.1f} GB", "", f"how it counts: {COUNTING}"]
    return "\n".join(lines)
