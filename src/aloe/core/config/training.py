"""The training stages' sections (`sft`, `dpo`, `grpo`): the method (QLoRA or every weight),
LoRA, and TRL's own trainer options passed through, bounded above and below and checked at
load time.
"""


from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from aloe.core.config.base import MAX_TOKENS, MAX_TURNS, Int, Real, Section

# Upper bounds of TRL's counting options (TRL itself takes any number): a typo stops the run
# when the file loads, not when the trainer allocates or plans 10^14 steps.
TRAINER_LIMITS = {
    "max_length": MAX_TOKENS, "max_prompt_length": MAX_TOKENS,
    "max_completion_length": MAX_TOKENS,
    "max_steps": 100_000_000,  # optimiser steps: years of training beyond that
    "num_train_epochs": 100_000.0,
    "per_device_train_batch_size": 65_536, "per_device_eval_batch_size": 65_536,
    "gradient_accumulation_steps": 65_536,
    "save_steps": 100_000_000, "logging_steps": 100_000_000,
}

# Lower bounds: below them TRL trains nothing (and the stage would save an untrained adapter
# with exit 0) or fails hours in. max_steps also takes -1: "train num_train_epochs".
TRAINER_MINIMUMS = {
    "max_length": 1, "max_prompt_length": 1, "max_completion_length": 1,
    "max_steps": 1, "num_train_epochs": 0.0, "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1, "gradient_accumulation_steps": 1, "save_steps": 1,
    "logging_steps": 1, "learning_rate": 0.0, "beta": 0.0,
}
EXCLUSIVE_MINIMUMS = {"num_train_epochs", "learning_rate", "beta"}  # must be above, not at

