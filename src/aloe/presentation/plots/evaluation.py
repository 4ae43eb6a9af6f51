"""Stage 5's figures: AL(k) with its intervals, inference beside AL, the simulated user
measured, recovery after a shift, the scores' distribution, the missing judgements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from aloe.analysis.findings import unit_words
from aloe.core import protocols
from aloe.presentation.plots.base import (
    PALETTE,
    empty_axes,
    figure_legend,
    interval_lines,
    legend_beside,
    new_figure,
)
from aloe.presentation.tables import score_distribution_table


def unit_of(summary: dict[str, Any]) -> str:
    return str(summary.get("bootstrap_unit") or summary.get("unit") or "persona")


def draw_alignment(ax: Any, curves: dict[str, dict[str, Any]], colors: Sequence[Any],
                    summary: dict[str, Any]) -> None:
    """AL(k) of several series on one axes, each with its interval as error bars, on the
    scale of `summary`'s protocol."""
    for index, (color, (label, m)) in enumerate(zip(colors, curves.items())):
        interval_lines(ax, m["turns"], m["al"], m["al_low"], m["al_high"], color,
                        f"{label} (n = {m['n_personas']})", index, len(curves))
    _turn_ticks(ax, sorted({t for m in curves.values() for t in m["turns"]}))
    ax.set_xlabel("turn k")
    ax.set_ylabel(protocols.of_summary(summary).al_axis)
    ax.set_ylim(*al_range(summary))


def al_range(summary: dict[str, Any]) -> tuple[float, float]:
    """The AL scale of the summary's protocol (1-5 for ALOE, 0-100 for RLPA)."""
    low, high = (summary.get("protocol") or {}).get("al_range") or (1.0, 5.0)
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def _mark_shift(ax: Any, summary: dict[str, Any]) -> None:
    shift = summary.get("preference_shift")
    if shift:
        ax.axvline(shift["turn"] - 0.5, color="0.3", linestyle="--", linewidth=1)
        ax.annotate(f"{shift['change']} changes", (shift["turn"] - 0.5, 1.0),
                    xycoords=("data", "axes fraction"), ha="left", va="top", fontsize=8,
                    xytext=(3, -3), textcoords="offset points")


def _band(ax: Any, turns: list[int], values: list[Any], low: list[Any], high: list[Any],
          color: Any, label: str) -> None:
    nan = float("nan")
    clean = [[nan if v is None else v for v in series] for series in (values, low, high)]
    ax.plot(turns, clean[0], marker="o", color=color, label=label)
    ax.fill_between(turns, clean[1], clean[2], color=color, alpha=0.2, linewidth=0)


def plot_alignment_levels(summary: dict[str, Any]) -> Figure:
    """AL(k) per model over the turns, with the bootstrap CI as error bars (from metrics.json),
    on the protocol's scale; a preference shift is marked. Curves that coincide stay visible:
    each has its own marker and line style, nudged apart."""
    fig, ax = new_figure()
    models = summary.get("models", {})
    if not models:
        empty_axes(ax, "no evaluation records")
        return fig
    draw_alignment(ax, models, sns.color_palette(PALETTE, len(models)), summary)
    level = round(100 * summary.get("confidence", 0.95))
    _mark_shift(ax, summary)
    ax.set_title(f"Alignment level per turn, {protocols.of_summary(summary).name} protocol "
                 f"({level}% bootstrap CI over {unit_words(unit_of(summary))}; n: benchmark "
                 "personas)")
    legend_beside(ax, "model")
    return fig


