"""Figures for the stage notebooks, the report and the comparison page (seaborn). One function
per figure, each taking plain data (records, DataFrames, dicts) and returning a matplotlib
Figure, so a stage notebook and the report draw the same picture from the same call.

Every figure reads on its own: axes say what they count and in which unit, the title says how
many observations (n) it rests on, count axes have whole-number ticks, legends sit beside the
data (never on it), lines that may coincide differ in marker and line style and are nudged
apart, and the width fills the page (`PAGE_WIDTH`).

The figures live by stage (`personas`, `conversations`, `training`, `evaluation`, `usage`,
`compare`) on what every figure shares (`base`); a new stage's figures are a new module here.
"""

from aloe.presentation.plots.base import style
from aloe.presentation.plots.compare import plot_alignment_comparison
from aloe.presentation.plots.conversations import (
    plot_hinted_win_rate,
    plot_persona_recovery,
    plot_reply_lengths,
    plot_verdicts,
)
from aloe.presentation.plots.evaluation import (
    plot_alignment_levels,
    plot_inference_beside_al,
    plot_missing_rate,
    plot_recovery,
    plot_score_distribution,
    plot_simulator,
)
from aloe.presentation.plots.personas import (
    plot_persona_leakage,
    plot_pool_map,
    plot_saturation,
    plot_similarity,
)
from aloe.presentation.plots.training import plot_dpo_rewards, plot_grpo_rewards, plot_training_loss
from aloe.presentation.plots.usage import plot_usage

__all__ = [
    "plot_alignment_comparison",
    "plot_alignment_levels",
    "plot_dpo_rewards",
    "plot_grpo_rewards",
    "plot_hinted_win_rate",
    "plot_inference_beside_al",
    "plot_missing_rate",
    "plot_persona_leakage",
    "plot_persona_recovery",
    "plot_pool_map",
    "plot_recovery",
    "plot_reply_lengths",
    "plot_saturation",
    "plot_score_distribution",
    "plot_similarity",
    "plot_simulator",
    "plot_training_loss",
    "plot_usage",
    "plot_verdicts",
    "style",
]
