"""Stages 3-4: QLoRA fine-tuning of the policy, SFT on the preferred replies, then DPO on the
preference pairs, on one consumer GPU (or, slowly, on a CPU for the tiny profile). The QLoRA
building blocks (4-bit base, LoRA, TRL's trainers and arguments) are in `aloe.stages.qlora`.

- SFT (TRL's SFTTrainer) learns only the completion: the prompt's tokens carry no label.
- DPO (TRL's DPOTrainer) continues the SFT adapter (`dpo.start_from: sft`, the default) or a
  fresh one on the base (`start_from: base`). No second model is loaded for the reference:
  from the SFT adapter, the reference is a frozen copy of that adapter on the same base
  (the SFT policy, as DPO wants); from the base, it is the base with the adapter disabled.

Outputs (`params.layout`): `adapters/sft/` and `adapters/dpo/` (standard PEFT adapters with the
tokenizer, plus `training_log.csv` and `training_stats.json`), and, while a training runs, its
checkpoints in `training/STAGE/`. A finished adapter is never trained again (delete its folder
to retrain); an interrupted training resumes from its last complete checkpoint.

Past one GPU: `accelerate launch --config_file configs/accelerate_fsdp_qlora.yaml -m aloe
train sft PARAMS` (see docs/scaling.md).

Full fine-tuning (`method: full`, params/paper_full.yaml; the released code's way): every
weight trains, no adapter; the stage's folder (`adapters/STAGE/`) then holds the whole model
(config.json, model.safetensors, tokenizer) beside the same log and statistics, and stage 5
loads it as the model under test. DPO's reference is a separate frozen copy of its starting
model. With `processes: N` > 1 the stage launches N ranks through accelerate with FSDP
(`aloe.stages.launch`); `aloe.stages.full_finetune` sizes the memory and the GPU count.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from aloe.core.config import Params, TrainingConfig
from aloe.core.errors import ParamsError
from aloe.core.layout import ADAPTER_CONFIG, ADAPTER_STATS
from aloe.core.layout import ADAPTER_STAGES as STAGES
from aloe.core.progress import Reporter, reporter
from aloe.core.records import follow_umask, read_json, write_json
from aloe.stages import model_card
from aloe.stages.launch import launch_stage, needs_launch
from aloe.stages.policy import (
    Device,
    adapter_weights,
    base_model,
    check_model_reference,
    detect_device,
    same_model,
    verify_adapter_weights,
    weights_record,
)
from aloe.stages.qlora import (
    build_dpo_trainer,
    build_sft_trainer,
    load_reference_model,
    load_start_model,
    load_tokenizer,
    model_config,
    peak_memory,
    trainer_arguments,
)
from aloe.stages.training_data import load_splits, prepare_dataset

log = logging.getLogger("aloe.stages.training")

LOG_FILE = "training_log.csv"
STATS_FILE = ADAPTER_STATS
COMPARISON_FILE = "comparison.json"
LOG_COLUMNS = ("step", "epoch", "loss", "learning_rate", "grad_norm", "rewards/chosen",
               "rewards/rejected", "rewards/margins", "rewards/accuracies", "num_input_tokens_seen")


@dataclass
class TrainResult:
    """What one training stage produced: where the adapter is, its log and its figures."""

    stage: str
    adapter_dir: Path
    base_model: str
    stats: dict[str, Any]
    log: pd.DataFrame
    skipped: bool = False  # finished by an earlier run: nothing was trained by this call
    resumed_from_step: int = 0  # the checkpoint this call continued from (0: from scratch)

    def summary(self) -> dict[str, Any]:
        """One row of the stage table: time, throughput, memory (machine-readable keys)."""
        s = self.stats
        return {"stage": self.stage, "steps": s.get("steps"), "examples": s.get("train_examples"),
                "device": s.get("device"), "wall_s": s.get("train_wall_s"),
                "tokens": s.get("train_tokens"), "tokens_per_s": s.get("tokens_per_s"),
                "peak_memory_gb": s.get("peak_memory_gb"), "memory": s.get("peak_memory_kind"),
                "final_loss": s.get("final_loss")}


# The stage table's columns as a reader sees them: what each is, and its unit.
STAT_LABELS = {"steps": "optimiser steps", "examples": "training examples", "device": "device",
               "wall_s": "training time (s)", "tokens": "tokens trained",
               "tokens_per_s": "tokens/s", "peak_memory_gb": "peak memory (GB)",
               "memory": "memory measured as", "final_loss": "final loss (nats/token)"}
MEMORY_KINDS = {"process_peak_rss": "process peak RSS (CPU)",
                "cuda_max_allocated": "peak CUDA allocation"}


def stats_table(results: Sequence[TrainResult]) -> pd.DataFrame:
    """The notebooks' and the report's table: one row per stage, labelled with units and
    rounded to what the measurement can tell."""
    table = pd.DataFrame([r.summary() for r in results]).set_index("stage")
    if table.empty:
        return table
    table["memory"] = table["memory"].map(lambda kind: MEMORY_KINDS.get(kind, kind))
    table = table.round({"wall_s": 1, "tokens_per_s": 1, "peak_memory_gb": 2, "final_loss": 3})
    table.index = table.index.str.upper()
    return table.rename(columns=STAT_LABELS)


# --------------------------------------------------------------------------------------------
# Where things go
# --------------------------------------------------------------------------------------------
def stage_config(params: Params, stage: str) -> TrainingConfig:
    if stage not in STAGES:
        raise ValueError(f"unknown training stage {stage!r}: expected one of {', '.join(STAGES)}")
    return getattr(params, stage)

def is_finished(params: Params, stage: str) -> bool:
    """An adapter folder with its config, its statistics (written last) and its weights; one
    without weights is unfinished (trained again), whatever else it holds. A stage trained in
    full holds the model's config.json instead of the adapter's."""
    folder = params.layout.adapter(stage)
    return ((folder / _config_file(stage_config(params, stage))).exists()
            and (folder / STATS_FILE).exists() and adapter_weights(folder) is not None)


def _config_file(cfg: TrainingConfig) -> str:
    """The file that says what a stage's folder holds: an adapter's config or a model's."""
    return "config.json" if cfg.method == "full" else ADAPTER_CONFIG


