"""Stage 2's figures, each from `aloe.presentation.conversation_views.turn_table(records)` (one row
per turn): the hinted reply's win rate, the verdicts, reply lengths, what the inducer recovered.
"""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from aloe.presentation.plots.base import empty_axes, integer_ticks, legend_beside, new_figure


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
