"""What a run has spent beside what `aloe plan` forecast, per stage, for notebook 05 and the
report: the plan's estimate (`plan.forecast_by_stage`), the usage ledger's actual cost and
requests (every session of the run), and the stage's ceiling (`run.stage_budget_usd`). It sits
above both the plan and the LLM layer's budget, which therefore need not know of each other.
"""

from __future__ import annotations

import pandas as pd

from aloe.core.config import Params
from aloe.llm.budget import stage_of
from aloe.llm.ledger import load_usage_history
from aloe.operations.plan import forecast_by_stage


def estimate_by_stage(params: Params) -> dict[str, float]:
    """The forecast LLM cost of each stage, in US dollars: `aloe plan`'s (the run's measured
    lengths where its ledgers have any, else documented defaults; the side measures of stage 5
    included)."""
    return {stage_of(stage): round(float(cost), 6)
            for stage, cost in forecast_by_stage(params).items()}


def spend_table(params: Params) -> pd.DataFrame:
    """Per stage: the estimated cost, the actual cost so far (every session of the run's
    ledger), requests sent, and the stage's budget, side by side, with a reader's labels
    ("none set" where no budget is, "not forecast" where the plan has no estimate)."""
    estimate = estimate_by_stage(params)
    actual: dict[str, dict[str, float]] = {}
    for entry in load_usage_history(params.layout):
        stage = stage_of(str(entry.get("stage", "")))
        totals = entry.get("totals", {})
        row = actual.setdefault(stage, {"cost_usd": 0.0, "requests": 0})
        row["cost_usd"] += float(totals.get("cost_usd", 0.0))
        row["requests"] += int(totals.get("requests", 0))
    stages = [s for s in ("preflight", "personas", "conversations", "evaluate")
              if s in estimate or s in actual] + sorted(set(actual) - set(estimate)
                                                       - {"preflight", "personas",
                                                          "conversations", "evaluate"})
    limits = params.run.stage_budget_usd
    rows = [{"stage": s, ESTIMATED: estimate.get(s, NOT_FORECAST),
             SPENT: round(actual.get(s, {}).get("cost_usd", 0.0), 6),
             REQUESTS: int(actual.get(s, {}).get("requests", 0)),
             BUDGET: limits.get(s, NO_BUDGET)} for s in stages]
    rows.append({"stage": "total", ESTIMATED: round(sum(v for v in estimate.values()), 6),
                 SPENT: round(sum(r[SPENT] for r in rows), 6),
                 REQUESTS: sum(r[REQUESTS] for r in rows),
                 BUDGET: NO_BUDGET if params.run.budget_usd is None else params.run.budget_usd})
    table = pd.DataFrame(rows).set_index("stage")
    table.index.name, table.columns.name = None, "stage"  # one header row
    return table


# spend_table's columns, and what it shows where there is no figure
ESTIMATED, SPENT, REQUESTS, BUDGET = ("estimated (USD)", "spent (USD)", "requests sent",
                                      "budget (USD)")
NOT_FORECAST, NO_BUDGET = "not forecast", "none set"
