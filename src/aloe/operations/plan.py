"""`aloe plan`: what a run will spend, before it spends anything. Offline: no request, no key,
no local server, no model loaded.

Per stage and role it counts requests, prompt and completion tokens and cost, each twice:

- **requests**: first attempts with an empty cache, from the parameters, as the stages send
  them: each stage module says what it will send beside the code that sends it
  (`planned_requests`, see `aloe.stages.planned`); `STAGES` collects them, and this module only sums
  and prices. Re-asks (an unreadable judge or inducer answer asked again, an empty simulated
  user message drawn again) and retries are not first attempts.
- **ceiling**: a true upper bound under the counting rules of `aloe.stages.plan_lengths`: every
  completion at its `max_tokens`, every history at its longest (all earlier turns at their
  `max_tokens`), every persona text at the longest it can be, and every re-ask taken (shown
  apart as the ceiling's `allowance`). Retries of failed requests are not counted: a failed
  request returns no completion to bill.
- **forecast**: the same requests with typical lengths: each role's mean completion measured
  in the usage ledgers of this run's folder or of other runs under `run.output_dir` with the
  same model (`aloe.stages.plan_ledgers`), else the documented defaults of `DEFAULT_COMPLETION`;
  persona texts at the mean of the run's personas, else of the seed and imported pools. Each
  role names its source.

Cost is tokens at each role's prices. What the run asks of the hardware (GPU hours of training,
evaluation and of serving roles on a self-hosted endpoint, memory, disk) is
`aloe.operations.hardware`'s; the plan as the terminal shows it is `aloe.operations.plan_format`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from aloe.core.config import Params
from aloe.core.layout import TRAINING_STAGES
from aloe.operations import preflight
from aloe.operations.hardware import Served, disk_gb, gpu_hours, self_hosted
from aloe.stages import conversations, evaluation, grpo, personas
from aloe.stages.full_finetune import full_finetune_estimate
from aloe.stages.plan_lengths import Lengths, benchmark_size, ceiling_lengths, forecast_lengths
from aloe.stages.planned import PlannedRequest, StagePlan, policy_role

# Every stage that sends requests, in run order, and its `planned_requests` (a new stage: one
# function in its module, one line here).
STAGES: dict[str, StagePlan] = {
    "preflight": preflight.planned_requests,
    "personas": personas.planned_requests,
    "conversations": conversations.planned_requests,
    "grpo": grpo.planned_requests,
    "evaluate": evaluation.planned_requests,
}


@dataclass
class Usage:
    """Requests, tokens and dollars of some requests (fractional: the forecast's are means)."""

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
    longest: float = 0.0  # the longest forecast prompt of a first attempt, in tokens
    longest_turn: int | None = None  # the turn it is asked at

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests,
                "forecast": {**self.forecast.to_json(), "source": self.source},
                "ceiling": {**self.ceiling.to_json(), "allowance": self.allowance.to_json()}}


def _prices(params: Params, role: str) -> tuple[float, float, str]:
    """A role's prices per million input and output tokens, and its model."""
    config = params.roles.as_mapping().get(role)
    if config is None:  # a model under test behind an endpoint: no price configured
        spec = next(s for s in params.evaluation.models if policy_role(s) == role)
        return 0.0, 0.0, spec.model or "local"
    return config.price_input_per_1m, config.price_output_per_1m, config.model


def _usage(planned: list[PlannedRequest], price_in: float, price_out: float) -> Usage:
    usage = Usage()
    for b in planned:
        usage.add(Usage(b.count, b.count * b.prompt, b.count * b.completion,
                        b.count * (b.prompt * price_in + b.completion * price_out) / 1e6))
    return usage


def role_plans(params: Params, forecast: Lengths | None = None) -> list[RolePlan]:
    """Every stage's roles: their first attempts, forecast, ceiling and the ceiling's re-asks,
    at each role's prices."""
    ceiling = ceiling_lengths(params)
    forecast = forecast or forecast_lengths(params)
    plans = []
    for stage, planned_requests in STAGES.items():
        high, typical = planned_requests(params, ceiling), planned_requests(params, forecast)
        for role in dict.fromkeys(b.role for b in high):
            price_in, price_out, model = _prices(params, role)
            first = [b for b in high if b.role == role and not b.reask]
            again = [b for b in high if b.role == role and b.reask]
            expected = [b for b in typical if b.role == role and not b.reask]
            ceiling_usage = _usage(first + again, price_in, price_out)
            source = (f"a {preflight.PROBE_MAX_TOKENS}-token probe" if stage == "preflight"
                      else forecast.sources.get(role.split(":")[0], ""))
            longest = max((b for b in expected if b.count), key=lambda b: b.prompt,
                          default=None)
            plans.append(RolePlan(stage, role, model, int(round(sum(b.count for b in first))),
                                  _usage(expected, price_in, price_out), ceiling_usage,
                                  _usage(again, price_in, price_out), source,
                                  longest.prompt if longest else 0.0,
                                  longest.turn if longest else None))
    return plans


