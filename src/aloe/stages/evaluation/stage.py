"""Stage 5 as one call (`run_stage`): the benchmark, every model's conversations, the side
measures, the lost-items rule, and the metrics written.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd

from aloe.core.config import Params
from aloe.core.errors import check_lost_items
from aloe.core.progress import reporter
from aloe.core.protocols import sources
from aloe.core.records import write_json
from aloe.llm import open_llm
from aloe.stages.evaluation.benchmark import planned_users
from aloe.stages.evaluation.dialogue import (
    LiveProgress,
    ModelProgress,
    evaluate_model,
    finished_turns,
    missing_probes,
    planned_turn,
    remaining_turns,
    replayed_users,
)
from aloe.stages.evaluation.results import compute_metrics, load_records
from aloe.stages.evaluation.run import EvaluationRun
from aloe.stages.evaluation.side import (
    check_judge,
    check_simulator,
    planned_judge_check,
    planned_simulator_check,
)
from aloe.stages.plan_lengths import Lengths
from aloe.stages.planned import PlannedRequest, at_turn
from aloe.stages.policy import adapter_path, open_responder

Record = dict[str, Any]


# ------------------------------------------------------------------------------------------
# The stage
# ------------------------------------------------------------------------------------------
@dataclass
class EvaluationSummary:
    """What stage 5 computed (`metrics`, as written to metrics.json; see `aloe.analysis.metrics`)
    and what this call did per model (`progress`)."""

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
    run = EvaluationRun.resolve(params)
    e, personas, where = run.settings, run.personas, run.sources
    order = sorted(e.models, key=lambda m: where[m.name].mode != "live")  # reference first
    pending = [spec for spec in order
               if remaining_turns(run, spec) > 0
               or missing_probes(run, spec, finished_turns(run, spec)) > 0]
    for spec in pending:
        if not spec.base_url:
            adapter_path(params, spec)  # fail now, not after hours of other models
    progress: dict[str, ModelProgress] = {}
    total = len(e.models) * len(personas) * e.turns
    with open_llm(params, "evaluate") as llm:
        live = LiveProgress(reporter(params.layout.progress, "turns", total), llm,
                            done=total - sum(remaining_turns(run, s) for s in e.models))
        replay = None
        for spec in order:
            if where[spec.name].mode == "replay" and replay is None:
                replay = replayed_users(run)
            progress[spec.name] = evaluate_model(
                run, llm, spec, partial(open_responder, params),
                replay if where[spec.name].mode == "replay" else None, live)
        if e.simulator_check:
            for spec in order:
                if where[spec.name].mode == "live":
                    progress[spec.name].simulator_checks_run = check_simulator(
                        run, llm, spec.name, where[spec.name].variant,
                        progress[spec.name].side_failed)
        if e.judge_check is not None:
            check_judge(run, llm, load_records(params, personas), run.variant)
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
    write_json(params.layout.variant_metrics(run.variant), summary)
    return EvaluationSummary(summary, progress)


def planned_requests(params: Params, lengths: Lengths) -> list[PlannedRequest]:
    """Stage 5's requests for `aloe plan`: every model's turns with every benchmark persona
    (`planned_turn`), each with its simulator check for a live model (`run_stage` runs the
    checks after all turns: the same requests), then the judge check."""
    e = params.evaluation
    personas = planned_users(params)
    where = sources(params.evaluation)
    planned = []
    for spec in e.models:
        live = where[spec.name].mode == "live"
        for k in range(1, e.turns + 1):
            turn = planned_turn(params, spec, lengths, k, personas, live)
            if e.simulator_check and live:
                turn.requests += planned_simulator_check(params, turn, personas,
                                                         lengths.completion["judge"])
            at_turn(turn.requests, k)
            planned += turn.requests
    return planned + planned_judge_check(params, lengths)
