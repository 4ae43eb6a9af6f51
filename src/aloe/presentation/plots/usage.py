"""The usage ledger's figure (every stage): requests and cost per stage and role.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from aloe.presentation.plots.base import empty_axes, integer_ticks, legend_beside, new_figure
from aloe.presentation.tables import usage_table


def plot_usage(history: list[dict[str, Any]]) -> Figure:
    """LLM calls per stage: sent to a backend vs answered from the response cache."""
    table = usage_table(history)
    fig, ax = new_figure(height=3.2)
    if table.empty:
        empty_axes(ax, "no LLM requests recorded")
        return fig
    per_stage = (table.groupby("stage", sort=False)[["requests", "cache_hits"]].sum()
                 .rename(columns={"requests": "sent to a backend",
                                  "cache_hits": "answered from the cache"}))
    per_stage.plot.barh(ax=ax, stacked=True)
    ax.invert_yaxis()  # stages top to bottom in the order they ran
    integer_ticks(ax, "x")
    ax.set_xlabel("LLM calls (count)")
    ax.set_ylabel("")
    ax.set_title(f"LLM calls per stage (n = {int(per_stage.values.sum())} calls over "
                 f"{len(history)} stage sessions)")
    legend_beside(ax)
    return fig