def _turn_ticks(ax: Any, turns: list[int]) -> None:
    step = max(1, len(turns) // 12)  # long dialogues: a readable axis
    ax.set_xticks(turns[::step])


def plot_inference_beside_al(summary: dict[str, Any]) -> Figure:
    """Left: AL(k); right: the accuracy of what each model says it has learned about the user
    at turn k (0-1), both with bootstrap bands: does a model know its user before it serves
    them well?"""
    fig, (al_ax, inf_ax) = new_figure(width=11, height=3.6, ncols=2)
    models = summary.get("models", {})
    inference = summary.get("inference") or {}
    if not models or not inference:
        for ax in (al_ax, inf_ax):
            empty_axes(ax, "no inference probes in this run (evaluation.inference_probe)")
        return fig
    colors = dict(zip(models, sns.color_palette(PALETTE, len(models))))
    for name, m in models.items():
        _band(al_ax, m["turns"], m["al"], m["al_low"], m["al_high"], colors[name], name)
        if name in inference:
            c = inference[name]
            _band(inf_ax, c["turns"], c["value"], c["low"], c["high"], colors[name], name)
    al_ax.set_ylim(*al_range(summary))
    inf_ax.set_ylim(-0.05, 1.05)
    al_ax.set(xlabel="turn k", ylabel="AL(k)", title="Alignment level")
    inf_ax.set(xlabel="turn k", ylabel="inference accuracy (0-1)",
               title="What the model has learned about the user")
    for ax in (al_ax, inf_ax):
        _turn_ticks(ax, next(iter(models.values()))["turns"])
        _mark_shift(ax, summary)
    inf_ax.legend(title="model", loc="best")
    return fig


def plot_simulator(summary: dict[str, Any]) -> Figure:
    """The simulated user measured: the share of its persona given away up to turn k (judge
    and word overlap) with the flag line, and the share of messages contradicting it."""
    fig, (reveal_ax, contra_ax) = new_figure(width=11, height=3.6, ncols=2)
    simulator = summary.get("simulator") or {}
    if not simulator:
        for ax in (reveal_ax, contra_ax):
            empty_axes(ax, "no simulator measures")
        return fig
    colors = dict(zip(simulator, sns.color_palette(PALETTE, len(simulator))))
    flag = None
    for name, s in simulator.items():
        flag = s.get("reveal_flag")
        for key, style in (("revealed", "-"), ("lexical", ":")):
            c = s.get(key)
            if c:
                label = f"{name}, {'judge' if key == 'revealed' else 'word overlap'}"
                _band(reveal_ax, c["turns"], c["value"], c["low"], c["high"], colors[name],
                      label)
                reveal_ax.lines[-1].set_linestyle(style)
        c = s.get("contradiction")
        if c:
            _band(contra_ax, c["turns"], c["value"], c["low"], c["high"], colors[name], name)
    if flag is not None:
        reveal_ax.axhline(flag, color="firebrick", linewidth=1, linestyle="--")
        reveal_ax.annotate("flag: most given away", (0.0, flag), xycoords=("axes fraction",
                           "data"), xytext=(3, 3), textcoords="offset points", fontsize=8,
                           color="firebrick")
    turns = next(c["turns"] for s in simulator.values() for c in (s.get("lexical"),
                                                                  s.get("revealed")) if c)
    for ax in (reveal_ax, contra_ax):
        _turn_ticks(ax, turns)
    reveal_ax.set(ylim=(-0.05, 1.05), xlabel="turn k", ylabel="share of the persona",
                  title="What the simulated user has given away")
    reveal_ax.legend(loc="best", fontsize=8)
    if contra_ax.lines:
        contra_ax.set(ylim=(-0.05, 1.05), xlabel="turn k", ylabel="share of user messages",
                      title="Messages contradicting the persona")
        _mark_shift(contra_ax, summary)
    else:
        empty_axes(contra_ax, "contradictions not checked (evaluation.simulator_check)")
    _mark_shift(reveal_ax, summary)
    return fig


def plot_recovery(summary: dict[str, Any]) -> Figure:
    """Turns until each model's AL regains its pre-shift level, with the bootstrap interval;
    a model that does not recover within the turns run is drawn at that limit, hatched."""
    fig, ax = new_figure()
    recovery = summary.get("recovery") or {}
    if not recovery:
        empty_axes(ax, "no preference shift in this run (evaluation.preference_shift)")
        return fig
    names = list(recovery)
    colors = sns.color_palette(PALETTE, len(names))
    for i, (name, color) in enumerate(zip(names, colors)):
        r = recovery[name]
        t = r["turns_to_recover"]
        limit = r["turns_run"] - r["shift_turn"] + 1
        if r["recovered"]:
            ax.bar(i, t["value"], color=color)
            if t["low"] is not None and t["high"] is not None:
                ax.errorbar(i, t["value"], yerr=[[t["value"] - t["low"]],
                                                 [t["high"] - t["value"]]],
                            color="black", capsize=4)
        else:
            ax.bar(i, limit, color="none", edgecolor=color, hatch="//")
            ax.annotate("not recovered", (i, limit), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names)
    shift = next(iter(recovery.values()))["shift_turn"]
    ax.set(ylabel="turns after the shift", title=f"Recovery after the preference shift at "
           f"turn {shift}")
    return fig


def plot_score_distribution(records: list[dict[str, Any]]) -> Figure:
    """Per model, the share of each judge score at each turn (stacked; missing in grey)."""
    table = score_distribution_table(records)
    models = list(dict.fromkeys(r["model"] for r in records))
    fig, axes = new_figure(height=3.8, ncols=max(1, len(models)))
    axes = list(axes) if len(models) > 1 else [axes]
    if table.empty:
        empty_axes(axes[0], "no evaluation records")
        return fig
    levels = ["1", "2", "3", "4", "5", "missing"]
    colors = dict(zip(levels[:5], sns.color_palette("RdYlGn", 5)))
    colors["missing"] = (0.75, 0.75, 0.75)
    for ax, model in zip(axes, models):
        wide = (table[table.model == model].pivot(index="turn", columns="score", values="share")
                .reindex(columns=levels).fillna(0.0))
        wide.plot.bar(ax=ax, stacked=True, color=[colors[c] for c in levels], width=0.8,
                      legend=False, rot=0)
        n = int(table[table.model == model]["count"].sum())
        ax.set_title(f"{model} (n = {n} replies)")
        ax.set_xlabel("turn")
        ax.set_ylabel("share of replies")
        ax.set_ylim(0, 1)
    figure_legend(fig, axes[0], "judge score")
    fig.suptitle("Judge scores per turn (1: worst, 5: best; grey: no readable score)")
    return fig


def plot_missing_rate(summary: dict[str, Any]) -> Figure:
    """The share of turns whose judgement held no readable score (even after one re-ask)."""
    rows = []
    for name, m in summary.get("models", {}).items():
        for turn, scored, missing in zip(m["turns"], m["n_scored"], m["n_missing"]):
            judged = scored + missing
            rows.append({"model": name, "turn": turn, "judged": judged,
                         "missing": missing / judged if judged else float("nan")})
    fig, ax = new_figure(height=3.2)
    table = pd.DataFrame(rows)
    if table.empty:
        empty_axes(ax, "no evaluation records")
        return fig
    sns.barplot(data=table, x="turn", y="missing", hue="model", ax=ax)
    if not table["missing"].fillna(0.0).any():  # no bar to see: say why
        ax.text(0.5, 0.5, "every judgement had a readable score", ha="center", va="center",
                transform=ax.transAxes, color="grey")
    ax.set_ylim(0, 1)
    ax.set_xlabel("turn")
    ax.set_ylabel("share without a score")
    overall = ", ".join(f"{name} {m['missing_rate']:.0%}" for name, m in summary["models"].items()
                        if m.get("missing_rate") is not None)
    ax.set_title(f"Judgements without a score (n = {int(table['judged'].sum())} judgements; "
                 f"{overall})")
    legend_beside(ax, "model")
    return fig
