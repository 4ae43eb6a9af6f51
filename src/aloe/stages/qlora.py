"""QLoRA building blocks: the 4-bit base model, the LoRA adapter, TRL's trainers and their
arguments. Used by the training stages (`aloe.stages.training`) and by `scripts/gpu_check.py`, which
measures the same code path on a GPU with random weights.

Why QLoRA: the paper fine-tuned 7-8B models in full precision; our users have one 24 GB card.
The base model is loaded in 4-bit NF4 with double quantisation (bitsandbytes), LoRA adapters
are trained on every linear layer, activations are recomputed (gradient checkpointing) and the
optimiser state lives in paged 8-bit AdamW. The same code path runs on CPU, where bitsandbytes
computes in float32 (bfloat16 matmuls are an order of magnitude slower on most CPUs).

`method: full` (the released code's full fine-tuning) goes through the same functions without
the quantisation and the adapter: float32 master weights that the trainer computes with in
bfloat16, every weight trained, and for DPO a separate frozen reference model
(`load_reference_model`).

TRL's options come from the parameter file's `sft.trainer` / `dpo.trainer` / `grpo.trainer`
mappings as they are (`trainer_arguments`); the workbook adds only what it must decide
itself: the output folder, the seed, the device's precision and the checkpoint policy.
"""

from __future__ import annotations

import importlib.util
import logging
import resource
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aloe.core.config import TrainingConfig
from aloe.core.trainer_options import TRL_CONFIGS
from aloe.stages.policy import Device, nf4_config

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger("aloe.stages.training")

KEEP_CHECKPOINTS = 2
BNB_OPTIMIZERS = ("8bit", "paged", "bnb", "lion_32bit", "ademamix")


# --------------------------------------------------------------------------------------------
# Precision and the optimiser
# --------------------------------------------------------------------------------------------
def resolve_optimizer(name: str, device: Device) -> str:
    """'auto': paged 8-bit AdamW on one GPU; plain AdamW under FSDP and on CPU, where the
    bitsandbytes optimisers do not run."""
    if name == "auto":
        return "paged_adamw_8bit" if device.kind == "cuda" and not device.fsdp else "adamw_torch"
    if any(tag in name for tag in BNB_OPTIMIZERS) and (device.kind != "cuda" or device.fsdp):
        where = "on CPU" if device.kind != "cuda" else "under FSDP"
        log.warning("optimiser %s does not run %s: using adamw_torch", name, where)
        return "adamw_torch"
    return name


# --------------------------------------------------------------------------------------------
# The 4-bit base model and the adapter
# --------------------------------------------------------------------------------------------
def quantization_config(cfg: TrainingConfig, device: Device) -> Any:
    """The training base's quantisation: NF4 (`policy.nf4_config`) when `load_in_4bit`."""
    return nf4_config(device) if cfg.load_in_4bit else None

def model_config(base: str) -> Any:
    """The base model's config, without a stale GGUF quantisation entry (the embedded model is
    converted from GGUF to plain safetensors, but its config may still name GGUF, which would
    clash with bitsandbytes)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base)
    quant = getattr(config, "quantization_config", None)
    method = (quant.get("quant_method") if isinstance(quant, dict)
              else getattr(quant, "quant_method", None))
    if str(method).lower().endswith("gguf"):
        del config.quantization_config
    return config

def load_tokenizer(base: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer

def load_base_model(base: str, cfg: TrainingConfig, device: Device) -> Any:
    """The base model ready for k-bit training: 4-bit NF4 (when `load_in_4bit`), norms and
    embeddings upcast for stable training, KV cache off (the trainer turns activation
    checkpointing on)."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    # Full fine-tuning keeps float32 master weights (bf16 compute, like DeepSpeed's bf16 mode
    # and FSDP's mixed precision): updates of 1e-5 vanish when rounded into bf16 weights.
    dtype = torch.float32 if cfg.method == "full" else device.compute_dtype
    kwargs: dict[str, Any] = {"config": model_config(base), "dtype": dtype}
    quant = quantization_config(cfg, device)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if device.kind == "cuda" and not device.fsdp:
        kwargs["device_map"] = {"": device.local_rank}
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    model.config.use_cache = False
    if quant is not None and not device.fsdp:  # FSDP needs one dtype throughout: no upcast
        # Activation checkpointing is the trainer's to turn on, from `activation_checkpointing`
        # (peft's own switch calls transformers' deprecated gradient_checkpointing_enable).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model

