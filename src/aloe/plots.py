"""Figures for the stage notebooks, the report and the comparison page (seaborn). One function
per figure, each taking plain data (records, DataFrames, dicts) and returning a matplotlib
Figure, so a stage notebook and the report draw the same picture from the same call.

Every figure reads on its own: axes say what they count and in which unit, the title says how
many observations (n) it rests on, count axes have whole-number ticks, legends sit beside the
data (never on it), lines that may coincide differ in marker and line style and are nudged
apart, and the width fills the page (`PAGE_WIDTH`).

Sections below belong to the stages; add a stage's figures in its own section.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from aloe import protocols
from aloe.findings import unit_words

PALETTE = "colorblind"
PAGE_WIDTH = 10.0  # inches
DPI = 120  # PAGE_WIDTH x DPI = 1200 pixels: the report's text column on a laptop screen
HEIGHT = 4.0
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")
NUDGE = 0.06  # x offset between series that share x positions, in x units


def style() -> None:
    """One look for every figure of the workbook (PAGE_WIDTH inches at DPI: the page's width)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE,
                  rc={"figure.dpi": DPI, "savefig.dpi": DPI})


def new_figure(width: float = PAGE_WIDTH, height: float = HEIGHT,
               ncols: int = 1) -> tuple[Figure, Any]:
    style()
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), constrained_layout=True)
    plt.close(fig)  # detached: a notebook shows the returned figure once, as the cell's value
    return fig, axes


def empty_axes(ax: Any, message: str) -> None:
    """Say on the axes why there is nothing to draw (a stage not run, no data yet)."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def integer_ticks(ax: Any, axis: str = "y") -> None:
    """Whole-number ticks on a count axis ("x", "y" or "both")."""
    for name in ("x", "y") if axis == "both" else (axis,):
        getattr(ax, f"{name}axis").set_major_locator(MaxNLocator(integer=True))


def legend_beside(ax: Any, title: str | None = None) -> None:
    """Move an axes' legend to its right, off the data."""
    if ax.get_legend() is not None or ax.get_legend_handles_labels()[0]:
        ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def figure_legend(fig: Figure, ax: Any, title: str | None = None) -> None:
    """One legend for the whole figure, right of every panel (taken from `ax`)."""
    handles, labels = ax.get_legend_handles_labels()
    for axis in fig.axes:
        if axis.get_legend() is not None:
            axis.get_legend().remove()
    if handles:
        fig.legend(handles, labels, title=title, loc="outside right center", frameon=False)


def series_style(index: int, count: int) -> dict[str, Any]:
    """Marker, line style and x nudge of the index-th of `count` series that may coincide."""
    return {"marker": MARKERS[index % len(MARKERS)],
            "linestyle": LINESTYLES[index % len(LINESTYLES)],
            "nudge": (index - (count - 1) / 2) * NUDGE}


def _values(items: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in items]


def _interval_lines(ax: Any, x: Sequence[float], mid: Sequence[float | None],
                    low: Sequence[float | None], high: Sequence[float | None], color: Any,
                    label: str, index: int, count: int) -> None:
    """A series with its interval as error bars, styled to stay visible under another."""
    look = series_style(index, count)
    xs = [k + look["nudge"] for k in x]
    y, lo, hi = _values(mid), _values(low), _values(high)
    errors = [[max(0.0, a - b) for a, b in zip(y, lo)], [max(0.0, b - a) for a, b in zip(y, hi)]]
    ax.errorbar(xs, y, yerr=errors, color=color, marker=look["marker"],
                linestyle=look["linestyle"], capsize=3, markersize=6, linewidth=1.6,
                label=label)


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


# ------------------------------------------------------------------------------------------
# Stage 1: personas
# ------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------
# Stage 2: conversations
# (each takes `aloe.conversation_views.turn_table(records)`: one row per turn)
# ------------------------------------------------------------------------------------------
def _conversations_n(turns: pd.DataFrame) -> str:
    return f"{turns['conversation_id'].nunique()} conversations, {len(turns)} turns"


def plot_hinted_win_rate(turns: pd.DataFrame) -> Figure:
    """Share of decided turns where the hinted reply wins, per turn, with a 95% CI.

    The paper's premise: it should rise as the user reveals more of themselves.
    """
    fig, ax = new_figure()
    decided = turns[turns.preferred.isin(["hinted", "plain"])] if not turns.empty else turns
    if decided.empty:
        empty_axes(ax, "no decided turns")
        return fig
    data = decided.assign(hinted_wins=(decided.preferred == "hinted").astype(float))
    sns.pointplot(data=data, x="turn", y="hinted_wins", errorbar=("ci", 95), ax=ax,
                  label="hinted reply preferred (95% CI)")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("turn")
    ax.set_ylabel("share of decided turns")
    ax.set_title(f"How often the judge prefers the hinted reply (n = {len(decided)} decided "
                 f"turns of {_conversations_n(turns)})")
    legend_beside(ax)
    return fig


