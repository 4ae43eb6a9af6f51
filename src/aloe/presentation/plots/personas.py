"""Stage 1's figures: the pools' growth, the novelty filter's similarities, the pools, the
leakage screen.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from aloe.presentation.plots.base import (
    PAGE_WIDTH,
    empty_axes,
    figure_legend,
    integer_ticks,
    new_figure,
    style,
)


def plot_saturation(rounds: pd.DataFrame) -> Figure:
    """The saturation curve: each pool's size and admission rate, round by round (round 0:
    the pool it started from)."""
    fig, (size_ax, rate_ax) = new_figure(ncols=2)
    if rounds.empty:
        for ax in (size_ax, rate_ax):
            empty_axes(ax, "no generation rounds")
        return fig
    data = rounds.assign(round=rounds["round"] + 1)
    starts = (data.sort_values("round").groupby("pool", sort=False).first().reset_index()
              .assign(round=0, pool_size=lambda d: d["pool_size"] - d["admitted"]))
    sizes = pd.concat([starts, data], ignore_index=True)
    sns.lineplot(data=sizes, x="round", y="pool_size", hue="pool", style="pool", markers=True,
                 ax=size_ax)
    sns.lineplot(data=data, x="round", y="admission_rate", hue="pool", style="pool",
                 markers=True, ax=rate_ax, legend=False)
    size_ax.set(title=f"Pool size after each round (n = {len(data)} pool rounds)",
                xlabel="round", ylabel="items in the pool (count)")
    rate_ax.set(title="Admission rate", xlabel="round",
                ylabel="admitted / screened candidates", ylim=(-0.05, 1.05))
    integer_ticks(size_ax, "both")
    integer_ticks(rate_ax, "x")
    figure_legend(fig, size_ax, "pool")
    return fig


def plot_similarity(candidates: pd.DataFrame, pool: pd.DataFrame,
                    thresholds: dict[str, float]) -> Figure:
    """One row per kind. Left: each screened candidate's highest similarity to the pool,
    admitted vs rejected. Right: each pool item's nearest-neighbour similarity within its
    pool, by source. Dashed: the kind's threshold."""
    kinds = list(thresholds)
    style()
    fig, axes = plt.subplots(len(kinds), 2, figsize=(PAGE_WIDTH, 3.6 * len(kinds)),
                             squeeze=False, constrained_layout=True)
    plt.close(fig)  # detached, like new_figure: shown once, as the cell's value
    for (cand_ax, pool_ax), kind in zip(axes, kinds):
        screened = candidates[(candidates["kind"] == kind)
                              & candidates["status"].isin(["admitted", "rejected"])]
        screened = screened.dropna(subset=["max_similarity"])
        _hist_or_note(cand_ax, screened, "max_similarity", "status", ["admitted", "rejected"],
                      "no screened candidates")
        cand_ax.set(title=f"{kind} candidates (n = {len(screened)}): highest similarity",
                    xlabel="cosine similarity to the pool", ylabel="candidates (count)")
        items = pool[(pool["kind"] == kind) & (pool["source"] != "benchmark")]
        items = items.dropna(subset=["nn_similarity"])
        order = [s for s in ("seed", "aloe", "generated") if s in set(items["source"])]
        _hist_or_note(pool_ax, items, "nn_similarity", "source", order, "pool too small")
        pool_ax.set(title=f"{kind} pool (n = {len(items)}): nearest neighbour",
                    xlabel="cosine similarity to the nearest item", ylabel="items (count)")
        for ax in (cand_ax, pool_ax):
            ax.axvline(thresholds[kind], color="black", linestyle="--", linewidth=1)
            integer_ticks(ax, "y")
    return fig


def _hist_or_note(ax: Any, data: pd.DataFrame, x: str, hue: str, order: list[str],
                  note: str) -> None:
    if data.empty:
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
        return
    sns.histplot(data=data, x=x, hue=hue, hue_order=order, multiple="stack", bins=25, ax=ax)
    if ax.get_legend() is not None:  # under the axes, off the bars
        sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, -0.22), ncol=len(order),
                        title=None, frameon=False)


def plot_pool_map(pool: pd.DataFrame) -> Figure:
    """A 2-D PCA map of each pool's embeddings, coloured by source (seed, generated, aloe,
    benchmark): where the generated items spread, and where the held-out items fall."""
    kinds = list(dict.fromkeys(pool["kind"])) or ["profile"]
    fig, axes = new_figure(height=4.4, ncols=len(kinds))
    axes = axes if len(kinds) > 1 else [axes]
    order = [s for s in ("seed", "aloe", "generated", "benchmark") if s in set(pool["source"])]
    for ax, kind in zip(axes, kinds):
        items = pool[pool["kind"] == kind]
        sns.scatterplot(data=items, x="x", y="y", hue="source", hue_order=order, style="source",
                        style_order=order, s=40, alpha=0.8, ax=ax)
        ax.set(title=f"{kind} pool (n = {len(items)} items; PCA of embeddings)", xlabel="PC 1",
               ylabel="PC 2")
    figure_legend(fig, axes[0], "source")
    return fig


def plot_persona_leakage(leakage: pd.DataFrame, threshold: float) -> Figure:
    """Each benchmark persona's similarity to its nearest training persona, with the leakage
    threshold dashed: training personas above it were dropped as near-copies."""
    fig, ax = new_figure()
    if leakage.empty:
        empty_axes(ax, "no leakage screen recorded")
        return fig
    sns.histplot(data=leakage, x="similarity", bins=25, ax=ax)
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
    ax.set(title=f"Nearest training persona of each benchmark persona (n={len(leakage)})",
           xlabel="cosine similarity (profile and personality as one text)",
           ylabel="benchmark personas")
    return fig
