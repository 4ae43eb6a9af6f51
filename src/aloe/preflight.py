"""Stage 0: before spending anything, check that every role's backend answers, show the plan,
and estimate the requests, tokens and cost that the run will spend.

The estimate counts requests exactly from the parameters (upper bounds where the persona stage
may stop early at saturation) and tokens from the prompt lengths each request carries, at the
rough rate of 4 characters a token; completions are counted at their max_tokens (an upper
bound), so the cost shown is a ceiling rather than a forecast.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pandas as pd

from aloe.config import Params
from aloe.llm import LLM, run_sync

CHARS_PER_TOKEN = 4
PERSONA_CHARS = 600  # a profile plus a personality, about
REPLY_CHARS = 250  # one short conversational message, about
TEMPLATE_CHARS = 900  # instructions around the variable parts, about


@dataclass
class RoleCheck:
    role: str
    model: str
    base_url: str
    ok: bool
    seconds: float
    detail: str


async def _check_role(llm: LLM, role: str) -> RoleCheck:
    config = llm.role_config(role)
    started = time.perf_counter()
    try:
        reply = await llm.chat(role, [{"role": "user", "content": "Reply with the word: ready"}],
                               max_tokens=4, temperature=0.0)
        ok, detail = True, repr(reply.text.strip()[:40]) + (" (cached)" if reply.cached else "")
    except Exception as error:  # noqa: BLE001 - the table shows every failure
        ok, detail = False, f"{type(error).__name__}: {error}"
    return RoleCheck(role, config.model, ", ".join(config.base_urls), ok,
                     round(time.perf_counter() - started, 2), detail)


def check_backends(llm: LLM) -> pd.DataFrame:
    """One tiny request per role; a table of who answered, how fast, and what went wrong."""

    async def all_roles() -> list[RoleCheck]:
        return await asyncio.gather(*(_check_role(llm, role) for role in llm.roles))

    return pd.DataFrame([vars(check) for check in run_sync(all_roles())])


def plan(params: Params) -> pd.DataFrame:
    """What each stage will produce."""
    p, c, e = params.personas, params.conversations, params.evaluation
    benchmark = (100 if e.benchmark == "aloe" else p.benchmark_profiles * p.benchmark_personalities)
    if e.limit:
        benchmark = min(benchmark, e.limit)
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
    return pd.DataFrame(rows, columns=["stage", "plan", "items"])


def _tokens(chars: float) -> float:
    return chars / CHARS_PER_TOKEN


def estimate(params: Params) -> pd.DataFrame:
    """Requests, prompt and completion tokens, and cost per stage and role (upper bounds)."""
    p, c, e, roles = params.personas, params.conversations, params.evaluation, params.roles
    rows: list[tuple[str, str, float, float]] = []  # stage, role, requests, prompt chars each

    # two training pools and two benchmark pools, each up to max_rounds rounds
    generator_calls = 4 * p.max_rounds * p.calls_per_round
    rows.append(("personas", "generator", generator_calls,
                 TEMPLATE_CHARS + p.sample_k * PERSONA_CHARS / 2))

    votes = 1 if c.judge_rule == "single_random" else 2
    mean_history = REPLY_CHARS * 2 * (c.turns + 1) / 2  # user + assistant per earlier turn
    turns = c.n_conversations * c.turns
    for role, per_turn, extra in [("user", 1, PERSONA_CHARS), ("inducer", 1, PERSONA_CHARS),
                                  ("assistant", 2, PERSONA_CHARS / 2),
                                  ("judge", votes, PERSONA_CHARS + 2 * REPLY_CHARS)]:
        rows.append(("conversations", role, turns * per_turn,
                     TEMPLATE_CHARS + mean_history + extra))

    benchmark = plan(params).set_index("stage").loc["1 benchmark", "items"]
    eval_turns = len(e.models) * benchmark * e.turns
    eval_history = REPLY_CHARS * 2 * (e.turns + 1) / 2
    rows.append(("evaluate", "user", eval_turns, TEMPLATE_CHARS + eval_history + PERSONA_CHARS))
    rows.append(("evaluate", "judge", eval_turns,
                 TEMPLATE_CHARS + eval_history + PERSONA_CHARS))

    table = []
    for stage, role, requests, prompt_chars in rows:
        config = getattr(roles, role)
        prompt_tokens = requests * _tokens(prompt_chars)
        completion_tokens = requests * config.max_tokens
        cost = (prompt_tokens * config.price_input_per_1m
                + completion_tokens * config.price_output_per_1m) / 1e6
        table.append({"stage": stage, "role": role, "model": config.model,
                      "requests": int(requests), "prompt_tokens": int(prompt_tokens),
                      "completion_tokens": int(completion_tokens), "cost_usd": round(cost, 4)})
    return pd.DataFrame(table)