def load_start_model(cfg: TrainingConfig, base: str, device: Device,
                     sft: Path | None = None) -> Any:
    """The model a stage trains: the base (4-bit when `load_in_4bit`), or, continuing the SFT
    stage's `sft` folder, its adapter attached and trainable (QLoRA) or its whole model
    (`method: full`)."""
    model = load_base_model(str(sft) if sft and cfg.method == "full" else base, cfg, device)
    if sft and cfg.method == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(sft), is_trainable=True)
        # The SFT adapter names its base portably (a hub id); while training, name this
        # machine's copy, or each save looks the hub id up (a network call, a warning offline).
        # The saved adapter is made portable again like SFT's.
        for adapter in model.peft_config.values():
            adapter.base_model_name_or_path = base
    return model


def load_reference_model(source: str, device: Device) -> Any:
    """Full DPO's reference: a second, frozen copy of the starting model in the compute dtype
    (it is never updated, so no float32 master copy), as the released code loads it."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"config": model_config(source), "dtype": device.compute_dtype}
    if device.kind == "cuda" and not device.fsdp:
        kwargs["device_map"] = {"": device.local_rank}
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    model.config.use_cache = False
    model.requires_grad_(False)
    return model.eval()

def _checkpointing_kwargs(device: Device, cfg: TrainingConfig) -> dict[str, Any]:
    # FSDP + QLoRA wants reentrant checkpointing; full fine-tuning the non-reentrant kind
    return {"use_reentrant": device.fsdp and cfg.method == "lora"}

def lora_config(cfg: TrainingConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, bias="none", task_type="CAUSAL_LM")


# --------------------------------------------------------------------------------------------
# TRL's trainers
# --------------------------------------------------------------------------------------------
def default_report_to() -> str:
    """TensorBoard when it is installed (curves live under the run folder), else no tracker."""
    return "tensorboard" if importlib.util.find_spec("tensorboard") else "none"


def trainer_arguments(stage: str, cfg: TrainingConfig, output_dir: Path, device: Device,
                      seed: int = 0, **overrides: Any) -> Any:
    """TRL's config for `stage` (SFTConfig/DPOConfig/GRPOConfig): the file's `trainer` options
    as they are, over the workbook's defaults (checkpoints every `save_steps`, token counting,
    TensorBoard when it is installed unless `report_to` says otherwise, and the stage's own
    `WORKBOOK_TRAINER_OPTIONS`), with what only the workbook decides (output folder, seed,
    device, precision) and the caller's `overrides` last."""
    import trl

    defaults: dict[str, Any] = dict(
        activation_checkpointing_kwargs=_checkpointing_kwargs(device, cfg), bf16=device.bf16,
        fp16=device.fp16, save_strategy="steps", save_total_limit=KEEP_CHECKPOINTS,
        report_to=default_report_to(), include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0)
    options = {**defaults, **cfg.WORKBOOK_TRAINER_OPTIONS, **cfg.trainer}
    options["optim"] = resolve_optimizer(str(options["optim"]), device)
    options.update(output_dir=str(output_dir), seed=seed, use_cpu=device.kind == "cpu")
    options.update(overrides)
    config = getattr(trl, TRL_CONFIGS[stage][1])  # SFTConfig, DPOConfig, GRPOConfig
    return config(**options)


def tracker_callbacks(args: Any, tensorboard_dir: Path | None) -> list[Any]:
    """TensorBoard, when `report_to` names it, writing to `tensorboard_dir` (under the run
    folder, where it outlives the checkpoints) instead of transformers' default inside the
    output folder; the other trackers of `report_to` stay TRL's to start."""
    if tensorboard_dir is None or "tensorboard" not in (args.report_to or []):
        return []
    from transformers.integrations import TensorBoardCallback

    args.report_to = [name for name in args.report_to if name != "tensorboard"]
    callback = TensorBoardCallback()
    callback.logging_dir = str(tensorboard_dir)  # its writer opens there, on the main process
    return [callback]


