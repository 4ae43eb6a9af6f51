"""Figures for the stage notebooks and the report (seaborn). One function per figure, each
taking plain data (records, DataFrames, dicts) and returning a matplotlib Figure, so a stage
notebook and the report draw the same picture from the same call.

Sections below belong to the stages; add a stage's figures in its own section.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

PALETTE = "colorblind"


def style() -> None:
    """One look for every figure of the workbook."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)


def new_figure(width: float = 6.4, height: float = 3.6, ncols: int = 1) -> tuple[Figure, Any]:
    style()
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), constrained_layout=True)
    return fig, axes


# ------------------------------------------------------------------------------------------
# Usage ledger (all stages)
# ------------------------------------------------------------------------------------------
def usage_table(history: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per stage session and role: requests, cache hits, retries, tokens, cost."""
    rows = []
    for entry in history:
        for role, usage in entry.get("roles", {}).items():
            rows.append({"stage": entry["stage"], "role": role, **usage})
    columns = ["stage", "role", "model", "requests", "cache_hits", "retries", "failures",
               "prompt_tokens", "completion_tokens", "cost_usd"]
    return pd.DataFrame(rows, columns=columns)


def plot_usage(history: list[dict[str, Any]]) -> Figure:
    """Requests sent vs answered from the cache, per stage."""
    table = usage_table(history)
    fig, ax = new_figure()
    if table.empty:
        ax.text(0.5, 0.5, "no LLM requests recorded", ha="center", va="center")
        ax.set_axis_off()
        return fig
    per_stage = table.groupby("stage", sort=False)[["requests", "cache_hits"]].sum()
    per_stage.plot.barh(ax=ax, stacked=True)
    ax.set_xlabel("LLM calls")
    ax.set_ylabel("")
    ax.set_title("LLM calls per stage: sent vs served from the cache")
    return fig


# ------------------------------------------------------------------------------------------
# Stage 1: personas
# ------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------
# Stage 2: conversations
# ------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------
# Stages 3-4: training
# ------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------
# Stage 5: evaluation
# ------------------------------------------------------------------------------------------
