"""Stage 5: the benchmark. Each model under test talks with every benchmark persona for K
turns; a simulated user (the same role-play as stage 2) writes each user message, the model
replies, and the judge scores the reply for how well it fits that person, under the protocol
that `evaluation.protocol` names (`aloe.core.protocols`: ALOE's 1-5 scores, or RLPA's 1/0 judgement
on five criteria with a fixed first message "Hello").

What this adds to the released evaluation: every model of a run in one pass (the base model,
this run's SFT and DPO adapters, any Hugging Face model with an optional adapter, or a model
behind an OpenAI-compatible endpoint); in-process replies generated in batches, all the
benchmark conversations of a turn at once (left padding, each conversation through its own chat
template); judge replies read robustly (`parse_score`), re-asked once when unreadable and then
recorded as missing, never guessed (`aloe.roles.judges`); and a stage that resumes per (model,
persona, turn). The models under test are loaded or reached through `aloe.stages.policy`.

Beyond the paper's evaluation (each a key of `evaluation`, each stored apart, see
`aloe.core.layout`):
- `user_mode: replay`: every model gets the user messages that `replay_from` got in its live
  run, so that paired differences compare policies on identical inputs.
- `preference_shift`: from turn K the persona's personality (or profile) is another one; the
  simulated user is told so and the judge scores against the changed persona. `turns` has no
  upper bound (long dialogues).
- `inference_probe`: after each turn, in a side branch that does not continue the
  conversation, the model says what it has learned about the user; the judge scores that
  against the true persona (0-1).
- `simulator_check`: the judge measures how much of the persona the simulated user's messages
  have given away, and whether each contradicts it.
- `judge_check`: `roles.second_judge` re-judges a sample of replies; agreement with the main
  judge (`aloe.analysis.agreement`).

Records: `RUN/eval/[VARIANT/]MODEL.jsonl`, one per (persona, turn), appended when a turn of all
the conversations is finished: `{"model", "persona_id", "profile_id", "turn", "user", "reply",
"truncated", "score", "raw_judgement", "judge_attempts", "protocol", "user_source",
"shifted"}`, plus `expected_score` when the judge's backend returns token log-probabilities.
Metrics: `RUN/metrics.json` (the configured variant's) and each variant's own metrics.json
(see `aloe.analysis.metrics`).

A model whose adapter folder is missing stops the stage before any work, with an error naming
the folder (for "sft"/"dpo": run stages 3-4 first, or drop the model from `evaluation.models`):
a run that silently skipped a model would publish a comparison that is not the one asked for.

Where each part lives: `benchmark` (the users), `run` (what the stage needs, resolved once
at its entry and passed down: settings, protocol, sources, users, files), `dialogue` (the
conversations, the judge's scores, the inference probe), `side` (the simulated user and the
judge measured), `results` (records read back, metrics, transcripts) and `stage` (`run_stage`,
all of it in order). This module names what notebooks and commands use.
"""

from aloe.stages.evaluation.benchmark import (
    Conversationist,
    EvaluationError,
    benchmark_personas,
    shifted_persona,
)
from aloe.stages.evaluation.dialogue import ModelProgress, probe_model, remaining_turns
from aloe.stages.evaluation.results import (
    comparison_pair,
    compute_metrics,
    human_agreement,
    load_records,
    sibling_metrics,
    transcripts,
    with_design,
)
from aloe.stages.evaluation.run import EvaluationRun
from aloe.stages.evaluation.side import check_judge, check_simulator, judge_sample
from aloe.stages.evaluation.stage import EvaluationSummary, planned_requests, run_stage

__all__ = [
    "Conversationist", "EvaluationError", "EvaluationRun", "EvaluationSummary", "ModelProgress",
    "benchmark_personas", "check_judge", "check_simulator", "comparison_pair",
    "compute_metrics", "human_agreement", "judge_sample", "load_records", "planned_requests",
    "probe_model",
    "remaining_turns", "run_stage", "shifted_persona", "sibling_metrics", "transcripts",
    "with_design",
]
