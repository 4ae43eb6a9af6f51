"""The cost table of docs/cost.md, made from `aloe plan PARAMS --json`.

    python scripts/readme_plan_table.py            # print the table for params/paper.yaml
    python scripts/readme_plan_table.py --write    # and put it in docs/cost.md (`make docs`)

The plan is made with an empty output folder (`--set run.output_dir=...`), so that its forecast
uses the documented default lengths, as on a fresh clone, and never the ledgers of runs that
happen to lie under outputs/. tests/test_readme_plan.py checks that docs/cost.md holds this table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PARAMS = "params/paper.yaml"
PAGE = ROOT / "docs" / "cost.md"
MARKER = "<!-- the table below is written by scripts/readme_plan_table.py -->"
HEADER = "| stage | requests | forecast | ceiling |\n| --- | ---: | ---: | ---: |"
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}


def plan_json(params_file: str = PARAMS) -> dict[str, Any]:
    """`aloe plan PARAMS --json`, with no earlier run's ledger to measure lengths from."""
    with tempfile.TemporaryDirectory() as empty:
        done = subprocess.run([sys.executable, "-m", "aloe", "plan", params_file, "--json",
                               "--set", f"run.output_dir={empty}"], cwd=ROOT, text=True,
                              capture_output=True, env={**os.environ, "ALOE_ROOT": str(ROOT)},
                              timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"aloe plan failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _tokens(value: float) -> str:
    return f"{value / 1e9:.2f}B" if value >= 1e9 else f"{value / 1e6:.0f}M"


def _stage(plan: dict[str, Any], stage: str) -> dict[str, Any]:
    """A stage's requests (first attempts), forecast requests and both costs, over its roles."""
    roles = plan["stages"].get(stage, {}).get("roles", {})
    return {"requests": sum(r["requests"] for r in roles.values()),
            "expected": sum(r["forecast"]["requests"] for r in roles.values()),
            "forecast": sum(r["forecast"]["cost_usd"] for r in roles.values()),
            "ceiling": sum(r["ceiling"]["cost_usd"] for r in roles.values()),
            "roles": {name: r["requests"] for name, r in roles.items()}}


def _requests(row: dict[str, Any]) -> str:
    if row["expected"] < row["requests"]:
        return f"≤ {row['requests']:,} (~{row['expected']:,} expected)"
    return f"{row['requests']:,}"


def descriptions(params: Any, plan: dict[str, Any]) -> dict[str, str]:
    """What each stage's requests are, in the words of the parameters."""
    from aloe.stages.plan_lengths import benchmark_size, generated_pools

    personas, conv, evaluation = params.personas, params.conversations, params.evaluation
    pools = [name for name, _ in generated_pools(params)]
    training = [p for p in pools if not p.startswith("benchmark_")]
    kinds = ("training pools" if len(pools) == len(training)
             else f"pools, {len(pools) - len(training)} of them the benchmark's")
    per_turn = _stage(plan, "conversations")["roles"]
    turns = conv.n_conversations * conv.turns
    votes = per_turn.get("judge", 0) // turns if turns else 0
    asked = " + ".join(str(per_turn.get(role, 0) // turns if turns else 0)
                       for role in ("user", "inducer", "assistant"))
    users, models = benchmark_size(params), len(evaluation.models)
    per_user_turn = (_stage(plan, "evaluate")["requests"] // (users * evaluation.turns * models)
                     if users and models else 0)
    each = "(user + judge)" if per_user_turn == 2 else f"({per_user_turn} requests each)"
    return {
        "preflight": "0 preflight (one probe per role)",
        "personas": (f"1 personas ({params.roles.generator.model}; "
                     f"{NUMBERS.get(len(pools), len(pools))} {kinds}, up to "
                     f"{personas.max_rounds:,} rounds x {personas.calls_per_round} calls each)"),
        "conversations": (f"2 conversations ({conv.n_conversations:,} x {conv.turns} turns x "
                          f"({asked} + {votes} judge vote{'s' if votes != 1 else ''}))"),
        "evaluate": (f"5 evaluation ({users:,} users x {evaluation.turns} turns x {models} "
                     f"models x {each})"),
    }


def table(params_file: str = PARAMS) -> str:
    """The cost table for `params_file`, as markdown."""
    from aloe.core.config import load_params

    plan = plan_json(params_file)
    words = descriptions(load_params(ROOT / params_file), plan)
    lines = [HEADER]
    for stage in plan["stages"]:
        row = _stage(plan, stage)
        lines.append(f"| {words.get(stage, stage)} | {_requests(row)} | "
                     f"{_money(row['forecast'])} | {_money(row['ceiling'])} |")
    total = plan["total"]
    forecast, ceiling = total["forecast"], total["ceiling"]
    lines.append(f"| **total** | **{total['requests']:,}** | "
                 f"**{_money(forecast['cost_usd'])}** "
                 f"({_tokens(forecast['prompt_tokens'] + forecast['completion_tokens'])} tokens) | "
                 f"**{_money(ceiling['cost_usd'])}** "
                 f"({_tokens(ceiling['prompt_tokens'] + ceiling['completion_tokens'])} tokens) |")
    return "\n".join(lines)


def readme_table(page: str) -> str:
    """The table the page holds now (the lines after MARKER up to the first blank line)."""
    if MARKER not in page:
        raise SystemExit(f"{PAGE.relative_to(ROOT)} has no line {MARKER!r} above the plan's "
                         "table")
    after = page.split(MARKER, 1)[1].lstrip("\n")
    return after.split("\n\n", 1)[0].rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the table in docs/cost.md")
    args = parser.parse_args(argv)
    made = table()
    print(made)
    if args.write:
        page = PAGE.read_text()
        PAGE.write_text(page.replace(readme_table(page), made, 1))
        print(f"written into {PAGE.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