def _redo(stage: str) -> str:
    return f"delete the folder and run stage {3 if stage == 'sft' else 4} ({stage}) again"


# --------------------------------------------------------------------------------------------
# Validation: one clear line, before any model is loaded
# --------------------------------------------------------------------------------------------
def validate_training_inputs(params: Params, stage: str) -> str:
    """Check what a stage needs before it loads anything; return the base model (id or path).

    Raises `ParamsError` with one line naming the key and the file for: a missing dataset
    export, a base model path that does not exist, a Hugging Face id that is not cached while
    offline, an unknown optimiser, DPO from an SFT adapter that is missing or was trained on
    another base. (`lora_r: 0` and other out-of-range numbers are refused by the schema when
    the parameter file is read.)
    """
    cfg = stage_config(params, stage)
    where = params.source
    if cfg.lora_r < 1:  # the schema refuses it; kept for params edited after validation
        raise ParamsError(f"{where}: key '{stage}.lora_r': the LoRA rank must be at least 1 "
                          f"(got {cfg.lora_r})")
    data = params.layout.dataset(stage)
    if not (data / "dataset_dict.json").exists():
        raise ParamsError(f"{where}: no {stage} dataset at {data} (no dataset_dict.json): run "
                          "stage 2 (notebook 02_conversations) first, or check run.name and "
                          "run.output_dir")
    return validate_model_inputs(params, stage)


def validate_model_inputs(params: Params, stage: str) -> str:
    """The model half of `validate_training_inputs`, for every stage (GRPO has no export):
    the base model, the optimiser, and a `start_from: sft` whose SFT adapter is there and was
    trained on the same base. Returns the base model."""
    from aloe.core.local_model import LocalModelError

    cfg = stage_config(params, stage)
    where = params.source
    if cfg.base_model:
        check_model_reference(cfg.base_model, f"{where}: key '{stage}.base_model'")
    try:
        base = base_model(params, stage)
    except LocalModelError as error:
        raise ParamsError(f"{where}: {error}") from None
    _check_optimizer(str(cfg.trainer["optim"]), f"{where}: key '{stage}.trainer.optim'")
    if _from_sft(cfg):
        sft = params.layout.adapter("sft")
        if params.sft.method != cfg.method:
            raise ParamsError(f"{where}: {stage}.start_from is 'sft' but sft.method is "
                              f"'{params.sft.method}' and {stage}.method '{cfg.method}': give "
                              f"both the same method, or set {stage}.start_from: base")
        if not (sft / _config_file(cfg)).exists():
            raise ParamsError(f"{where}: {stage}.start_from is 'sft' but there is no SFT "
                              f"{'model' if cfg.method == 'full' else 'adapter'} at "
                              f"{sft}: run stage 3 (notebook 03_sft) first, or set "
                              f"{stage}.start_from: base")
        verify_adapter_weights(sft, _redo("sft"))
        sft_base = base_model(params, "sft")
        if not same_model(sft_base, base):
            raise ParamsError(f"{where}: {stage}.base_model ({base}) differs from "
                              f"sft.base_model ({sft_base}) but {stage}.start_from is 'sft': "
                              "use the same base model")
    return base