def forecast_by_stage(params: Params) -> dict[str, float]:
    """The forecast cost of each stage in US dollars (what `aloe.llm.budget` puts beside the
    actual spend)."""
    by_stage: dict[str, float] = {}
    for role in role_plans(params):
        by_stage[role.stage] = by_stage.get(role.stage, 0.0) + role.forecast.cost_usd
    return by_stage


def served_roles(params: Params, roles: list[RolePlan]) -> list[Served]:
    """The roles a self-hosted endpoint serves (`hardware.self_hosted`), each over every stage:
    the tokens its server reads and writes, and its longest forecast prompt and where."""
    served = []
    for name, config in params.roles.as_mapping().items():
        plans = [r for r in roles if r.role == name]
        if not self_hosted(config) or not plans:
            continue
        top = max(plans, key=lambda r: r.longest)
        served.append(Served(
            name, config,
            {"forecast": sum(r.forecast.prompt_tokens for r in plans),
             "ceiling": sum(r.ceiling.prompt_tokens for r in plans)},
            {"forecast": sum(r.forecast.completion_tokens for r in plans),
             "ceiling": sum(r.ceiling.completion_tokens for r in plans)},
            top.longest, top.stage, top.longest_turn))
    return served


@dataclass
class Plan:
    """A run's plan: every stage's roles, the GPU hours and the disk it needs."""

    params_source: str
    roles: list[RolePlan]
    gpu: dict[str, Any]
    disk_gb: float
    # memory and GPU count of the stages that train every weight (`aloe.stages.full_finetune`);
    # None when every stage trains an adapter
    full_finetune: dict[str, Any] | None = None

    def total(self) -> dict[str, Any]:
        forecast, ceiling, allowance = Usage(), Usage(), Usage()
        for role in self.roles:
            forecast.add(role.forecast)
            ceiling.add(role.ceiling)
            allowance.add(role.allowance)
        return {"requests": sum(r.requests for r in self.roles), "forecast": forecast.to_json(),
                "ceiling": {**ceiling.to_json(), "allowance": allowance.to_json()}}

    @property
    def warnings(self) -> list[str]:
        """Lines a person should read before the run: a self-hosted server's context too short."""
        return list(self.gpu.get("serving", {}).get("warnings", []))

    def to_json(self) -> dict[str, Any]:
        stages: dict[str, Any] = {}
        for role in self.roles:
            stages.setdefault(role.stage, {"roles": {}})["roles"][role.role] = role.to_json()
        return {"stages": stages, "total": self.total(), "gpu_hours": self.gpu,
                "full_finetune": self.full_finetune}

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


def make_plan(params: Params) -> Plan:
    """The whole plan of a parameter file, offline."""
    ceiling, forecast = ceiling_lengths(params), forecast_lengths(params)
    roles = role_plans(params, forecast)
    full = any(getattr(params, stage).method == "full" for stage in TRAINING_STAGES)
    return Plan(params.source, roles,
                gpu_hours(params, ceiling, forecast, served_roles(params, roles)),
                disk_gb(params), full_finetune_estimate(params) if full else None)


def _training_line(params: Params, stage: str) -> str:
    cfg = getattr(params, stage)
    if cfg.method == "full":
        return f"full fine-tuning on {cfg.processes} process(es)"
    return f"QLoRA r={cfg.lora_r}"


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
        ("3 sft", f"{_training_line(params, 'sft')}, "
                  f"max_steps={params.sft.trainer['max_steps']}", None),
        ("4 dpo", f"{_training_line(params, 'dpo')}, beta={params.dpo.trainer['beta']}, "
                  f"from {params.dpo.start_from}", None),
        ("5 evaluate", f"{len(e.models)} models x {benchmark} users x {e.turns} turns",
         len(e.models) * benchmark * e.turns),
    ]
    return pd.DataFrame(rows, columns=["stage", "plan", "items"]).astype({"items": "Int64"})

