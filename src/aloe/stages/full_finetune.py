"""How much GPU memory full fine-tuning needs, and on how many 80 GB GPUs it fits.

Full fine-tuning (`method: full`, params/paper_full.yaml) trains every weight with AdamW under
FSDP FULL_SHARD (ZeRO-3): each of N GPUs keeps 1/N of the training state and gathers one
decoder layer at a time to compute. `full_finetune_estimate(params)` gives, per stage, the
memory each GPU needs with the stage's `processes` (or a given count), its parts, and the
smallest count that fits; `memory_parts` is the arithmetic, from a model's shape alone.

The model (in bytes, P parameters, L layers, hidden size h, vocabulary V, s tokens a sequence,
b sequences a micro-batch; DPO's micro-batch holds 2b: chosen and rejected):

- sharded training state, 16 P / N: float32 master weights (4), float32 gradients (4) and
  AdamW's two float32 states (8), what DeepSpeed's bf16 mode and FSDP mixed precision keep;
- DPO's frozen reference, 2 P / N: bf16 weights, sharded the same way, no gradient or state;
- gathered layers, 4 (2 l + V h) when N > 1: bf16 weights and gradients of two decoder layers
  (the one computing and the one prefetched; l = (P - embeddings) / L) and of the output
  layer;
- activations with activation checkpointing: each layer's bf16 input, 2 s b h L, plus one
  layer recomputed, 34 s b h (Korthikanti et al. 2022, without the attention matrix, which
  SDPA/flash attention never stores); without checkpointing, 34 s b h L;
- logits, 10 s b V: bf16 logits, their float32 copy for the loss and its gradient.

A GPU is counted as usable up to 90% of its memory (CUDA context, NCCL buffers, allocator
fragmentation). What is not counted: CPU offload (none), the dataloader, and TRL's extra
metrics over the logits; the released code's own GPU count is not stated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aloe.core.config import Params, resolve_path
from aloe.stages.policy import HUB_ID, base_model, looks_like_path, parameter_count

GIB = 2**30
USABLE = 0.9  # of a GPU's memory: the rest is CUDA context, NCCL buffers, fragmentation
STATE_BYTES = 16  # fp32 master weights 4 + fp32 gradients 4 + AdamW states 8, per parameter
REFERENCE_BYTES = 2  # DPO's frozen reference in bf16
LOGIT_BYTES = 10  # bf16 logits 2 + their fp32 copy 4 + its gradient 4, per token and word
LAYER_ACTIVATION = 34  # bytes per token and hidden unit of one layer (Korthikanti et al.)
MAX_GPUS = 4096

ASSUMPTIONS = (
    "FSDP FULL_SHARD (ZeRO-3) over N GPUs; training state 16 bytes a parameter (fp32 master "
    "weights, fp32 gradients, AdamW's two fp32 states), sharded",
    "DPO: a separate frozen reference in bf16 (2 bytes a parameter), sharded",
    "two decoder layers and the output layer gathered at a time, in bf16, with their gradients",
    "activation checkpointing keeps each layer's bf16 input and recomputes one layer "
    "(34 bytes a token and hidden unit); DPO's micro-batch holds chosen and rejected",
    "logits: 10 bytes a token and vocabulary word (bf16, fp32 copy, gradient)",
    "a GPU is usable up to 90% of its memory; no CPU offload",
)


@dataclass(frozen=True)
class ModelShape:
    """What the memory depends on: parameters, layers, hidden size, vocabulary, tied
    input and output embeddings."""

    parameters: int
    layers: int
    hidden: int
    vocab: int
    tied: bool = False

    @property
    def layer_parameters(self) -> float:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return (self.parameters - embeddings) / self.layers


# The paper's base models, for a machine that has not downloaded them (from their config.json
# and safetensors headers).
KNOWN_SHAPES = {
    "meta-llama/Meta-Llama-3-8B-Instruct": ModelShape(8_030_261_248, 32, 4096, 128_256),
    "mistralai/Mistral-7B-Instruct-v0.3": ModelShape(7_248_023_552, 32, 4096, 32_768),
    "Qwen/Qwen2-7B-Instruct": ModelShape(7_615_616_512, 28, 3584, 152_064),
}


def memory_parts(shape: ModelShape, *, tokens: int, sequences: int, gpus: int, dpo: bool,
                 checkpointing: bool = True) -> dict[str, float]:
    """Bytes each GPU holds at the peak of a step, by part (see the module's docstring)."""
    p, h, s, b = shape.parameters, shape.hidden, tokens, sequences
    per_layer = LAYER_ACTIVATION * s * b * h
    activations = (2 * s * b * h * shape.layers + per_layer if checkpointing
                   else per_layer * shape.layers)
    return {
        "training_state": STATE_BYTES * p / gpus,
        "reference": REFERENCE_BYTES * p / gpus if dpo else 0.0,
        "gathered_layers": (4 * (2 * shape.layer_parameters + shape.vocab * h)
                            if gpus > 1 else 0.0),  # one GPU holds them whole already
        "activations": float(activations),
        "logits": float(LOGIT_BYTES * s * b * shape.vocab),
    }


def smallest_gpu_count(shape: ModelShape, *, tokens: int, sequences: int, dpo: bool,
                       checkpointing: bool, gpu_gib: float) -> int | None:
    """The fewest GPUs of `gpu_gib` on which a step fits; None when no count up to MAX_GPUS
    does (the parts that sharding does not divide are larger than a GPU)."""
    usable = USABLE * gpu_gib * GIB
    for gpus in range(1, MAX_GPUS + 1):
        parts = memory_parts(shape, tokens=tokens, sequences=sequences, gpus=gpus, dpo=dpo,
                             checkpointing=checkpointing)
        if sum(parts.values()) <= usable:
            return gpus
    return None


def stage_estimate(shape: ModelShape, *, tokens: int, micro_batch: int, gpus: int, dpo: bool,
                   checkpointing: bool = True, gpu_gib: float = 80.0) -> dict[str, Any]:
    """One stage: memory per GPU (GiB) on `gpus` GPUs, by part, whether it fits on cards of
    `gpu_gib`, and the smallest count that does."""
    sequences = micro_batch * (2 if dpo else 1)
    parts = memory_parts(shape, tokens=tokens, sequences=sequences, gpus=gpus, dpo=dpo,
                         checkpointing=checkpointing)
    per_gpu = sum(parts.values()) / GIB
    return {"gpus": gpus, "per_gpu_gib": round(per_gpu, 2),
            "parts_gib": {k: round(v / GIB, 2) for k, v in parts.items()},
            "fits": per_gpu <= USABLE * gpu_gib,
            "min_gpus": smallest_gpu_count(shape, tokens=tokens, sequences=sequences, dpo=dpo,
                                           checkpointing=checkpointing, gpu_gib=gpu_gib)}


def model_shape(reference: str) -> ModelShape | None:
    """A model's shape, offline: its config.json (a folder, or a cached hub snapshot) with
    its parameter count, else the paper's models' known shapes; None when nothing says."""
    config = _cached_config(reference)
    count = parameter_count(reference)
    if config and count:
        text = config.get("text_config") or config
        return ModelShape(count, int(text["num_hidden_layers"]), int(text["hidden_size"]),
                          int(text["vocab_size"]), bool(config.get("tie_word_embeddings")))
    return KNOWN_SHAPES.get(reference)


def _cached_config(reference: str) -> dict[str, Any] | None:
    if looks_like_path(reference):
        file = resolve_path(reference) / "config.json"
    elif HUB_ID.match(reference):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(reference, "config.json")
        file = Path(cached) if isinstance(cached, str) else None
    else:
        file = None
    if file is None or not file.is_file():
        return None
    return json.loads(file.read_text())


def full_finetune_estimate(params: Params, gpus: int | None = None,
                           gpu_gib: float = 80.0) -> dict[str, Any]:
    """Full fine-tuning's memory per GPU for each training stage of `params` (its base
    model, `trainer.max_length`, micro-batch and activation checkpointing) on `gpus` GPUs
    (None: the stage's `processes`), and the smallest count of `gpu_gib` cards that fits."""
    stages: dict[str, Any] = {}
    for stage in ("sft", "dpo"):
        cfg = getattr(params, stage)
        model = base_model(params, stage)
        shape = model_shape(model)
        entry: dict[str, Any] = {"model": model, "method": cfg.method}
        if shape is None:
            entry["unknown"] = (f"{model}: no config.json on this machine and not one of the "
                                "paper's models: download it to size it")
        else:
            entry["parameters"] = shape.parameters
            entry.update(stage_estimate(
                shape, tokens=int(cfg.trainer["max_length"]),
                micro_batch=int(cfg.trainer["per_device_train_batch_size"]),
                gpus=gpus or cfg.processes, dpo=stage == "dpo",
                checkpointing=bool(cfg.trainer.get("activation_checkpointing", True)),
                gpu_gib=gpu_gib))
        stages[stage] = entry
    counts = [s.get("min_gpus") for s in stages.values()]
    return {"gpu_gib": gpu_gib, "usable_gib": round(USABLE * gpu_gib, 2), "stages": stages,
            "min_gpus": None if None in counts else max(counts),
            "assumptions": list(ASSUMPTIONS)}