def start_model(params: Params, stage: str, base: str, device: Device) -> Any:
    """The model `stage` trains (`qlora.load_start_model`): from the SFT adapter or model for
    `start_from: sft`, else from the base."""
    cfg = stage_config(params, stage)
    sft = params.layout.adapter("sft") if _from_sft(cfg) else None
    return load_start_model(cfg, base, device, sft)


def _from_sft(cfg: TrainingConfig) -> bool:
    """A stage that continues the SFT model or adapter (`start_from: sft`: DPO, GRPO)."""
    return getattr(cfg, "start_from", None) == "sft"

def _check_optimizer(name: str, key: str) -> None:
    from transformers.training_args import OptimizerNames

    known = {o.value for o in OptimizerNames}
    if name != "auto" and name not in known:
        raise ParamsError(f"{key}: unknown optimiser {name!r}: 'auto' or one of transformers' "
                          "OptimizerNames (e.g. paged_adamw_8bit, adamw_torch)")


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (its trainer_state.json is written last); incomplete
    ones, left by a kill in the middle of a save, are removed."""
    if not folder.is_dir():
        return None
    found = sorted((p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for checkpoint in found:
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
            return checkpoint
        except (OSError, ValueError):
            pass
        log.warning("removing incomplete checkpoint %s", checkpoint)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def train_sft(params: Params, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Stage 3: SFT of a LoRA adapter on the preferred replies (loss on the completion only)."""
    return train_stage(params, "sft", callbacks)