def plot_verdicts(turns: pd.DataFrame) -> Figure:
    """Per turn, the share of verdicts of each kind: hinted and plain, and inconsistent and
    unparseable where the run gave any (a judge asked once is never inconsistent: neither
    the legend nor the title speaks of what the run cannot give)."""
    fig, ax = new_figure()
    if turns.empty:
        empty_axes(ax, "no turns")
        return fig
    given = set(turns.preferred)
    order = ["hinted", "plain"] + [v for v in ("inconsistent", "unparseable") if v in given]
    shares = (pd.crosstab(turns.turn, turns.preferred, normalize="index")
              .reindex(columns=order, fill_value=0.0))
    shares.plot.bar(stacked=True, ax=ax, rot=0, width=0.8)
    ax.set_xlabel("turn")
    ax.set_ylabel("share of judged turns")
    ax.set_ylim(0, 1)
    legend_beside(ax, "verdict")
    explained = "; inconsistent: the two orders disagreed" if "inconsistent" in given else ""
    ax.set_title(f"Judge verdicts by turn (n = {_conversations_n(turns)}{explained})")
    return fig


def plot_reply_lengths(turns: pd.DataFrame) -> Figure:
    """Reply lengths in words, hinted vs plain, per turn."""
    fig, ax = new_figure()
    if turns.empty:
        empty_axes(ax, "no turns")
        return fig
    long = turns.melt(id_vars=["turn"], value_vars=["hinted_words", "plain_words"],
                      var_name="reply", value_name="words")
    long["reply"] = long.reply.str.removesuffix("_words")
    sns.boxplot(data=long, x="turn", y="words", hue="reply", ax=ax)
    ax.set_xlabel("turn")
    ax.set_ylabel("reply length (words)")
    integer_ticks(ax, "y")
    ax.set_title(f"Reply length: hinted vs plain (n = {_conversations_n(turns)})")
    legend_beside(ax, "reply")
    return fig


def plot_persona_recovery(turns: pd.DataFrame) -> Figure:
    """How much of the true profile and personality the inducer has written down, by turn
    (lexical recall of the true description's content words, 95% CI)."""
    fig, ax = new_figure()
    if turns.empty:
        empty_axes(ax, "no turns")
        return fig
    long = turns.melt(id_vars=["turn"], value_vars=["profile_recall", "personality_recall"],
                      var_name="part", value_name="recall")
    long["part"] = long.part.str.removesuffix("_recall")
    sns.pointplot(data=long, x="turn", y="recall", hue="part", errorbar=("ci", 95), ax=ax,
                  dodge=0.2, markers=["o", "s"], linestyles=["-", "--"])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("turn")
    ax.set_ylabel("share of the true description's words")
    ax.set_title(f"Persona recovered by the inducer (n = {_conversations_n(turns)}; 95% CI)")
    legend_beside(ax, "description")
    return fig


