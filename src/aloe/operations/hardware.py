"""What a run asks of the hardware, estimated offline: GPU hours for training, evaluation and
serving the LLM roles on a self-hosted endpoint, GPU memory for training, disk. Pure functions
of the parameters and of token counts; `aloe plan` and the preflight's readiness checks call
them (this module imports neither).

GPU hours for training and evaluation come from tokens/s per GPU class in `gpu_figures.json`
(scaled by the policy's parameter count), written by `scripts/gpu_check.py --from-report`: the
class it ran on is measured, the others are datasheet estimates calibrated by it, and the plan
says which. Serving hours come from the same classes' datasheet figures by the rules of
`SERVING`, which are estimates, not measurements.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aloe.core.config import Params, RoleConfig, TrainingConfig, resolve_path
from aloe.core.layout import TRAINING_STAGES
from aloe.stages.grpo import grpo_tokens
from aloe.stages.plan_lengths import Lengths, benchmark_size

DEFAULT_DECIDED = {"both_orders": 0.7, "logprobs": 0.9}  # turns that become examples; else 0.95
TRAINING_TEMPLATE_TOKENS = 5  # a chat template's markers around each message

# Disk, for the readiness check: what a run folder holds besides the base model download.
CONVERSATION_TURN_BYTES = 8_000  # one turn of a tree: user, hint, two replies, verdict
EVAL_TURN_BYTES = 2_000
LORA_PARAMS_PER_RANK = 3.27e-4  # LoRA on all linear layers: ~0.033% of the base per rank
CHECKPOINT_BYTES_PER_LORA_PARAM = 14  # fp32 adapter + optimiser state + gradients
FULL_CHECKPOINT_BYTES = 12  # a full fine-tuning checkpoint: fp32 weights and AdamW's two states

# Serving an LLM role on a self-hosted OpenAI-compatible endpoint (vLLM or a server like it):
# what one GPU of a class in gpu_figures.json does with a model of P parameters. Estimates from
# the class's datasheet (bf16_tflops, bandwidth_gb_s), not measurements: no serving run has been
# timed. Every prompt token is counted as prefilled: a server that caches prefixes (a turn's
# prompt repeats the earlier turns') needs less, so this errs long.
SERVING = {
    # Prefill (reading the prompt) is compute-bound at 2 x P FLOPs a token; taken at 40% of the
    # dense bf16 peak: the matrix products alone reach more, attention over long histories and
    # the scheduler's gaps between batches take the rest.
    "prefill_flops_share": 0.4,
    # Decode (writing the completion) is memory-bound: each step reads the bf16 weights (2 x P
    # bytes) once, at 50% of the bandwidth, and writes one token for each running sequence...
    "decode_bandwidth_share": 0.5,
    # ...taken as 32: the roles run up to 128 at once, but each sequence's KV cache is read
    # every step too (Llama-3-8B: 128 KiB a token, so a 3,000-token history weighs ~1/40 of
    # the weights), which gives 128 histories of ~3,000 tokens the speed of ~32 weight reads.
    "decode_sequences": 32,
}
SUGGESTED_MAX_MODEL_LEN = 8192  # params/vllm.yaml's suggested `vllm serve --max-model-len`
CONTEXT_SHARE = 0.9  # a prompt and its max_tokens past this share of the context: a warning
HISTORY_SETTINGS = {  # what makes a stage's longest prompts shorter
    "personas": "personas.sample_k",
    "conversations": "conversations.turns, roles.user/assistant max_tokens",
    "evaluate": "evaluation.turns, evaluation.max_new_tokens",
}


# ==========================================================================================
# Training and evaluation: GPU hours, memory, disk
# ==========================================================================================
def gpu_figures() -> dict[str, Any]:
    """The table of tokens/s and memory per GPU class (`gpu_figures.json`, package data)."""
    text = resources.files("aloe.operations").joinpath("gpu_figures.json").read_text(
        encoding="utf-8")
    return json.loads(text)


def model_parameters(reference: str) -> tuple[float, str]:
    """A model's parameter count, and where it came from (the figures' reference model's when
    nothing offline says)."""
    from aloe.stages.policy import parameter_count

    counted = parameter_count(reference)
    if counted:
        return float(counted), f"{reference} ({counted / 1e9:.2f}B parameters)"
    ref = gpu_figures()["reference"]
    return float(ref["parameters"]), (f"{reference} (size unknown offline: assumed "
                                      f"{ref['parameters'] / 1e9:.2f}B, as {ref['model']})")


def policy_reference(params: Params, stage: str = "sft") -> str:
    """The model a training stage tunes, without converting the embedded model."""
    from aloe.core.local_model import EMBEDDED_NAME

    configured = getattr(params, stage).base_model or params.local_model.path
    if configured:
        return configured
    return str(resolve_path(params.local_model.cache_dir) / EMBEDDED_NAME)


def policy_parameters(params: Params, stage: str = "sft") -> tuple[float, str]:
    """The tuned model's parameter count, and where it came from."""
    return model_parameters(policy_reference(params, stage))