def train_dpo(params: Params, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Stage 4: DPO on the preference pairs, from the SFT adapter or from the base."""
    return train_stage(params, "dpo", callbacks)

# A stage's own checks before loading anything (-> base model) and trainer, for train_stage
Validator = Callable[[Params, str], str]
TrainerBuilder = Callable[[Params, str, str, Device, Sequence[Any]], Any]


def train_stage(params: Params, stage: str, callbacks: Sequence[Any] = (), *,
                validate: Validator | None = None,
                build: TrainerBuilder | None = None) -> TrainResult:
    """Train one stage, or return the saved result when its adapter is already finished.

    SFT and DPO use this module's validation and trainer; another stage (GRPO, `aloe.stages.grpo`)
    passes its own `validate` and `build` and shares the rest: the finished-adapter check,
    resuming from the last checkpoint, the statistics, the adapter's folder and its card."""
    validate = validate or validate_training_inputs
    build = build or _stage_trainer
    cfg = stage_config(params, stage)
    folder = params.layout.adapter(stage)
    if (folder / STATS_FILE).exists() and adapter_weights(folder) is None:
        log.warning("%s: the adapter at %s has no weights file: it counts as unfinished and is "
                    "trained again", stage, folder)
    if is_finished(params, stage):
        verify_adapter_weights(folder, _redo(stage))
        result = load_result(params, stage)
        _warn_if_changed(result, cfg, stage)
        log.info("%s: finished adapter found at %s: not training again (delete the folder to "
                 "retrain)", stage, result.adapter_dir)
        if cfg.merge and cfg.method == "lora":
            merge_adapter(params, stage)
        return result
    base = validate(params, stage)
    if needs_launch(cfg):  # full fine-tuning on several GPUs: N ranks under accelerate
        launch_stage(params, stage)
        result = load_result(params, stage)
        result.skipped = False
        return result
    device = detect_device()
    if device.kind == "cpu":
        log.info("%s: no GPU: training on CPU, computing in float32", stage)
    else:
        import torch

        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer = build(params, stage, base, device, callbacks)
    load_s = time.perf_counter() - started

    work = params.layout.checkpoints(stage)
    checkpoint = last_checkpoint(work)
    resumed = _checkpoint_step(checkpoint)
    if checkpoint is not None:
        log.info("%s: resuming from %s (step %d)", stage, checkpoint, resumed)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    wall = time.perf_counter() - started

    history = log_frame(trainer.state.log_history)
    stats = _stats(trainer, stage, cfg, base, device, load_s=load_s, wall=wall,
                   resumed=resumed, train_loss=output.training_loss)
    stats["final_loss"] = _last(history, "loss")
    stats.update(getattr(trainer, "aloe_stats", lambda _: {})(history))  # a stage's own (GRPO)
    target = params.layout.adapter(stage)
    _save_adapter(trainer, target, history, stats)
    if trainer.accelerator.is_main_process:
        model_card.write_card(params, stage)
    if trainer.accelerator.is_main_process:
        shutil.rmtree(work, ignore_errors=True)
        if cfg.merge and cfg.method == "lora":
            merge_adapter(params, stage)
    return TrainResult(stage, target, base, stats, history, skipped=False,
                       resumed_from_step=resumed)


def _stage_trainer(params: Params, stage: str, base: str, device: Device,
                   callbacks: Sequence[Any]) -> Any:
    """Tokenizer, data, 4-bit base (+ the SFT adapter for DPO from SFT) and the TRL trainer;
    in full, the starting model (the SFT model for DPO from SFT) and DPO's frozen copy of it."""
    cfg = stage_config(params, stage)
    start = str(params.layout.adapter("sft")) if _from_sft(cfg) and cfg.method == "full" else base
    tokenizer = load_tokenizer(base)
    train = prepare_dataset(load_splits(params, stage)["train"], tokenizer, stage,
                            int(cfg.trainer["max_length"]))
    reference = {}
    if stage == "dpo" and cfg.method == "full":
        reference["ref_model"] = load_reference_model(start, device)
    model = start_model(params, stage, base, device)
    args = trainer_arguments(stage, cfg, params.layout.checkpoints(stage), device,
                             seed=params.run.seed)
    build = build_sft_trainer if stage == "sft" else build_dpo_trainer
    live = progress_callback(reporter(params.layout.progress, "steps"))
    return build(model, tokenizer, train, args, cfg, [*callbacks, live],
                 tensorboard_dir=params.layout.tensorboard(stage), **reference)


def progress_callback(live: Reporter) -> Any:
    """A TrainerCallback that reports step, loss and tokens/s as the stage's live progress
    (`aloe.core.progress`); built here so that importing this module does not import
    transformers."""
    from transformers import TrainerCallback

    class LiveProgress(TrainerCallback):
        def __init__(self) -> None:
            self.loss: float | None = None
            self.started: tuple[float, int] | None = None  # (time, tokens seen) at the start

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = (time.perf_counter(), state.num_input_tokens_seen)
            self._report(state, force=True)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
            self._report(state)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._report(state)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._report(state, force=True)

        def _report(self, state: Any, force: bool = False) -> None:
            if not state.is_world_process_zero:
                return
            details = [] if self.loss is None else [f"loss {self.loss:.3f}"]
            if self.started is not None:
                seconds = time.perf_counter() - self.started[0]
                tokens = state.num_input_tokens_seen - self.started[1]
                if seconds > 0 and tokens > 0:
                    details.append(f"{tokens / seconds:,.0f} tokens/s")
            live.total = state.max_steps or None
            live.update(state.global_step, details, force=force)

    return LiveProgress()

def _stats(trainer: Any, stage: str, cfg: TrainingConfig, base: str, device: Device, *,
           load_s: float, wall: float, resumed: int, train_loss: float) -> dict[str, Any]:
    """Time, throughput and memory of this call (a resumed run counts only its own steps)."""
    state, optim = trainer.state, trainer.args.optim
    tokens = state.num_input_tokens_seen - getattr(trainer, "_initial_num_input_tokens_seen", 0)
    return {
        "stage": stage, "base_model": model_card.portable_base(base), "device": device.name,
        "compute_dtype": str(device.compute_dtype).removeprefix("torch."),
        "method": cfg.method, "load_in_4bit": cfg.load_in_4bit, "fsdp": trainer.is_fsdp_enabled,
        "optimizer": optim if isinstance(optim, str) else optim.value,
        "world_size": trainer.accelerator.num_processes,
        "steps": state.global_step, "resumed_from_step": resumed,
        "train_examples": len(trainer.train_dataset), "train_loss": train_loss,
        "load_s": round(load_s, 2), "train_wall_s": round(wall, 2),
        "train_tokens": int(tokens), "total_tokens": int(state.num_input_tokens_seen),
        "tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
        **peak_memory(device),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "config": cfg.model_dump(mode="json"),
        "start_from": getattr(cfg, "start_from", None),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

def _checkpoint_step(checkpoint: Path | None) -> int:
    return int(checkpoint.name.split("-")[-1]) if checkpoint else 0

def _last(frame: pd.DataFrame, column: str) -> float | None:
    if column not in frame or frame[column].dropna().empty:
        return None
    return float(frame[column].dropna().iloc[-1])

def log_frame(log_history: list[dict[str, Any]]) -> pd.DataFrame:
    """The per-step training log (loss, learning rate, grad norm; DPO rewards, margins and
    accuracies) out of the Trainer's history, one row per logged step."""
    rows = [entry for entry in log_history if "loss" in entry and "step" in entry]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["step", "loss", "learning_rate", "grad_norm"])
    frame = frame.drop_duplicates("step", keep="last").sort_values("step")
    frame = frame.drop(columns=[c for c in frame if c.startswith("train_")])  # session totals
    first = [c for c in LOG_COLUMNS if c in frame]
    return frame[first + [c for c in frame.columns if c not in first]].reset_index(drop=True)

def _save_adapter(trainer: Any, target: Path, history: pd.DataFrame,
                  stats: dict[str, Any]) -> None:
    """Write adapter, tokenizer, log and stats into a staging folder, then move it into place,
    so that a folder at `target` is always a finished adapter."""
    staging = target.with_name(f".{target.name}.partial")
    if trainer.accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_fsdp_enabled:  # gather the shards into one adapter file
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(staging))  # every process takes part (FSDP gathers)
    trainer.accelerator.wait_for_everyone()
    if not trainer.accelerator.is_main_process:
        return
    for sub in staging.iterdir():  # DPO's frozen reference copy is not part of the adapter
        if sub.is_dir() and (sub / ADAPTER_CONFIG).exists():
            shutil.rmtree(sub)
    model_card.make_portable(staging / "adapter_config.json")  # no machine path travels
    history.to_csv(staging / LOG_FILE, index=False)
    stats["adapter_weights"] = weights_record(staging)  # checked before every later load
    write_json(staging / STATS_FILE, stats)
    (staging / "training_args.bin").unlink(missing_ok=True)
    follow_umask(staging)
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)

