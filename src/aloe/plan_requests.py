"""The requests `aloe plan` counts, stage by stage, as the stages send them: first attempts
with an empty cache, and apart from them the re-asks the ceiling allows (an unreadable judge or
inducer answer asked again, an empty simulated user message drawn again).

Stage 0: one probe per role (and per model under test behind an endpoint). Stage 1: up to
`max_rounds x calls_per_round` per pool that is generated: the two training pools (unless
imported as the whole pool), and the two benchmark pools only when the evaluation uses the
run's own benchmark (`evaluation.benchmark: run`). Stage 2: `n_conversations x turns x (user 1
+ inducer 1 + assistant 2 + judge votes)`, two votes for `both_orders` and `logprobs`, one for
the one-vote rules. Stage 5: `benchmark personas x turns x models x (user 1 + judge 1)`, plus
one reply per turn for a model under test behind an endpoint, plus the side measures that are
switched on. Prompts are rendered through the stages' own message builders
(`simulator_messages`, `preference_messages`, the protocol's `judge_messages`, ...) and counted
by `aloe.plan_lengths`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from aloe import protocols
from aloe.chat import Message
from aloe.config import EvalModelSpec, Params
from aloe.conversation_prompts import (
    INDUCER_REASK,
    continued_chat,
    inducer_messages,
    reply_messages,
)
from aloe.judges import PREFERENCE_REASK, contradiction_prompt, preference_messages
from aloe.plan_lengths import (
    Lengths,
    PromptCounter,
    benchmark_size,
    generated_pools,
    initial_texts,
)
from aloe.pools import KINDS, kind_plural
from aloe.prompts import render
from aloe.records import read_records
from aloe.schemas import round_check
from aloe.simulator import SIMULATOR_ATTEMPTS, simulator_messages

PROBE_MAX_TOKENS = 4  # stage 0's one-word probe of each backend
JUDGE_VOTES = {"both_orders": 2, "logprobs": 2}  # any other rule asks one vote
DEFAULT_ADMISSION = 0.2  # share of generated persona candidates the novelty filter admits


@dataclass
class Batch:
    """`count` requests of one role sharing a prompt length and a completion length."""

    role: str
    count: float
    prompt: float
    completion: float
    reask: bool = False  # part of the ceiling's allowance, not a first attempt
    turn: int | None = None  # the conversation's turn, where the prompt grows with it


def _at_turn(batches: list[Batch], turn: int) -> None:
    """Mark one turn's requests with it, so that a prompt too long can be named by its turn."""
    for batch in batches:
        batch.turn = turn


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
    return getattr(p, f"{kind_plural(kind)}_target"), len(initial_texts(params, kind))


def _forecast_rounds(params: Params, pool: str, kind: str) -> int:
    p = params.personas
    target, initial = _pool_target(params, pool, kind)
    logged = [r for r in read_records(params.layout.persona_rounds, check=round_check())
              if r.get("pool") == pool]
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
        start = len(batches)
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
        _at_turn(batches[start:], turn)
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
    where = protocols.sources(params.evaluation)
    style = protocol.simulator_for(e.prompt_style)
    user, reply, judge = (lengths.completion["user"], lengths.completion["policy"],
                          lengths.completion["judge"])
    batches = []
    for spec in e.models:
        live = where[spec.name].mode == "live"
        for turn in range(1, e.turns + 1):
            start = len(batches)
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
            _at_turn(batches[start:], turn)
    if e.judge_check is not None and params.roles.second_judge is not None:
        counter = lengths.counter()
        persona = _persona(counter, lengths.benchmark)
        history = _history(counter, e.turns - 1, user, reply) + [
            {"role": "user", "content": counter.slot(user)}]
        batches.append(Batch("second_judge", e.judge_check.sample, counter.tokens(
            protocol.judge_messages(persona, history, counter.slot(reply), e.judge_context)),
            judge, turn=e.turns))
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



BatchMaker = Callable[[Params, Lengths], list[Batch]]


def stage_makers() -> dict[str, tuple[BatchMaker, BatchMaker]]:
    """Each stage's requests: (ceiling, forecast); they differ only in stage 1's rounds."""
    return {
        "preflight": (preflight_batches, preflight_batches),
        "personas": (personas_batches,
                     lambda p, lengths: personas_batches(p, lengths, forecast=True)),
        "conversations": (conversations_batches, conversations_batches),
        "evaluate": (evaluate_batches, evaluate_batches),
    }