# Options that TRL's trainer configs get from the workbook, not from a parameter file.
# transformers 5 renamed gradient checkpointing; the old names still load (as the new ones),
# so that TRL is handed only current names and warns about nothing.
RENAMED_TRAINER_OPTIONS = {"gradient_checkpointing": "activation_checkpointing",
                           "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}
RESERVED_TRAINER_OPTIONS = {
    "output_dir": "the run folder decides it (training/STAGE/)",
    "seed": "set run.seed",
    "use_cpu": "the workbook detects the device",
    "push_to_hub": "the workbook never uploads: adapters travel as files with their model card "
                   "(upload one with `hf upload`)",
}


class TrainingConfig(Section):
    """Shared by SFT and DPO: QLoRA, or full fine-tuning, of a causal LM (see
    `aloe.stages.training`).

    `method: lora` trains a LoRA adapter on the base (4-bit NF4 when `load_in_4bit`: QLoRA);
    `method: full` trains every weight (bf16 compute over float32 master weights, as the
    released code did), with `processes` > 1 launched through accelerate with FSDP
    (`aloe.stages.launch`); `aloe.stages.full_finetune` sizes it.
    The workbook's own keys are the model, its 4-bit loading and the LoRA adapter; everything
    the TRL trainer takes goes in `trainer:`, as TRL names it (SFTConfig / DPOConfig fields,
    e.g. learning_rate, num_train_epochs, max_length, beta, report_to), checked against TRL's
    options when the file loads. Keys not given take the defaults below.
    """

    TRAINER_DEFAULTS: ClassVar[dict[str, Any]] = {
        "learning_rate": 2e-4,
        "max_steps": -1,  # -1: train num_train_epochs
        "num_train_epochs": 1.0,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "activation_checkpointing": True,  # recompute activations in the backward pass
        "max_length": 1024,  # tokens; longer histories lose their oldest turns
        "optim": "auto",  # auto: paged_adamw_8bit on one GPU, adamw_torch on CPU and FSDP
        "logging_steps": 1,
        "save_steps": 50,  # checkpoint interval: an interrupted run resumes there
    }
    STAGE: ClassVar[str] = "sft"
    # What the workbook sets in TRL's config for this stage, under the file's `trainer:` options
    # (`qlora.trainer_arguments`); not parameters, so not written into the run's params.
    WORKBOOK_TRAINER_OPTIONS: ClassVar[dict[str, Any]] = {}
    # TRL options that this stage's own keys set (option -> why), refused under `trainer:`.
    STAGE_RESERVED: ClassVar[dict[str, str]] = {}

    base_model: str | None = None  # HF id or local path; None: the local/embedded model
    method: Literal["lora", "full"] = "lora"  # lora: an adapter; full: every weight, no adapter
    processes: Int = Field(1, ge=1, le=1024)  # full: GPUs to shard over (FSDP), one process each
    load_in_4bit: bool = True
    lora_r: Int = Field(16, ge=1, le=4096)  # LoRA rank: 0 would train nothing; >4096: a typo
    lora_alpha: Int = Field(32, ge=1, le=65_536)
    lora_dropout: Real = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"
    merge: bool = False  # also write merged/STAGE: base + adapter as one model, for serving
    trainer: dict[str, Any] = Field(default_factory=dict, validate_default=True)  # TRL's own

    @field_validator("trainer")
    @classmethod
    def _trl_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        from aloe.core.trainer_options import check_trainer_options

        for key, why in {**RESERVED_TRAINER_OPTIONS, **cls.STAGE_RESERVED}.items():
            if key in value:
                raise ValueError(f"'{key}' is not set here: {why}")
        hub = sorted(key for key in value if key.startswith("hub_"))
        if hub:  # a token written here would be copied into the run's records
            raise ValueError(f"'{hub[0]}' is not set here: the workbook never uploads, and a "
                             "token belongs in HF_TOKEN, never in a parameter file")
        value = current_trainer_names(value)
        check_trainer_options(cls.STAGE, value)
        for key, given in value.items():
            if isinstance(given, (int, float)) and not isinstance(given, bool):
                _check_trainer_number(key, given)
        return {**cls.TRAINER_DEFAULTS, **value}

    @model_validator(mode="after")
    def _method_fits(self) -> "TrainingConfig":
        stage = self.STAGE
        if self.method == "full" and self.load_in_4bit:
            raise ValueError(f"{stage}.method 'full' trains every weight in bf16, not a 4-bit "
                             f"base: set {stage}.load_in_4bit: false")
        if self.method == "lora" and self.processes > 1:
            raise ValueError(f"{stage}.processes > 1 is for method 'full'; QLoRA on several "
                             "GPUs: accelerate launch --config_file "
                             "configs/accelerate_fsdp_qlora.yaml (docs/scaling.md)")
        return self


def _check_trainer_number(key: str, given: float) -> None:
    """Finite, and within the option's bounds (TRAINER_LIMITS, TRAINER_MINIMUMS)."""
    if not math.isfinite(given):
        raise ValueError(f"'{key}' must be a finite number (got {given!r})")
    limit = TRAINER_LIMITS.get(key)
    if limit is not None and given > limit:
        raise ValueError(f"'{key}' must be at most {limit:,} (got {given!r})")
    low = TRAINER_MINIMUMS.get(key)
    if low is None or (key == "max_steps" and given == -1):
        return
    if given < low or (key in EXCLUSIVE_MINIMUMS and given <= low):
        relation = "above" if key in EXCLUSIVE_MINIMUMS else "at least"
        also = " (or -1: train num_train_epochs)" if key == "max_steps" else ""
        raise ValueError(f"'{key}' must be {relation} {low:g}{also} (got {given!r})")


def current_trainer_names(options: dict[str, Any]) -> dict[str, Any]:
    """The trainer options with transformers' renamed ones under their current names."""
    renamed = dict(options)
    for old, new in RENAMED_TRAINER_OPTIONS.items():
        if old not in renamed:
            continue
        value = renamed.pop(old)
        if new in renamed and renamed[new] != value:
            raise ValueError(f"'{old}' and '{new}' disagree: '{old}' is the old name of "
                             f"'{new}'; give only '{new}'")
        renamed[new] = value
    return renamed


class SFTConfig(TrainingConfig):
    STAGE: ClassVar[str] = "sft"
    WORKBOOK_TRAINER_OPTIONS: ClassVar[dict[str, Any]] = {"completion_only_loss": True,
                                                          "packing": False}

    # The chat an SFT example's prompt holds before its user message. continued (this
    # workbook, and the released DPO): the branch the conversation went on with. preferred
    # (released SFT): the judge's preferred reply at every earlier turn.
    history: Literal["continued", "preferred"] = "continued"


class DPOConfig(TrainingConfig):
    TRAINER_DEFAULTS: ClassVar[dict[str, Any]] = {
        **TrainingConfig.TRAINER_DEFAULTS, "learning_rate": 5e-5, "beta": 0.1}
    STAGE: ClassVar[str] = "dpo"
    WORKBOOK_TRAINER_OPTIONS: ClassVar[dict[str, Any]] = {"truncation_mode": "keep_start"}

    start_from: Literal["sft", "base"] = "sft"


GRPO_REWARD_NAMES = ("judge", "inference", "future")


class GRPORewards(Section):
    """The weight of each reward of the environment (`aloe.stages.environment`); 0 turns it off.

    judge: the protocol's judge score of the reply (ALOE 1-5, RLPA 0/1); inference: how right
    what the policy says it inferred (a `<profile>...</profile>` in its reply) is, 0-1;
    future: the judge's mean score of the policy's replies over `future_turns` sampled future
    turns (CollabLLM-style), averaged over `future_samples` futures."""

    judge: Real = Field(1.0, ge=0.0, le=1000.0)
    inference: Real = Field(0.0, ge=0.0, le=1000.0)
    future: Real = Field(0.0, ge=0.0, le=1000.0)

    def on(self) -> dict[str, float]:
        """The rewards turned on, with their weights, in a fixed order."""
        return {name: float(getattr(self, name)) for name in GRPO_REWARD_NAMES
                if getattr(self, name) > 0}


class GRPOConfig(TrainingConfig):
    """Turn-level GRPO against the simulated users (`aloe.stages.grpo`): the workbook's keys decide
    the rollouts (dialogues, turns, group size) and the rewards; `trainer:` is TRL's
    GRPOConfig (learning_rate, max_completion_length, beta, temperature, ...)."""

    TRAINER_DEFAULTS: ClassVar[dict[str, Any]] = {
        "learning_rate": 1e-5,
        "max_steps": -1,  # -1: train num_train_epochs (one pass over the turns)
        "num_train_epochs": 1.0,
        "per_device_train_batch_size": 8,  # completions per micro-batch: a multiple of G
        "gradient_accumulation_steps": 4,
        "activation_checkpointing": True,
        "max_completion_length": 256,  # tokens of one sampled reply
        "beta": 0.04,  # KL to the starting policy (DeepSeekMath's); 0: no reference pass
        "temperature": 1.0,
        "optim": "auto",
        "logging_steps": 1,
        "save_steps": 50,
    }
    STAGE: ClassVar[str] = "grpo"
    # GRPO counts the tokens of its rollouts itself; the Trainer's own count finds no inputs
    WORKBOOK_TRAINER_OPTIONS: ClassVar[dict[str, Any]] = {"include_num_input_tokens_seen": "no"}
    STAGE_RESERVED: ClassVar[dict[str, str]] = {
        "num_generations": "set grpo.num_generations",
        "reward_weights": "set grpo.rewards (a weight per reward)",
        "max_prompt_length": "set grpo.max_prompt_length",
    }

    # Off unless a profile turns it on: ALOE's method has no RL stage, and GRPO sends the user
    # and judge roles requests at every step (`aloe plan` counts them when it is on).
    enabled: bool = False
    start_from: Literal["sft", "base"] = "sft"
    turns: Int = Field(3, ge=1, le=MAX_TURNS)  # a dialogue's length: rows train turns 1..turns
    num_generations: Int = Field(8, ge=2, le=1024)  # G: replies sampled per turn, one group
    dialogues_per_persona: Int = Field(1, ge=1, le=1000)  # seeds: simulated users per persona
    rewards: GRPORewards = GRPORewards()
    future_turns: Int = Field(0, ge=0, le=MAX_TURNS)  # K: turns each sampled future plays
    future_samples: Int = Field(1, ge=1, le=64)  # futures the future reward averages
    max_prompt_length: Int = Field(1024, ge=16, le=MAX_TOKENS)  # history tokens kept (newest)

    @model_validator(mode="after")
    def _rollouts_fit(self) -> "GRPOConfig":
        if self.method != "lora":
            raise ValueError("grpo.method: GRPO trains a LoRA adapter here (a rollout samples "
                             "from the model being trained); set grpo.method: lora")
        rewards = self.rewards.on()
        if not rewards:
            raise ValueError("grpo.rewards: every weight is 0: turn one reward on (e.g. "
                             "judge: 1.0)")
        if "future" in rewards and self.future_turns < 1:
            raise ValueError("grpo.rewards.future is on but grpo.future_turns is 0: set "
                             "future_turns (K) to 1 or more, or the future weight to 0")
        batch = (int(self.trainer["per_device_train_batch_size"])
                 * int(self.trainer["gradient_accumulation_steps"]))
        if batch % self.num_generations:
            raise ValueError(f"grpo.trainer.per_device_train_batch_size x "
                             f"gradient_accumulation_steps ({batch}) must be a multiple of "
                             f"grpo.num_generations ({self.num_generations}): each turn's "
                             "group of replies is scored together")
        return self