def load_result(params: Params, stage: str) -> TrainResult:
    """The saved result of a finished stage (its stats and log)."""
    folder = params.layout.adapter(stage)
    if not is_finished(params, stage):
        raise FileNotFoundError(f"no finished {stage} adapter at {folder}")
    stats = read_json(folder / STATS_FILE)
    history = pd.read_csv(folder / LOG_FILE) if (folder / LOG_FILE).exists() else pd.DataFrame()
    return TrainResult(stage, folder, stats.get("base_model", ""), stats, history, skipped=True,
                       resumed_from_step=stats.get("resumed_from_step", 0))

def _warn_if_changed(result: TrainResult, cfg: TrainingConfig, stage: str) -> None:
    before = _flat(result.stats.get("config") or {})
    now = _flat(cfg.model_dump(mode="json"))
    changed = [f"{k}: {before.get(k)!r} -> {v!r}" for k, v in now.items()
               if k in before and before[k] != v and k != "merge"]
    if changed:
        log.warning("%s: the adapter at %s was trained with other parameters (%s); delete "
                    "the folder to retrain", stage, result.adapter_dir, "; ".join(changed))


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """A section's keys with the trainer's options beside them (`trainer.beta`, ...)."""
    flat = {k: v for k, v in config.items() if k != "trainer"}
    flat.update({f"trainer.{k}": v for k, v in (config.get("trainer") or {}).items()})
    return flat


