"""The plan as the terminal shows it (`aloe plan PARAMS`): one line per stage and role, the
totals, where the forecast's lengths come from, warnings, GPU hours, disk, and how it counts."""

from __future__ import annotations

from aloe.operations.plan import Plan, RolePlan
from aloe.stages.plan_lengths import (
    CEILING_CHARS_PER_TOKEN,
    FORECAST_CHARS_PER_TOKEN,
    MESSAGE_TOKENS,
    REQUEST_TOKENS,
)

COUNTING = ("requests: first attempts with an empty cache; ceiling: every completion at "
            "max_tokens, every history at its longest, every re-ask taken (its allowance "
            f"shown apart); tokens: templates rendered with placeholders, fixed text at "
            f"{CEILING_CHARS_PER_TOKEN:g} chars/token (ceiling) or "
            f"{FORECAST_CHARS_PER_TOKEN:g} (forecast), plus {MESSAGE_TOKENS['ceiling']} tokens a "
            f"message and {REQUEST_TOKENS['ceiling']} a request for the chat format (ceiling; "
            f"forecast {MESSAGE_TOKENS['forecast']} and {REQUEST_TOKENS['forecast']}); "
            "forecast lengths from the run ledgers' measured completions, else defaults")


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
    lines += ["", *plan.warnings] if plan.warnings else []
    lines += ["",
              f"GPU hours, forecast / ceiling ({plan.gpu['assumption']}; {plan.gpu['policy']}):",
              *_serving(plan), plan.gpu_table().to_string(), "", *_full_finetune(plan),
              f"disk for the run folder: {plan.disk_gb:,.1f} GB", "", f"how it counts: {COUNTING}"]
    return "\n".join(lines)


def _full_finetune(plan: Plan) -> list[str]:
    """Memory per GPU of the stages that train every weight, and the fewest GPUs that fit
    (none when every stage trains an adapter)."""
    full = plan.full_finetune
    if full is None:
        return []
    lines = [f"full fine-tuning, memory per GPU ({full['gpu_gib']:g} GiB cards, "
             f"{full['usable_gib']:g} GiB usable; the GPU hours above are QLoRA's on one GPU: "
             "full fine-tuning's throughput is not measured here):"]
    for stage, entry in full["stages"].items():
        if entry["method"] != "full":
            continue
        if "unknown" in entry:
            lines.append(f"  {stage}: {entry['unknown']}")
            continue
        fits = "fits" if entry["fits"] else "does NOT fit"
        lines.append(f"  {stage}: {entry['per_gpu_gib']:,.1f} GiB on each of {entry['gpus']} "
                     f"GPU(s) ({fits}); the fewest GPUs that fit: {entry['min_gpus']}")
    lines += [f"  assumed: {'; '.join(full['assumptions'])}", ""]
    return lines


def _serving(plan: Plan) -> list[str]:
    """The serve column's lines: which roles, their tokens, the throughput assumed and what it
    comes to on one GPU class (none without a self-hosted role)."""
    serving = plan.gpu.get("serving")
    if serving is None:
        return []
    tokens = serving["tokens"]["forecast"]
    gpu = (plan.gpu["measured"] or list(serving["rates"]))[0]
    model, rate = next(iter(serving["rates"][gpu].items()))
    return [f"serve: roles {', '.join(serving['roles'])} on their self-hosted endpoint "
            f"({'; '.join(serving['models'])}): forecast {tokens['prompt_tokens']:,} prompt and "
            f"{tokens['completion_tokens']:,} completion tokens",
            f"  assumed: {serving['assumption']}; e.g. {gpu} reads "
            f"{rate['prefill_tokens_per_s']:,} and writes {rate['decode_tokens_per_s']:,} tokens/s "
            f"of {model}"]