def _decided_share(params: Params) -> float:
    """The share of judged turns that become training examples (forecast)."""
    path = params.layout.export_summary
    if path.exists():
        from aloe.core.records import read_json

        summary = read_json(path, check=lambda data: None if isinstance(data, dict)
                            else f"{type(data).__name__}, not an object")
        turns, kept = summary.get("turns"), summary.get("examples")
        if isinstance(turns, int) and isinstance(kept, int) and turns:
            return kept / turns
    return DEFAULT_DECIDED.get(params.conversations.judge_rule, 0.95)


def _example_tokens(lengths: Lengths, turns: int, max_length: int, sequences: int) -> float:
    """Mean tokens of one training example over the turns: the history up to a turn's user
    message and the reply (`sequences` of them: 1 for SFT, chosen and rejected for DPO),
    each sequence cut at max_length."""
    user, reply = lengths.completion["user"], lengths.completion["assistant"]
    total = 0.0
    for turn in range(1, turns + 1):
        prompt = turn * user + (turn - 1) * reply + (2 * turn - 1) * TRAINING_TEMPLATE_TOKENS
        total += sequences * min(max_length, prompt + reply + TRAINING_TEMPLATE_TOKENS)
    return total / turns


def training_tokens(params: Params, lengths: Lengths, stage: str, ceiling: bool) -> float:
    """Tokens one training stage processes (every epoch, or max_steps worth of examples)."""
    c, config = params.conversations, getattr(params, stage)
    trainer = config.trainer
    share = 1.0 if ceiling else _decided_share(params)
    examples = c.n_conversations * c.turns * share * (1 - c.validation_fraction)
    if int(trainer.get("max_steps", -1)) > 0:
        examples = (int(trainer["max_steps"]) * int(trainer["per_device_train_batch_size"])
                    * int(trainer["gradient_accumulation_steps"]))
    else:
        examples *= float(trainer.get("num_train_epochs", 1.0))
    per_example = _example_tokens(lengths, c.turns, int(trainer["max_length"]),
                                  1 if stage == "sft" else 2)
    return examples * per_example


def generation_tokens(params: Params, lengths: Lengths) -> float:
    """Reply tokens the in-process models under test generate in stage 5."""
    in_process = sum(1 for spec in params.evaluation.models if not spec.base_url)
    return (in_process * benchmark_size(params) * params.evaluation.turns
            * lengths.completion["policy"])


def gpu_hours(params: Params, ceiling: Lengths, forecast: Lengths,
              served: list[Served] | None = None) -> dict[str, Any]:
    """Hours of each GPU class for SFT, DPO and in-process evaluation, forecast and ceiling,
    from the figures' tokens/s scaled by the policy's parameter count; and for serving the
    `served` roles on a self-hosted endpoint (`serving_hours`), when there are any."""
    figures = gpu_figures()
    parameters, about = policy_parameters(params)
    scale = parameters / figures["reference"]["parameters"]
    tokens = {
        stage: {"forecast": training_tokens(params, forecast, stage, ceiling=False),
                "ceiling": training_tokens(params, ceiling, stage, ceiling=True)}
        for stage in TRAINING_STAGES}
    tokens["evaluate"] = {"forecast": generation_tokens(params, forecast),
                          "ceiling": generation_tokens(params, ceiling)}
    rate_key = {"sft": "sft_tokens_per_s", "dpo": "dpo_tokens_per_s",
                "evaluate": "generate_tokens_per_s"}
    rl = {kind: grpo_tokens(params, lengths) for kind, lengths in (("forecast", forecast),
                                                                   ("ceiling", ceiling))}
    if params.grpo.enabled:  # its replies generated, then trained on at SFT's rate
        tokens["grpo"] = {kind: sum(pair) for kind, pair in rl.items()}
    serving = serving_hours(served, figures) if served else None
    by_gpu: dict[str, Any] = {}
    for gpu, figure in figures["gpus"].items():
        hours = {stage: {kind: count * scale / figure[rate_key[stage]] / 3600
                         for kind, count in counts.items()}
                 for stage, counts in tokens.items() if stage in rate_key}
        if "grpo" in tokens:
            hours["grpo"] = {kind: scale / 3600 * (made / figure["generate_tokens_per_s"]
                                                   + trained / figure["sft_tokens_per_s"])
                             for kind, (made, trained) in rl.items()}
        if serving is not None:
            hours["serve"] = serving["by_gpu"][gpu]
        hours["total"] = {kind: sum(h[kind] for h in hours.values()) for kind in ("forecast",
                                                                              "ceiling")}
        by_gpu[gpu] = {stage: {k: round(v, 2) for k, v in h.items()} for stage, h in hours.items()}
    measured = [gpu for gpu, figure in figures["gpus"].items() if figure.get("measured")]
    result = {"assumption": ("tokens/s per GPU class from aloe/operations/gpu_figures.json, scaled "
                             "by the policy's parameters; " + gpu_figures_basis(figures)),
              "measured": measured, "policy": about,
              "tokens": {s: {k: int(v) for k, v in t.items()} for s, t in tokens.items()},
              "by_gpu": by_gpu}
    if serving is not None:
        result["serving"] = {k: v for k, v in serving.items() if k != "by_gpu"}
    return result


