"""The results printed at the end of `aloe run` and `aloe evaluate`, as lm-evaluation-harness
and Inspect print theirs: per model under test its mean AL, IR and N-IR with their intervals
(and each model's paired difference over the first), then how many caveats the report shows.

Nothing is computed here: the rows are the report's headline table (`tables.headline_table`,
read from the run's metrics.json) and the caveats are the report's own (`report.run_findings`),
so the terminal and the report's first screen cannot disagree.
"""

from __future__ import annotations

from aloe.core.config import Params
from aloe.core.manifest import display_path
from aloe.presentation import tables


def results_table(params: Params) -> str | None:
    """The run's results as plain text, or None when the run has no metrics yet (evaluation,
    stage 5, has not run)."""
    from aloe.analysis import findings
    from aloe.core import manifest
    from aloe.presentation import report

    layout = params.layout
    metrics = report.load_optional(layout.metrics)
    if not metrics or not metrics.get("models"):
        return None
    caveats = [f for f in report.run_findings(params, manifest.read(layout) or {}) if f.caveat]
    level = round(100 * float(metrics.get("confidence", 0.95)))
    table = tables.headline_table(metrics).rename_axis("model")
    count = len(caveats)
    where = (display_path(layout.report) if layout.report.exists()
             else "the report, which stage 6 writes")
    said = (f"{count} caveat{'s' if count > 1 else ''}: read {'them' if count > 1 else 'it'} "
            f"first in {where}" if count else f"no caveats (the report: {where})")
    units = findings.unit_words(findings.unit(metrics))
    return "\n".join([f"results ({level}% bootstrap intervals over {units}; from "
                      f"{display_path(layout.metrics)})", tables.plain_table(table), said])
