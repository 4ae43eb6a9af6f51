"""The figures (`aloe.presentation.plots`), drawn directly from hand-made data: each reads on its
own (a title with its n, labelled axes, the page's width), draws what the data holds, and says on
the panel why there is nothing to draw when a stage has not run, instead of failing or drawing an
empty frame."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from aloe.analysis.metrics import summarise  # noqa: E402
from aloe.presentation import plots, tables  # noqa: E402
from aloe.presentation.conversation_views import turn_table  # noqa: E402
from aloe.presentation.plots.base import PAGE_WIDTH  # noqa: E402
from tests.support.conversation_runs import hand_tree  # noqa: E402
from tests.support.score_tables import records  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(fig) -> str:
    """Every text the figure shows: titles, axis labels, notes, legends."""
    found = [fig._suptitle.get_text() if fig._suptitle else ""]
    for ax in fig.axes:
        found += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        found += [t.get_text() for t in ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            found += [t.get_text() for t in legend.get_texts()]
    for legend in fig.legends:
        found += [t.get_text() for t in legend.get_texts()]
    return " | ".join(t for t in found if t)


def _drawn(fig) -> int:
    """How many things the figure's panels draw (lines, bars and other patches, collections)."""
    return sum(len(ax.lines) + len(ax.patches) + len(ax.collections) for ax in fig.axes)


def _summary() -> dict:
    by_model = {"base": records("base", {"p1": [2, 3, 3], "p2": [3, None, 4], "p3": [1, 2, 2]}),
                "dpo": records("dpo", {"p1": [3, 4, 5], "p2": [3, 4, 4], "p3": [2, 3, 3]})}
    return summarise(by_model, n_boot=50, models=["base", "dpo"])


def test_the_alignment_figure_draws_each_model_with_its_band_and_its_n() -> None:
    fig = plots.plot_alignment_levels(_summary())
    assert fig.get_size_inches()[0] == pytest.approx(PAGE_WIDTH)
    text = _texts(fig)
    assert "base (n = 3)" in text and "dpo (n = 3)" in text and "AL(k)" in text
    assert _drawn(fig) >= 4  # two curves and two bands at least
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes if ax.axison)


def test_the_evaluation_figures_read_on_their_own() -> None:
    summary = _summary()
    for fig in (plots.plot_missing_rate(summary),
                plots.plot_alignment_comparison({"run-a": summary, "run-b": summary}),
                plots.plot_score_distribution(records("m", {"p1": [1, 2], "p2": [None, 5]}))):
        assert _drawn(fig) > 0 and _texts(fig)
        assert fig.get_size_inches()[0] >= PAGE_WIDTH - 1e-9 or len(fig.axes) > 1


def test_a_stage_that_has_not_run_is_said_on_the_panel() -> None:
    """No records, no rows: each figure says why it is empty, and draws nothing."""
    empty_turns = turn_table([])
    for fig in (plots.plot_hinted_win_rate(empty_turns), plots.plot_verdicts(empty_turns),
                plots.plot_reply_lengths(empty_turns), plots.plot_usage([])):
        notes = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert notes and all(note.strip() for note in notes), _texts(fig)
        assert _drawn(fig) == 0


def test_the_conversation_figures_count_the_turns_they_rest_on() -> None:
    persona = {"id": "p0", "profile": "He is a cook.", "personality": "He is calm."}
    trees = [hand_tree(f"conv-0000{i}", persona, ["hinted", "plain", "hinted"],
                       ["hinted", "hinted", "plain"]) for i in range(3)]
    turns = turn_table(trees)
    assert len(turns) == 9
    win = plots.plot_hinted_win_rate(turns)
    assert _drawn(win) > 0 and "3 conversations" in _texts(win)
    verdicts = plots.plot_verdicts(turns)
    assert _drawn(verdicts) > 0 and "inconsistent" not in _texts(verdicts)


def test_the_usage_figure_is_the_ledgers_table_drawn() -> None:
    history = [{"stage": "conversations", "roles": {
        "user": {"model": "m", "requests": 12, "cache_hits": 3, "retries": 0, "failures": 0,
                 "prompt_tokens": 900, "completion_tokens": 120, "cost_usd": 0.01},
        "judge": {"model": "m", "requests": 5, "cache_hits": 0, "retries": 1, "failures": 0,
                  "prompt_tokens": 400, "completion_tokens": 10, "cost_usd": 0.0}}}]
    table = tables.usage_table(history)
    assert list(table["requests"]) == [12, 5]
    fig = plots.plot_usage(history)
    ticks = [t.get_text() for ax in fig.axes
             for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert _drawn(fig) > 0 and "conversations" in ticks
    assert "(n = 20 calls" in _texts(fig)  # 17 sent and 3 answered from the cache


def test_the_training_figures_draw_the_logged_steps() -> None:
    log = pd.DataFrame({"step": [1, 2, 3, 4], "loss": [2.0, 1.6, 1.3, 1.1],
                        "learning_rate": [1e-4, 1e-4, 9e-5, 8e-5],
                        "rewards/chosen": [0.0, 0.1, 0.2, 0.3],
                        "rewards/rejected": [0.0, -0.1, -0.2, -0.2],
                        "rewards/margins": [0.0, 0.2, 0.4, 0.5]})
    loss = plots.plot_training_loss({"sft": log})
    assert _drawn(loss) > 0 and "loss" in _texts(loss).lower()
    rewards = plots.plot_dpo_rewards(log)
    assert _drawn(rewards) > 0


def test_grpo_steps_without_a_readable_reward_are_gaps_or_said_on_the_panel() -> None:
    log = pd.DataFrame({"step": [1, 2, 3], "loss": [0.1, 0.0, -0.1], "kl": [0.0, 0.01, 0.02],
                        "rewards/judge/mean": [3.5, None, 4.0],
                        "rewards/judge/unreadable": [0.0, 1.0, 0.5]})
    some = plots.plot_grpo_rewards(log)
    assert _drawn(some) > 0 and "no step had a readable reward" not in _texts(some)
    none = plots.plot_grpo_rewards(log.assign(**{"rewards/judge/mean": [None] * 3}))
    assert "no step had a readable reward" in _texts(none)
    assert "GRPO loss and KL" in _texts(none)  # the loss panel still draws