def gpu_figures_basis(figures: dict[str, Any]) -> str:
    """Which GPU classes' figures were measured, in words."""
    measured = [gpu for gpu, figure in figures["gpus"].items() if figure.get("measured")]
    if not measured:
        return ("ESTIMATES, not measurements: scripts/gpu_check.py has not run on a GPU of "
                "these classes")
    return (f"measured on {', '.join(measured)} (scripts/gpu_check.py); the other classes are "
            "datasheet estimates calibrated by that measurement")


def training_memory_gb(params: Params, stage: str) -> float:
    """Peak GPU memory a training stage needs: the figures' measured line (fixed, and per
    1,024 tokens of a micro-batch) scaled by the policy's parameters (`method.peak_memory_gb`)."""
    figures = gpu_figures()
    memory = figures["peak_memory_gb"]
    fit = memory["fit"][stage]
    config: TrainingConfig = getattr(params, stage)
    parameters, _ = policy_parameters(params, stage)
    size = parameters / figures["reference"]["parameters"]
    tokens = int(config.trainer["max_length"]) * int(config.trainer["per_device_train_batch_size"])
    fixed = fit["fixed_gb"] * (1.0 if config.load_in_4bit else memory["unquantised_fixed_factor"])
    return size * (fixed + fit["per_1k_tokens_gb"] * tokens / 1024)


def disk_gb(params: Params) -> float:
    """Disk a run folder fills: the conversations, exports, evaluation records, adapters (or
    whole models, for full fine-tuning), the checkpoints kept while training, merged models
    when asked."""
    from aloe.stages.qlora import KEEP_CHECKPOINTS

    c, e = params.conversations, params.evaluation
    total = c.n_conversations * c.turns * CONVERSATION_TURN_BYTES * 3  # the trees and 2 exports
    total += len(e.models) * benchmark_size(params) * e.turns * EVAL_TURN_BYTES
    for stage in TRAINING_STAGES:
        config: TrainingConfig = getattr(params, stage)
        parameters, _ = policy_parameters(params, stage)
        if config.method == "full":  # the whole model in fp32, and checkpoints with AdamW's
            total += parameters * 4 + KEEP_CHECKPOINTS * parameters * FULL_CHECKPOINT_BYTES
            continue
        lora = parameters * LORA_PARAMS_PER_RANK * config.lora_r
        total += lora * 4 + KEEP_CHECKPOINTS * lora * CHECKPOINT_BYTES_PER_LORA_PARAM
        if config.merge:
            total += parameters * 2  # bfloat16
    return total / 1e9


def base_model_download_gb(params: Params) -> float:
    """What downloading the policy's weights (bfloat16 safetensors) takes, if it is a hub id."""
    reference = policy_reference(params)
    if Path(reference).is_absolute() or resolve_path(reference).exists():
        return 0.0
    parameters, _ = policy_parameters(params)
    return parameters * 2 / 1e9


# ==========================================================================================
# Serving the LLM roles on a self-hosted endpoint
# ==========================================================================================
def self_hosted(config: RoleConfig) -> bool:
    """A role served by an endpoint of the run's own (vLLM and the like): an http(s) base_url
    and no price, since an API that bills has one; its cost is GPU time, not dollars. (A model
    under test behind an endpoint has no price to tell the two apart, so it is not counted.)"""
    return (not config.is_local and config.price_input_per_1m == 0
            and config.price_output_per_1m == 0)