# ------------------------------------------------------------------------------------------
# Stages 3-4: training
# (each takes `TrainResult.log`: the per-step training log, one row per logged step)
# ------------------------------------------------------------------------------------------
def _stage_logs(logs: pd.DataFrame | dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One long table with a `stage` column out of one log or a {stage: log} mapping."""
    if isinstance(logs, pd.DataFrame):
        logs = {"training": logs}
    frames = [pd.DataFrame(log).assign(stage=stage.upper()) for stage, log in logs.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_training_loss(logs: pd.DataFrame | dict[str, pd.DataFrame]) -> Figure:
    """Training loss and learning rate per optimiser step, one line per stage."""
    table = _stage_logs(logs)
    fig, (loss_ax, lr_ax) = new_figure(ncols=2)
    if table.empty or "loss" not in table:
        for ax in (loss_ax, lr_ax):
            empty_axes(ax, "no training steps logged")
        return fig
    sns.lineplot(data=table, x="step", y="loss", hue="stage", style="stage", markers=True,
                 ax=loss_ax)
    loss_ax.set(title=f"Training loss (n = {len(table)} logged steps)", xlabel="optimiser step",
                ylabel="loss (nats/token)")
    if "learning_rate" in table:
        sns.lineplot(data=table, x="step", y="learning_rate", hue="stage", style="stage",
                     markers=True, ax=lr_ax, legend=False)
    lr_ax.set(title="Learning rate", xlabel="optimiser step", ylabel="learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in (loss_ax, lr_ax):
        integer_ticks(ax, "x")
    figure_legend(fig, loss_ax, "stage")
    return fig


def plot_dpo_rewards(log: pd.DataFrame) -> Figure:
    """DPO's implicit rewards (beta x log-ratio to the reference) of the chosen and rejected
    replies and their margin, and the share of pairs ranked right (reward accuracy)."""
    fig, (reward_ax, acc_ax) = new_figure(ncols=2)
    columns = {"rewards/chosen": "chosen", "rewards/rejected": "rejected",
               "rewards/margins": "margin"}
    present = [c for c in columns if c in log]
    if log.empty or not present:
        for ax in (reward_ax, acc_ax):
            empty_axes(ax, "no DPO rewards logged")
        return fig
    rewards = log.melt(id_vars="step", value_vars=present, var_name="reward",
                       value_name="value").replace({"reward": columns})
    sns.lineplot(data=rewards, x="step", y="value", hue="reward", style="reward", markers=True,
                 ax=reward_ax)
    reward_ax.axhline(0, color="grey", linewidth=0.8)
    reward_ax.set(title=f"Implicit rewards and margin (n = {len(log)} logged steps)",
                  xlabel="optimiser step", ylabel="reward (beta x log-ratio)")
    if "rewards/accuracies" in log:
        sns.lineplot(data=log, x="step", y="rewards/accuracies", marker="o", ax=acc_ax)
    acc_ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    acc_ax.set(ylim=(-0.05, 1.05), xlabel="optimiser step", ylabel="share of pairs ranked right",
               title="Reward accuracy (chance: 0.5)")
    for ax in (reward_ax, acc_ax):
        integer_ticks(ax, "x")
    figure_legend(fig, reward_ax, "reward")
    return fig


# ------------------------------------------------------------------------------------------
# Stage 5: evaluation
# ------------------------------------------------------------------------------------------
def _unit(summary: dict[str, Any]) -> str:
    return str(summary.get("bootstrap_unit") or summary.get("unit") or "persona")


def _draw_alignment(ax: Any, curves: dict[str, dict[str, Any]], colors: Sequence[Any],
                    summary: dict[str, Any]) -> None:
    """AL(k) of several series on one axes, each with its interval as error bars, on the
    scale of `summary`'s protocol."""
    for index, (color, (label, m)) in enumerate(zip(colors, curves.items())):
        _interval_lines(ax, m["turns"], m["al"], m["al_low"], m["al_high"], color,
                        f"{label} (n = {m['n_personas']})", index, len(curves))
    _turn_ticks(ax, sorted({t for m in curves.values() for t in m["turns"]}))
    ax.set_xlabel("turn k")
    ax.set_ylabel(protocols.of_summary(summary).al_axis)
    ax.set_ylim(*_al_range(summary))


def _al_range(summary: dict[str, Any]) -> tuple[float, float]:
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
    _draw_alignment(ax, models, sns.color_palette(PALETTE, len(models)), summary)
    level = round(100 * summary.get("confidence", 0.95))
    _mark_shift(ax, summary)
    ax.set_title(f"Alignment level per turn, {protocols.of_summary(summary).name} protocol "
                 f"({level}% bootstrap CI over {unit_words(_unit(summary))}; n: benchmark "
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
    al_ax.set_ylim(*_al_range(summary))
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


def score_distribution_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Share of each score (1-5, or missing) per model and turn."""
    rows = [{"model": r["model"], "turn": int(r["turn"]),
             "score": "missing" if r.get("score") is None else str(r["score"])} for r in records]
    table = pd.DataFrame(rows, columns=["model", "turn", "score"])
    if table.empty:
        return table
    counts = table.groupby(["model", "turn", "score"]).size().rename("count").reset_index()
    counts["share"] = counts["count"] / counts.groupby(["model", "turn"])["count"].transform("sum")
    return counts


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


# ------------------------------------------------------------------------------------------
# Across runs (aloe compare)
# ------------------------------------------------------------------------------------------
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
        _draw_alignment(ax, curves, palette, next(iter(runs.values())))
        ax.set_title(model)
    for ax in axes[1:]:
        ax.set_ylabel("")
    figure_legend(fig, axes[0], "run (n: benchmark personas)")
    fig.suptitle("Alignment level per turn, run by run (bars: bootstrap CI)")
    return fig
