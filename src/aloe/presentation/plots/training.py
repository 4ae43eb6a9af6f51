"""Stages 3-4's figures: the training and validation loss, DPO's rewards and margin, GRPO's
rewards per step.
"""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from aloe.presentation.plots.base import empty_axes, figure_legend, integer_ticks, new_figure


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


def plot_grpo_rewards(log: pd.DataFrame) -> Figure:
    """GRPO per optimiser step: each reward's mean over the step's sampled replies (TRL's
    `rewards/NAME/mean`, on its own scale) beside the loss and the KL to the reference."""
    fig, (reward_ax, loss_ax) = new_figure(ncols=2)
    columns = {c: c.split("/")[1] for c in log if c.startswith("rewards/") and c.endswith("/mean")}
    if log.empty or not columns:
        for ax in (reward_ax, loss_ax):
            empty_axes(ax, "no GRPO rewards logged")
        return fig
    rewards = log.melt(id_vars="step", value_vars=list(columns), var_name="reward",
                       value_name="value").replace({"reward": columns}).dropna(subset=["value"])
    if rewards.empty:  # every step's replies went unscored (unreadable judge answers)
        empty_axes(reward_ax, "no step had a readable reward")
    else:
        sns.lineplot(data=rewards, x="step", y="value", hue="reward", style="reward",
                     markers=True, ax=reward_ax)
        reward_ax.set(title=f"Mean reward of the sampled replies (n = {len(log)} logged steps)",
                      xlabel="optimiser step", ylabel="reward (each on its own scale)")
    curves = {c: label for c, label in (("loss", "loss"), ("kl", "KL to the reference"))
              if c in log}
    table = log.melt(id_vars="step", value_vars=list(curves), var_name="curve",
                     value_name="value").replace({"curve": curves})
    sns.lineplot(data=table, x="step", y="value", hue="curve", style="curve", markers=True,
                 ax=loss_ax)
    loss_ax.set(title="GRPO loss and KL", xlabel="optimiser step", ylabel="value")
    for ax in (reward_ax, loss_ax):
        integer_ticks(ax, "x")
    figure_legend(fig, reward_ax, "reward")
    return fig