@dataclass
class Served:
    """One role on a self-hosted endpoint, over every stage: the tokens its server reads
    (prompts) and writes (completions), forecast and ceiling, and its longest forecast prompt
    (with the stage and turn it is asked in)."""

    role: str
    config: RoleConfig
    prompt: dict[str, float]  # "forecast" / "ceiling" -> tokens
    completion: dict[str, float]
    longest: float = 0.0
    stage: str = ""
    turn: int | None = None


def serving_rates(parameters: float, figure: dict[str, Any]) -> tuple[float, float]:
    """Prefill and decode tokens/s of one GPU of a class serving a model of `parameters`, by
    the rules of SERVING."""
    prefill = SERVING["prefill_flops_share"] * figure["bf16_tflops"] * 1e12 / (2 * parameters)
    decode = (SERVING["decode_sequences"] * SERVING["decode_bandwidth_share"]
              * figure["bandwidth_gb_s"] * 1e9 / (2 * parameters))
    return prefill, decode


def serving_assumption() -> str:
    """SERVING's rules in words, for the plan to print beside the hours."""
    return (f"one GPU of the class runs the server: prefill at "
            f"{SERVING['prefill_flops_share']:.0%} of its bf16 peak at 2 FLOPs a parameter a "
            f"token, decode {SERVING['decode_sequences']} sequences a step, each step reading "
            f"the bf16 weights at {SERVING['decode_bandwidth_share']:.0%} of its bandwidth; "
            "every prompt token prefilled (a prefix cache needs less); datasheet ESTIMATES, not "
            "measured (SERVING in aloe/operations/hardware.py)")


def serving_hours(served: list[Served], figures: dict[str, Any]) -> dict[str, Any]:
    """Hours of one GPU of each class serving the roles' prompts (prefill) and completions
    (decode), forecast and ceiling, each role's model sized by its parameter count; with the
    rates per class and model, the tokens per role, and the context warnings."""
    sizes = {s.config.model: model_parameters(s.config.model) for s in served}
    rates = {gpu: {model: serving_rates(size, figure) for model, (size, _) in sizes.items()}
             for gpu, figure in figures["gpus"].items()}
    by_gpu = {gpu: {kind: sum((s.prompt[kind] / rate[s.config.model][0]
                               + s.completion[kind] / rate[s.config.model][1]) / 3600
                              for s in served) for kind in ("forecast", "ceiling")}
              for gpu, rate in rates.items()}
    warnings = [context_warning(s) for s in served]
    return {
        "assumption": serving_assumption(),
        "models": [about for _, about in sizes.values()],
        "tokens": {kind: {"prompt_tokens": math.ceil(sum(s.prompt[kind] for s in served)),
                          "completion_tokens": math.ceil(sum(s.completion[kind]
                                                             for s in served))}
                   for kind in ("forecast", "ceiling")},
        "roles": {s.role: {"model": s.config.model,
                           "prompt_tokens": {k: int(math.ceil(v)) for k, v in s.prompt.items()},
                           "completion_tokens": {k: int(math.ceil(v))
                                                 for k, v in s.completion.items()}}
                  for s in served},
        "rates": {gpu: {model: {"prefill_tokens_per_s": round(prefill),
                                "decode_tokens_per_s": round(decode)}
                        for model, (prefill, decode) in rate.items()}
                  for gpu, rate in rates.items()},
        "warnings": [w for w in warnings if w is not None],
        "by_gpu": by_gpu,
    }


def context_warning(served: Served) -> str | None:
    """One line when the role's longest forecast prompt and its max_tokens pass CONTEXT_SHARE
    of the server's context (the role's max_model_len, else the suggested 8,192): the server
    refuses a request whose prompt and max_tokens do not fit."""
    config, role = served.config, served.role
    limit = config.max_model_len or SUGGESTED_MAX_MODEL_LEN
    need = math.ceil(served.longest) + config.max_tokens
    if need <= CONTEXT_SHARE * limit:
        return None
    where = served.stage + (f", turn {served.turn}" if served.turn else "")
    of = (f"roles.{role}.max_model_len {limit:,}" if config.max_model_len
          else f"the suggested --max-model-len {limit:,} (roles.{role}.max_model_len unset)")
    shorter = HISTORY_SETTINGS.get(served.stage, f"roles.{role}.max_tokens")
    return (f"warning: roles.{role} ({where}): forecast prompt {math.ceil(served.longest):,} + "
            f"max_tokens {config.max_tokens:,} = {need:,} tokens, over {CONTEXT_SHARE:.0%} of "
            f"{of}; serve the model at a longer --max-model-len (if it supports one) and set "
            f"roles.{role}.max_model_len to it, or shorten the prompts ({shorter})")