def empty_metrics_dropped() -> Any:
    """A TrainerCallback that takes the metrics without a value out of a step's log before the
    trackers after it see them: TRL logs None for a reward no reply of the step could be scored
    by (its mean and spread), which TensorBoard refuses with a warning per value. The log
    history keeps its own copy: `training_log.csv` leaves that step's cell blank."""
    from transformers import TrainerCallback

    class EmptyMetricsDropped(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            for key in [key for key, value in (logs or {}).items() if value is None]:
                del logs[key]  # type: ignore[union-attr]

    return EmptyMetricsDropped()


def build_sft_trainer(model: Any, tokenizer: Any, train: "Dataset", args: Any,
                      cfg: TrainingConfig, callbacks: Sequence[Any] = (),
                      tensorboard_dir: Path | None = None) -> Any:
    """SFTTrainer on prompt/completion pairs: completion-only loss, a fresh LoRA adapter
    (none with `method: full`: every weight trains)."""
    from trl import SFTTrainer

    callbacks = [*callbacks, *tracker_callbacks(args, tensorboard_dir)]
    peft_config = lora_config(cfg) if cfg.method == "lora" else None
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=callbacks)
    _adapter_dtype_for_cpu(trainer.model, args)
    return trainer

def build_dpo_trainer(model: Any, tokenizer: Any, train: "Dataset", args: Any,
                      cfg: TrainingConfig, callbacks: Sequence[Any] = (),
                      tensorboard_dir: Path | None = None, ref_model: Any = None) -> Any:
    """DPOTrainer; `model` is either the base (a fresh adapter is added, the reference is the
    base with it disabled) or a PeftModel holding the SFT adapter (TRL keeps a frozen copy of
    it as the reference). With `method: full`, `model` trains whole and `ref_model` is the
    separate frozen reference (`load_reference_model`; TRL shards it under FSDP too)."""
    from peft import PeftModel
    from trl import DPOTrainer

    full = cfg.method == "full"
    peft_config = None if full or isinstance(model, PeftModel) else lora_config(cfg)
    callbacks = [*callbacks, *tracker_callbacks(args, tensorboard_dir)]
    trainer = DPOTrainer(model=model, ref_model=ref_model if full else None, args=args,
                         train_dataset=train, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=callbacks)
    _adapter_dtype_for_cpu(trainer.model, args)
    return trainer

def build_grpo_trainer(model: Any, tokenizer: Any, train: "Dataset", args: Any,
                       cfg: TrainingConfig, reward_funcs: Sequence[Any], rollout_func: Any,
                       callbacks: Sequence[Any] = (),
                       tensorboard_dir: Path | None = None) -> Any:
    """GRPOTrainer whose completions come from `rollout_func` (`aloe.stages.grpo`); `model` is the
    base (a fresh adapter is added) or a PeftModel holding the SFT adapter (with beta > 0,
    TRL keeps a frozen copy of it as the reference)."""
    from peft import PeftModel
    from trl import GRPOTrainer

    peft_config = None if isinstance(model, PeftModel) else lora_config(cfg)
    callbacks = [*callbacks, empty_metrics_dropped(), *tracker_callbacks(args, tensorboard_dir)]
    with warnings.catch_warnings():  # TRL flags rollout_func as experimental: the pinned
        warnings.filterwarnings("ignore", message="You are using 'rollout_func'")  # TRL's
        trainer = GRPOTrainer(model=model, reward_funcs=list(reward_funcs), args=args,
                              train_dataset=train, processing_class=tokenizer,
                              peft_config=peft_config, callbacks=callbacks,
                              rollout_func=rollout_func)
    _adapter_dtype_for_cpu(trainer.model, args)
    return trainer


def _adapter_dtype_for_cpu(model: Any, args: Any) -> None:
    """TRL stores QLoRA adapter weights in bfloat16; on CPU, where the 4-bit matmuls compute in
    float32, keep the adapters in float32 too (bfloat16 CPU matmuls are slow)."""
    import torch

    if not getattr(args, "use_cpu", False):
        return
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.float()

def peak_memory(device: Device) -> dict[str, Any]:
    """CUDA: the most memory allocated by tensors; CPU: the process's peak resident size
    (since the process started: in a notebook that includes the cells before)."""
    if device.kind == "cuda":
        import torch

        return {"peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3),
                "peak_memory_kind": "cuda_max_allocated"}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_gb": round(rss_kb / 2**20, 3), "peak_memory_kind": "process_peak_rss"}
