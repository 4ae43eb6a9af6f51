"""The comparison page's figure (`aloe compare`): each run's AL(k) on one axis.
"""

from __future__ import annotations

from typing import Any

import seaborn as sns
from matplotlib.figure import Figure

from aloe.presentation.plots.base import PALETTE, empty_axes, figure_legend, new_figure
from aloe.presentation.plots.evaluation import draw_alignment


def plot_alignment_comparison(runs: dict[str, dict[str, Any]]) -> Figure:
    """AL(k) side by side: one panel per model, one series per run (from each metrics.json)."""
    models = list(dict.fromkeys(m for summary in runs.values() for m in summary.get("models", {})))
    fig, axes = new_figure(height=4.2, ncols=max(1, len(models)))
    axes = list(axes) if len(models) > 1 else [axes]
    if not models:
        empty_axes(axes[0], "no run has metrics")
        return fig
    colors = sns.color_palette(PALETTE, len(runs))
    for ax, model in zip(axes, models):
        curves = {run: s["models"][model] for run, s in runs.items()
                  if model in s.get("models", {})}
        palette = [colors[list(runs).index(run)] for run in curves]
        draw_alignment(ax, curves, palette, next(iter(runs.values())))
        ax.set_title(model)
    for ax in axes[1:]:
        ax.set_ylabel("")
    figure_legend(fig, axes[0], "run (n: benchmark personas)")
    fig.suptitle("Alignment level per turn, run by run (bars: bootstrap CI)")
    return fig