# --------------------------------------------------------------------------------------------
# Merge and compare
# --------------------------------------------------------------------------------------------
def merge_adapter(params: Params, stage: str) -> Path:
    """A full model (base + adapter merged, in the compute dtype) for serving, e.g. by vLLM."""
    target = params.layout.merged(stage)
    if (target / "config.json").exists():
        return target
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = load_result(params, stage)
    device = detect_device()
    base = base_model(params, stage)  # this machine's copy; the adapter names a portable one
    model = AutoModelForCausalLM.from_pretrained(base, config=model_config(base),
                                                 dtype=device.compute_dtype)
    merged = PeftModel.from_pretrained(model, str(result.adapter_dir)).merge_and_unload()
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(staging, safe_serialization=True)
    load_tokenizer(str(result.adapter_dir)).save_pretrained(staging)
    follow_umask(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    log.info("%s: merged model written to %s", stage, target)
    return target

def compare_replies(params: Params, adapters: Sequence[str] = ("sft",), n: int = 3,
                    max_new_tokens: int | None = None) -> pd.DataFrame:
    """Greedy replies of the base model and of each finished adapter to `n` held-out prompts
    (the validation split; the train split when validation is empty), side by side with the
    reply the data preferred. The base is loaded once (as stage 5 loads it, unquantised); the
    adapters are attached to it in turn, and switched off for the base's own replies.

    The table is kept beside the last adapter and reused while the adapters and the settings
    are unchanged, so that rerunning a finished run does not load and generate again."""
    stage = adapters[-1] if adapters else "sft"
    max_new_tokens = max_new_tokens or params.evaluation.max_new_tokens
    saved = params.layout.adapter_file(stage, COMPARISON_FILE)
    key = _comparison_key(params, adapters, n, max_new_tokens)
    if saved.exists() and (kept := read_json(saved)).get("key") == key:
        return pd.DataFrame(kept["rows"])
    table = _generate_comparison(params, adapters, stage, n, max_new_tokens)
    write_json(saved, {"key": key, "rows": table.to_dict(orient="records")})
    return table

def _comparison_key(params: Params, adapters: Sequence[str], n: int,
                    max_new_tokens: int) -> dict[str, Any]:
    """What the comparison depends on: the settings, and each adapter's weights file."""
    weights = {}
    for name in adapters:
        file = adapter_weights(params.layout.adapter(name)) or params.layout.adapter_file(
            name, "adapter_model.safetensors")
        stat = file.stat() if file.exists() else None
        weights[name] = [stat.st_size, stat.st_mtime_ns] if stat else None
    return {"adapters": list(adapters), "n": n, "max_new_tokens": max_new_tokens,
            "seed": params.run.seed, "weights": weights}

def _generate_comparison(params: Params, adapters: Sequence[str], stage: str, n: int,
                         max_new_tokens: int) -> pd.DataFrame:
    from peft import PeftModel

    from aloe.stages.policy import InProcessResponder

    splits = load_splits(params, stage)
    split = "validation" if len(splits.get("validation", [])) else "train"
    rows = splits[split].select(range(min(n, len(splits[split]))))
    histories = [list(r["prompt"]) for r in rows]
    preferred = [(r.get("completion") or r.get("chosen"))[0]["content"] for r in rows]
    table = pd.DataFrame({"split": split, "user": [h[-1]["content"] for h in histories],
                          "preferred (data)": preferred})
    responder = InProcessResponder(base_model(params, stage), None,
                                   batch_size=max(1, len(histories)), temperature=0.0,
                                   max_new_tokens=max_new_tokens, seed=params.run.seed)
    try:
        table["base"] = [reply.text for reply in responder.reply_many(histories)]
        base = responder.model
        for name in adapters:
            if stage_config(params, name).method == "full":  # a whole model: its own replies
                table[name] = _full_model_replies(params, name, histories, max_new_tokens)
                continue
            if not isinstance(responder.model, PeftModel):
                responder.model = PeftModel.from_pretrained(base, str(params.layout.adapter(name)),
                                                            adapter_name=name)
            else:
                responder.model.load_adapter(str(params.layout.adapter(name)), adapter_name=name)
            responder.model.set_adapter(name)
            responder.model.eval()
            table[name] = [reply.text for reply in responder.reply_many(histories)]
    finally:
        responder.close()
    return table


def _full_model_replies(params: Params, stage: str, histories: list[list[dict[str, str]]],
                        max_new_tokens: int) -> list[str]:
    """Greedy replies of a stage trained in full (its folder is the whole model)."""
    from aloe.stages.policy import InProcessResponder

    responder = InProcessResponder(str(params.layout.adapter(stage)), None,
                                   batch_size=max(1, len(histories)), temperature=0.0,
                                   max_new_tokens=max_new_tokens, seed=params.run.seed)
    try:
        return [reply.text for reply in responder.reply_many(histories)]
    finally:
        responder.close()
