"""Will QLoRA SFT and DPO of a 7-8B model fit one 24 GB GPU, and how fast is stage 5's batched
generation? Measure it on a GPU, without a download.

    python scripts/gpu_check.py --write-docs    # on a machine with an NVIDIA GPU (~7 minutes)
    python scripts/gpu_check.py --tiny          # the same code with tiny models, even on CPU
    python scripts/gpu_check.py --from-report docs/gpu_check.json   # no GPU: the figures files

No weights are downloaded: each model is built from the shapes of a published one (its config)
with random weights, straight into 4-bit NF4 one linear layer at a time (the 16 GB bfloat16
model never exists anywhere). Random weights train and generate at the speed, and in the memory,
of trained ones of the same shape; their losses and replies mean nothing. Each measurement runs
in a fresh process: in one process each finished 8B trainer left about 2 GB allocated, which
counted in every later peak.

What it measures, through the workbook's own code (`aloe.stages.qlora`: NF4 with double
quantisation, LoRA r=16 on every linear layer, activation checkpointing, paged 8-bit AdamW; DPO
continues the SFT adapter with its frozen copy as the reference, as `dpo.start_from: sft` does):

1. QLoRA SFT and DPO at Llama-3-8B-Instruct's shapes, 2,048 tokens, micro-batch 1
   (`params/paper_plus.yaml`), at the released lengths that `params/paper.yaml` takes (SFT
   8,192 tokens, DPO 512), and at Qwen2-7B's shapes (another family): peak GPU memory
   (`torch.cuda.max_memory_allocated` and `max_memory_reserved`), tokens/s, seconds per
   optimiser step. Goal: peaks under 20 GB.
2. The edge of a `--card-gb` card (24): PyTorch's allocator capped at what such a card leaves,
   series of ever longer sequences and larger micro-batches, each stopped at its first
   out-of-memory; tries left when `--minutes` is spent are marked not tried.
3. Stage 5's in-process generation (`aloe.stages.policy.InProcessResponder`'s way: left-padded
   batches, bfloat16 weights, a LoRA adapter attached): tokens/s and peak memory at batch 1, 16
   and 64, every reply `--new-tokens` long.

The report (`--out`/gpu_check.json, and with `--write-docs` docs/gpu_check.json) names the GPU,
the date and the versions; its memory keys name the stage and the unit (`sft_peak_allocated_gb`);
it is rewritten after every measurement, so a run cut short keeps what it measured.
`--from-report docs/gpu_check.json` then writes `src/aloe/operations/gpu_figures.json` (what `aloe
plan` and the preflight read: the measured class, the other classes calibrated by it, the memory
line) and `docs/gpu.md`.

On the lent GPU machine (no network there): `bash scripts/gpu_prepare.sh` here puts the wheels
it lacks and a tokenizer in `.gpu/` (git-ignored), which the device run carries. Never a test,
never in CI: it needs a GPU; `--tiny` keeps the code path tested on CPU (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aloe.core.config import DPOConfig, SFTConfig  # noqa: E402
from aloe.core.manifest import package_versions  # noqa: E402
from aloe.stages import qlora, training_data  # noqa: E402
from aloe.stages.policy import Device, detect_device  # noqa: E402

GIB = 2**30
# What a CUDA context and the driver hold on a card outside PyTorch's allocator (GB).
CUDA_CONTEXT_GB = 0.6
PACKAGES = ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate")


# ------------------------------------------------------------------------------------------
# The shapes measured
# ------------------------------------------------------------------------------------------
def llama3_8b_config() -> Any:
    """The shapes of Meta-Llama-3-8B(-Instruct)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
                       tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128009)


def qwen2_7b_config() -> Any:
    """The shapes of Qwen2-7B(-Instruct): another family (biased q/k/v projections, a 152k
    vocabulary, 28 layers of 3,584)."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                       num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                       tie_word_embeddings=False, use_sliding_window=False)


def tiny(config: Any) -> Any:
    """The same family in two small layers: the same code path in seconds, for a smoke run."""
    config.update({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2,
                   "vocab_size": 49152, "max_position_embeddings": 4096})
    return config


SHAPES: dict[str, Callable[[], Any]] = {"llama3-8b": llama3_8b_config, "qwen2-7b": qwen2_7b_config}


@dataclass(frozen=True)
class Scenario:
    """One training measurement: a shape, the SFT and DPO sequence lengths, a micro-batch, and
    why it is measured."""

    shape: str
    sft_len: int
    dpo_len: int
    micro_batch: int
    why: str

    @property
    def name(self) -> str:
        lengths = (str(self.sft_len) if self.sft_len == self.dpo_len
                   else f"sft{self.sft_len}-dpo{self.dpo_len}")
        return f"{self.shape}@{lengths}x{self.micro_batch}"


def scenarios(tiny_run: bool) -> list[Scenario]:
    """paper_plus.yaml's lengths (2,048 for both stages) on two families, and the released
    lengths that paper.yaml takes (PROTOCOL.md: SFT packed to 8,192 tokens; DPO at the TRL of
    the time's 512)."""
    if tiny_run:
        return [Scenario("llama3-8b", 64, 64, 1, "paper_plus.yaml"),
                Scenario("qwen2-7b", 64, 64, 1, "paper_plus.yaml, another family"),
                Scenario("llama3-8b", 128, 64, 1, "paper.yaml: the released lengths")]
    return [Scenario("llama3-8b", 2048, 2048, 1,
                     "paper_plus.yaml (max_length 2048, micro-batch 1)"),
            Scenario("llama3-8b", 8192, 512, 1,
                     "paper.yaml: the released lengths, SFT 8192, DPO 512"),
            Scenario("qwen2-7b", 2048, 2048, 1, "paper_plus.yaml, another family")]


@dataclass(frozen=True)
class Probe:
    """One try at the edge of a smaller card: a stage at a length and a micro-batch."""

    stage: str
    seq_len: int
    micro_batch: int

    @property
    def name(self) -> str:
        return f"{self.stage}@{self.seq_len}x{self.micro_batch}"


def edge_probes(tiny_run: bool) -> list[list[Probe]]:
    """Series of ever larger tries, each stopped at its first out-of-memory: longer sequences
    at micro-batch 1, then larger micro-batches at paper_plus.yaml's 2,048 tokens."""
    if tiny_run:
        return [[Probe("sft", n, 1) for n in (64, 128)], [Probe("sft", 64, b) for b in (2, 4)],
                [Probe("dpo", n, 1) for n in (64, 128)], [Probe("dpo", 64, b) for b in (2,)]]
    return [[Probe("sft", n, 1) for n in (8192, 12288, 16384)],
            [Probe("sft", 2048, b) for b in (2, 4, 8)],
            [Probe("dpo", n, 1) for n in (4096, 6144, 8192)],
            [Probe("dpo", 2048, b) for b in (2, 4)]]


def parameter_count(config: Any) -> int:
    h, i, v, n = (config.hidden_size, config.intermediate_size, config.vocab_size,
                  config.num_hidden_layers)
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h
    return n * per_layer + 2 * v * h + h


# ------------------------------------------------------------------------------------------
# Random models
# ------------------------------------------------------------------------------------------
def _target(device: Device) -> Any:
    import torch

    return torch.device("cuda", device.local_rank) if device.kind == "cuda" else torch.device("cpu")


def build_random_4bit_model(config: Any, device: Device) -> Any:
    """A causal LM with random weights whose decoder linears are bitsandbytes 4-bit NF4 (double
    quantisation), built on the meta device and materialised one tensor at a time, so peak
    memory stays near the 4-bit size. Embeddings, norms and the LM head stay unquantised, as
    when a checkpoint is loaded with `BitsAndBytesConfig(load_in_4bit=True)`."""
    import bitsandbytes as bnb
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    target, dtype = _target(device), device.compute_dtype
    config.dtype = dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    generator = torch.Generator(device=target).manual_seed(0)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, linear in list(parent.named_children()):
                if isinstance(linear, nn.Linear):
                    setattr(parent, name, _random_4bit(linear, dtype, target, generator, bnb))
    _materialise(model, dtype, target, generator)
    model.is_loaded_in_4bit = True  # what peft and TRL look at to treat it as a QLoRA base
    model.config.use_cache = False
    return model


def _random_4bit(linear: Any, dtype: Any, target: Any, generator: Any, bnb: Any) -> Any:
    import torch

    quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features,
                                  bias=linear.bias is not None, compute_dtype=dtype,
                                  compress_statistics=True, quant_type="nf4", device="meta")
    weight = torch.empty(linear.out_features, linear.in_features, dtype=dtype,
                         device=target).normal_(0.0, 0.02, generator=generator)
    quantized.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=True,
                                         quant_type="nf4").to(target)
    if linear.bias is not None:
        quantized.bias = torch.nn.Parameter(torch.zeros(linear.out_features, dtype=dtype,
                                                        device=target), requires_grad=False)
    return quantized


def _materialise(model: Any, dtype: Any, target: Any, generator: Any) -> None:
    """Random embeddings, LM head and linears left on the meta device; ones for the norms; the
    rotary frequencies computed for the target device."""
    import torch
    from torch import nn

    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_meta:
                value = torch.empty(param.shape, dtype=dtype, device=target)
                if "norm" in type(module).__name__.lower():
                    value.fill_(1.0)
                else:
                    value.normal_(0.0, 0.02, generator=generator)
                setattr(module, name, nn.Parameter(value, requires_grad=False))
    with target:  # computed, not loaded
        model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise RuntimeError(f"tensors left on the meta device: {leftovers[:5]}")


def build_random_model(config: Any, device: Device) -> Any:
    """The same shape unquantised in the compute dtype, as stage 5 loads a policy."""
    import torch
    from transformers import AutoModelForCausalLM

    config.dtype = device.compute_dtype
    with _target(device):
        model = AutoModelForCausalLM.from_config(config, dtype=device.compute_dtype)
    model.eval()
    torch.manual_seed(0)
    return model


def prepare_for_training(model: Any, device: Device) -> Any:
    """As `qlora.load_base_model` does: frozen, upcast; the trainer turns activation
    checkpointing on, from cfg.trainer["activation_checkpointing"]."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


# ------------------------------------------------------------------------------------------
# Data: text long enough that every sequence is cut at the sequence length
# ------------------------------------------------------------------------------------------
def word_list(tokenizer: Any) -> list[str]:
    """Lower-case words that are single tokens with a leading space, so that text of n such
    words is about n tokens long (byte-level BPE vocabularies mark the space with 'Ġ')."""
    words = sorted({t[1:] for t in tokenizer.get_vocab()
                    if t.startswith("\u0120") and t[1:].isalpha() and t[1:].islower()
                    and len(t) > 3})
    return words or ["token"]


def datasets(tokenizer: Any, seq_len: int, rows: int) -> tuple[Any, Any]:
    """Prompt/completion and preference pairs whose every sequence is cut at `seq_len`: the
    measured batches all hold `seq_len` tokens per sequence."""
    from datasets import Dataset

    rng = random.Random(0)
    words = word_list(tokenizer)
    template = training_data.render_length(tokenizer, [{"role": "user", "content": ""}], True)
    room = max(seq_len - template - 8, 8)  # tokens left for the words of the prompt

    def text(n_words: int) -> str:
        return " ".join(rng.choice(words) for _ in range(max(n_words, 1)))

    sft = Dataset.from_list([{
        "prompt": [{"role": "user", "content": text(int(room * 0.6))}],
        "completion": [{"role": "assistant", "content": text(seq_len // 2)}],
    } for _ in range(rows)])
    dpo = Dataset.from_list([{
        "prompt": [{"role": "user", "content": text(room // 2)}],
        "chosen": [{"role": "assistant", "content": text(seq_len * 2 // 3)}],
        "rejected": [{"role": "assistant", "content": text(seq_len * 2 // 3)}],
    } for _ in range(rows)])
    return sft, dpo


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------
class StepTimer:
    """Wall time and tokens of every optimiser step, to report speed without the first
    (warm-up) step."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                timer.end.append(time.perf_counter())
                timer.tokens.append(state.num_input_tokens_seen)

        self.end: list[float] = []
        self.tokens: list[int] = []
        self.callback = Callback()

    def steady(self) -> tuple[float | None, float | None]:
        """Tokens/s and seconds per step after the first step."""
        if len(self.end) < 2:
            return None, None
        seconds = self.end[-1] - self.end[0]
        return (self.tokens[-1] - self.tokens[0]) / seconds, seconds / (len(self.end) - 1)


def stage_config(stage: str, seq_len: int, micro_batch: int, steps: int,
                 lora_r: int) -> SFTConfig | DPOConfig:
    """The paper profile's training settings for one stage at a length and a micro-batch."""
    trainer = dict(max_length=seq_len, max_steps=steps, per_device_train_batch_size=micro_batch,
                   gradient_accumulation_steps=1, activation_checkpointing=True, optim="auto")
    lora = dict(lora_r=lora_r, lora_alpha=2 * lora_r)
    if stage == "sft":
        return SFTConfig(**lora, trainer={**trainer, "learning_rate": 2e-4})
    return DPOConfig(**lora, trainer={**trainer, "beta": 0.1, "learning_rate": 5e-6})


def train(stage: str, model: Any, tokenizer: Any, data: Any, cfg: Any, device: Device,
          out: Path) -> tuple[dict[str, Any], Any]:
    """One stage's steps through the workbook's trainers; its figures, keyed by the stage."""
    import torch

    timer = StepTimer()
    args = qlora.trainer_arguments(stage, cfg, out / stage, device, save_strategy="no",
                                   logging_steps=1, disable_tqdm=True, report_to="none")
    build = qlora.build_sft_trainer if stage == "sft" else qlora.build_dpo_trainer
    trainer = build(model, tokenizer, training_data.prepare_dataset(data, tokenizer, stage,
                                                               cfg.trainer["max_length"]),
                    args, cfg, callbacks=[timer.callback])
    if device.kind == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train()
    if device.kind == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    tokens = trainer.state.num_input_tokens_seen
    steady_tps, step_s = timer.steady()
    report = {"len": cfg.trainer["max_length"], "steps": trainer.state.global_step,
              "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1),
              "steady_tokens_per_s": _round(steady_tps), "s_per_step": _round(step_s),
              "optimizer": args.optim if isinstance(args.optim, str) else args.optim.value,
              **memory(device)}
    trained = trainer.model
    del trainer
    _free(device)
    return {f"{stage}_{key}": value for key, value in report.items()}, trained


def memory(device: Device) -> dict[str, Any]:
    """Peak GPU memory held by tensors and reserved by the allocator (GB); on CPU the process's
    peak resident size."""
    if device.kind == "cuda":
        import torch

        return {"peak_allocated_gb": round(torch.cuda.max_memory_allocated() / GIB, 3),
                "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / GIB, 3)}
    return {"peak_rss_gb": qlora.peak_memory(device)["peak_memory_gb"]}


def base_model(shape: str, device: Device, tiny_run: bool) -> tuple[Any, dict[str, Any]]:
    """A random 4-bit base of `shape`, prepared for k-bit training; how long it took and, on a
    GPU, what its weights hold."""
    import torch

    config = SHAPES[shape]()
    config = tiny(config) if tiny_run else config
    started = time.perf_counter()
    model = build_random_4bit_model(config, device)
    if device.kind == "cuda":
        torch.cuda.synchronize()
    about: dict[str, Any] = {"parameters_b": round(parameter_count(config) / 1e9, 3),
                             "build_s": round(time.perf_counter() - started, 1)}
    if device.kind == "cuda":
        about["weights_gb"] = round(torch.cuda.memory_allocated() / GIB, 3)
    return prepare_for_training(model, device), about


def measure_training(scenario: Scenario, tokenizer: Any, device: Device, steps: int, lora_r: int,
                     tiny_run: bool, out: Path) -> dict[str, Any]:
    """SFT, then DPO continuing its adapter (`dpo.start_from: sft`), on one random base."""
    model, result = base_model(scenario.shape, device, tiny_run)
    result["why"] = scenario.why
    rows = (steps + 2) * scenario.micro_batch
    sft_data, _ = datasets(tokenizer, scenario.sft_len, rows)
    _, dpo_data = datasets(tokenizer, scenario.dpo_len, rows)
    sft_cfg = stage_config("sft", scenario.sft_len, scenario.micro_batch, steps, lora_r)
    dpo_cfg = stage_config("dpo", scenario.dpo_len, scenario.micro_batch, steps, lora_r)
    sft, model = train("sft", model, tokenizer, sft_data, sft_cfg, device, out / scenario.name)
    dpo, model = train("dpo", model, tokenizer, dpo_data, dpo_cfg, device, out / scenario.name)
    del model
    _free(device)
    return {**result, **sft, **dpo}


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def measure_probe(probe: Probe, shape: str, tokenizer: Any, device: Device, steps: int,
                  lora_r: int, tiny_run: bool, card_gb: float, out: Path) -> dict[str, Any]:
    """One try at the edge of a `card_gb` card: the allocator capped at what such a card leaves
    PyTorch, a fresh base, a few steps; an out-of-memory is the answer "does not fit"."""
    import torch

    if device.kind == "cuda":
        total = torch.cuda.get_device_properties(device.local_rank).total_memory / GIB
        cap = (card_gb - CUDA_CONTEXT_GB) / total
        torch.cuda.set_per_process_memory_fraction(min(cap, 1.0), device.local_rank)
    try:
        model, _ = base_model(shape, device, tiny_run)
        data = datasets(tokenizer, probe.seq_len, (steps + 1) * probe.micro_batch)
        cfg = stage_config(probe.stage, probe.seq_len, probe.micro_batch, steps, lora_r)
        figures, _ = train(probe.stage, model, tokenizer, data[0 if probe.stage == "sft" else 1],
                           cfg, device, out / "edge" / probe.name)
    except Exception as error:  # out of memory is an answer; anything else is a bug
        if not is_out_of_memory(error):
            raise
        return {"fits": False, "error": f"{type(error).__name__}: "
                                        f"{str(error).splitlines()[0][:160]}"}
    return {"fits": True, **{k.removeprefix(f"{probe.stage}_"): v for k, v in figures.items()}}


def series_key(series: list[Probe]) -> tuple[str, Callable[[Probe], int]]:
    """A series' name in the summary, and the size it grows."""
    first = series[0]
    if len({p.seq_len for p in series}) > 1:
        return f"{first.stage}_length_at_micro_batch_{first.micro_batch}", lambda p: p.seq_len
    return f"{first.stage}_micro_batch_at_length_{first.seq_len}", lambda p: p.micro_batch


def edge_summary(tries: dict[str, Any], tiny_run: bool) -> dict[str, Any]:
    """Per series: the largest size that fit, the smallest that ran out of memory (the edge
    lies between), and, where none ran out, the sizes not tried (then the edge is at least the
    largest fit, not known)."""
    summary: dict[str, Any] = {}
    for series in edge_probes(tiny_run):
        key, size = series_key(series)
        outcome = [(size(p), tries.get(p.name, {}).get("fits")) for p in series]
        oom = min((n for n, fits in outcome if fits is False), default=None)
        summary[key] = {
            "fits_up_to": max((n for n, fits in outcome if fits is True), default=None),
            "first_out_of_memory": oom,
            "not_tried": [] if oom is not None else [n for n, fits in outcome if fits is None]}
    return summary


def edge_sentence(key: str, result: dict[str, Any]) -> str:
    """One series in words: 'sft length at micro-batch 1: fits 12288, out of memory at 16384'."""
    words = key.replace("_", " ").replace("micro batch", "micro-batch")
    fits, oom, untried = result["fits_up_to"], result["first_out_of_memory"], result["not_tried"]
    if fits is None and oom is None:
        return f"{words}: not tried"
    said = f"fits {fits}" if fits is not None else "nothing tried fits"
    if oom is not None:
        return f"{words}: {said}, out of memory at {oom}"
    return f"{words}: {said}" + (f" ({', '.join(map(str, untried))} not tried)" if untried
                                 else " (the largest tried)")


# ------------------------------------------------------------------------------------------
# Stage 5's generation
# ------------------------------------------------------------------------------------------
def measure_generation(shape: str, tokenizer: Any, device: Device, batches: list[int],
                       new_tokens: int, prompt_tokens: int, lora_r: int,
                       tiny_run: bool) -> dict[str, Any]:
    """Replies/s of a bfloat16 policy with a LoRA adapter attached (as stage 5 loads
    sft/dpo), left-padded batches, every reply exactly `new_tokens` long."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = SHAPES[shape]()
    config = tiny(config) if tiny_run else config
    model = build_random_model(config, device)
    model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    model.eval()
    words = word_list(tokenizer)
    rng = random.Random(1)
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    report: dict[str, Any] = {"new_tokens": new_tokens, "prompt_tokens": prompt_tokens}
    for warm_up, batch in [(True, batches[0]), *((False, b) for b in batches)]:
        prompts = [tokenizer.apply_chat_template(
            [{"role": "user",
              "content": " ".join(rng.choice(words) for _ in range(prompt_tokens))}],
            tokenize=False, add_generation_prompt=True) for _ in range(batch)]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True,
                           add_special_tokens=False).to(_target(device))
        if device.kind == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        with torch.inference_mode():
            length = min(new_tokens, 8) if warm_up else new_tokens
            model.generate(**inputs, max_new_tokens=length, min_new_tokens=length,
                           do_sample=False, pad_token_id=tokenizer.pad_token_id)
        if device.kind == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        if warm_up:
            continue
        report[f"batch_{batch}_replies_per_s"] = round(batch / seconds, 3)
        report[f"batch_{batch}_tokens_per_s"] = round(batch * new_tokens / seconds, 1)
        if device.kind == "cuda":
            report[f"batch_{batch}_peak_allocated_gb"] = round(
                torch.cuda.max_memory_allocated() / GIB, 3)
    base = report[f"batch_{batches[0]}_replies_per_s"]
    for batch in batches[1:]:
        report[f"batch_{batch}_speedup"] = round(report[f"batch_{batch}_replies_per_s"] / base, 2)
    del model
    _free(device)
    return report


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------
def _free(device: Device) -> None:
    gc.collect()
    if device.kind == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def versions() -> dict[str, str]:
    return package_versions(PACKAGES)


def load_tokenizer(path: str | None) -> Any:
    """A chat tokenizer for the synthetic text (its vocabulary need not match the shapes: only
    the lengths matter): the given folder, else the embedded SmolLM2 (converted locally)."""
    if path:
        return qlora.load_tokenizer(path)
    from aloe.core.local_model import ensure_embedded_model

    return qlora.load_tokenizer(str(ensure_embedded_model(ROOT / "outputs" / "models")))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="two-layer models, short sequences, 2 steps: a smoke run (CPU ok)")
    parser.add_argument("--steps", type=int, default=None, help="steps per stage (default 6)")
    parser.add_argument("--edge-steps", type=int, default=2,
                        help="steps per try at the edge of the smaller card (default 2)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--only", choices=["training", "generation", "edge"], default=None)
    parser.add_argument("--new-tokens", type=int, default=None,
                        help="tokens per generated reply (default 128)")
    parser.add_argument("--tokenizer", default=None, help="a tokenizer folder (default: the "
                        "embedded SmolLM2's)")
    parser.add_argument("--target-gb", type=float, default=20.0)
    parser.add_argument("--card-gb", type=float, default=24.0,
                        help="the smaller card whose edge is probed (default 24)")
    parser.add_argument("--minutes", type=float, default=8.0,
                        help="time budget: tries at the edge left when it is spent are marked "
                        "skipped (default 8)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check")
    parser.add_argument("--from-report", type=Path, default=None, metavar="REPORT",
                        help="no measuring: recompute REPORT's summaries and verdict, and write "
                        "what it measured into src/aloe/operations/gpu_figures.json (what aloe "
                        "plan and the preflight read)")
    parser.add_argument("--resume", type=Path, default=None, metavar="REPORT",
                        help="keep what REPORT measured and measure only what it left out "
                        "(skipped for time, or never asked); the versions must match")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # KIND:NAME, in a child
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--write-docs", action="store_true",
                        help="also write docs/gpu_check.json (the figures the docs and "
                        "aloe plan read); refused with --tiny")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 6)
    args.new_tokens = args.new_tokens or (8 if args.tiny else 128)
    if args.tiny and args.write_docs:
        parser.error("--write-docs records a GPU's figures: not with --tiny")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        return measure_one(args)
    if args.from_report:
        return apply_report(args.from_report, args.target_gb)
    started = time.perf_counter()
    deadline = started + args.minutes * 60
    device = detect_device()
    if device.kind != "cuda" and not args.tiny:
        print("gpu_check: no CUDA GPU visible; run it on a machine with an NVIDIA GPU, or use "
              "--tiny for a smoke run of the same code on CPU", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "gpu": device.name, "gpu_memory_gb": gpu_memory_gb(device),
        "date": dt.date.today().isoformat(), "tiny": args.tiny,
        "compute_dtype": str(device.compute_dtype).removeprefix("torch."),
        "versions": versions(), "steps": args.steps, "edge_steps": args.edge_steps,
        "lora_r": args.lora_r, "isolation": "each measurement in a fresh process",
        "training": {}, "generation": {}, "edge": {}}
    earlier_minutes = 0.0
    if args.resume:
        report, problem = resumed_report(args.resume, report)
        if problem:
            print(f"gpu_check: cannot resume {args.resume}: {problem}", file=sys.stderr)
            return 2
        earlier_minutes = report.get("total_minutes", 0.0)
    written = [args.out / "gpu_check.json"]
    if args.write_docs:
        written.append(ROOT / "docs" / "gpu_check.json")
    print(f"device: {device.name} ({device.kind}); {json.dumps(report['versions'])}", flush=True)

    def save() -> None:  # after every measurement: a run cut short keeps what it measured
        report["total_minutes"] = round(earlier_minutes + (time.perf_counter() - started) / 60, 2)
        report["verdict"] = verdict(report, args.target_gb)
        for path in written:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=2) + "\n")

    def measure(kind: str, name: str, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
        if earlier and "skipped" not in earlier:
            print(f"{kind} {name}: kept from {args.resume}", flush=True)
            return earlier
        if time.perf_counter() > deadline:
            return {"skipped": "out of time (--minutes)"}
        result = isolated(args, kind, name)
        print(f"{kind} {name}: {json.dumps(result)}", flush=True)
        return result

    if args.only in (None, "training"):
        for scenario in scenarios(args.tiny):
            report["training"][scenario.name] = measure(
                "training", scenario.name, report["training"].get(scenario.name))
            save()
    if args.only in (None, "generation"):
        report["generation"]["llama3-8b"] = measure(
            "generation", "llama3-8b", report["generation"].get("llama3-8b"))
        save()
    if args.only in (None, "edge"):
        on_record = report["edge"].get("llama3-8b", {})
        earlier = on_record.get("tries", {}) if on_record.get("card_gb") == args.card_gb else {}
        edge = report["edge"]["llama3-8b"] = {
            "card_gb": args.card_gb, "allocator_cap_gb": round(args.card_gb - CUDA_CONTEXT_GB, 2),
            "tries": {}}
        for series in edge_probes(args.tiny):
            for probe in series:
                result = edge["tries"][probe.name] = measure("edge", probe.name,
                                                             earlier.get(probe.name))
                save()
                if not result.get("fits"):
                    break  # the larger tries of this series cannot fit either
        edge["summary"] = edge_summary(edge["tries"], args.tiny)
    save()
    print(f"{report['verdict']}\ntotal: {report['total_minutes']} min; report: "
          f"{', '.join(map(str, written))}")
    return 0


def resumed_report(path: Path, fresh: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """An earlier report to complete, or why it cannot be: figures from other package versions,
    another GPU or other settings would not belong in one report."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return fresh, str(error)
    for key in ("gpu", "tiny", "versions", "steps", "edge_steps", "lora_r"):
        if earlier.get(key) != fresh[key]:
            return fresh, (f"its {key} is {earlier.get(key)!r}, this run's {fresh[key]!r}: "
                           "measure afresh instead")
    earlier.setdefault("resumed", []).append(fresh["date"])
    return earlier, None


def isolated(args: argparse.Namespace, kind: str, name: str) -> dict[str, Any]:
    """One measurement in a fresh Python process, so that no memory a finished trainer leaves
    behind counts in the next peak (in one process, each 8B scenario left ~2 GB allocated)."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        result = Path(scratch) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--one", f"{kind}:{name}",
                   "--result", str(result), "--steps", str(args.steps),
                   "--edge-steps", str(args.edge_steps), "--lora-r", str(args.lora_r),
                   "--new-tokens", str(args.new_tokens), "--card-gb", str(args.card_gb),
                   *(["--tokenizer", args.tokenizer] if args.tokenizer else []),
                   *(["--tiny"] if args.tiny else [])]
        code = subprocess.run(command, cwd=ROOT).returncode
        if code != 0 or not result.exists():
            return {"error": f"the measurement's process exited {code}: see its traceback above"}
        return json.loads(result.read_text())


def measure_one(args: argparse.Namespace) -> int:
    """In a child process: one measurement, its figures written to --result."""
    kind, name = args.one.split(":", 1)
    device = detect_device()
    tokenizer = load_tokenizer(args.tokenizer)
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))  # the trainers' output folders
    if kind == "training":
        scenario = next(s for s in scenarios(args.tiny) if s.name == name)
        result = measure_training(scenario, tokenizer, device, args.steps, args.lora_r,
                                  args.tiny, scratch)
    elif kind == "generation":
        batches = [1, 2, 4] if args.tiny else [1, 16, 64]
        result = measure_generation(name, tokenizer, device, batches, args.new_tokens,
                                    16 if args.tiny else 512, args.lora_r, args.tiny)
    else:
        probe = next(p for series in edge_probes(args.tiny) for p in series if p.name == name)
        result = measure_probe(probe, "llama3-8b", tokenizer, device, args.edge_steps,
                               args.lora_r, args.tiny, args.card_gb, scratch)
    args.result.write_text(json.dumps(result))
    return 0


# ------------------------------------------------------------------------------------------
# From a GPU's report to the figures aloe plan and the preflight read
# ------------------------------------------------------------------------------------------
FIGURES = ROOT / "src" / "aloe" / "operations" / "gpu_figures.json"
DOCS_PAGE = ROOT / "docs" / "gpu.md"
REFERENCE_SCENARIO = "llama3-8b@2048x1"  # gpu_figures.json's reference workload
RATE_KEYS = ("sft_tokens_per_s", "dpo_tokens_per_s", "generate_tokens_per_s")


def apply_report(path: Path, target_gb: float) -> int:
    """Recompute a report's derived fields (edge summary, verdict) from its raw figures, and
    write gpu_figures.json from it."""
    report = json.loads(path.read_text())
    if report.get("tiny"):
        print(f"gpu_check: {path} is a --tiny run; its figures say nothing about a GPU",
              file=sys.stderr)
        return 2
    for edge in report["edge"].values():
        edge["summary"] = edge_summary(edge["tries"], tiny_run=False)
    report["verdict"] = verdict(report, target_gb)
    path.write_text(json.dumps(report, indent=2) + "\n")
    figures = figures_from_report(report, json.loads(FIGURES.read_text()))
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    DOCS_PAGE.write_text(render_markdown(report, figures))
    print(f"{report['verdict']}\nwrote {FIGURES.relative_to(ROOT)} and "
          f"{DOCS_PAGE.relative_to(ROOT)} from {path}")
    return 0


def render_markdown(report: dict[str, Any], figures: dict[str, Any]) -> str:
    """docs/gpu.md: the report's figures as tables, and what aloe plan takes from them."""
    v = report["versions"]
    lines = [
        "# GPU figures (measured)", "",
        "Written by `python scripts/gpu_check.py --from-report docs/gpu_check.json` from the "
        "GPU run on record (`docs/gpu_check.json`); do not edit by hand "
        "(`tests/test_gpu_check.py` checks that this page is what the script writes).", "",
        f"Machine: one {report['gpu']} ({report['gpu_memory_gb']} GB), {report['date']}; "
        f"Python {v.get('python')}, torch {v.get('torch')}, transformers "
        f"{v.get('transformers')}, TRL {v.get('trl')}, peft {v.get('peft')}, bitsandbytes "
        f"{v.get('bitsandbytes')}, accelerate {v.get('accelerate')}. Models of the published "
        "shapes with random weights (nothing downloaded): they train and generate at the speed "
        "and in the memory of trained ones; their losses mean nothing. Each measurement ran in "
        "a fresh process. Steady tokens/s leave out the first (warm-up) step; DPO counts the "
        "tokens of the chosen and the rejected reply.", "",
        f"## Training: QLoRA as `params/paper.yaml` and `paper_plus.yaml` set it "
        f"({report['steps']} steps each)", "",
        "NF4 base with double quantisation, LoRA r=16 on every linear layer, activation "
        "checkpointing, paged 8-bit AdamW, micro-batch 1; DPO continues the SFT adapter.", "",
        "| scenario | why | stage | tokens | peak allocated (GB) | peak reserved (GB) | "
        "tokens/s (steady) | s per step |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in report["training"].items():
        if "skipped" in r or "error" in r:
            lines.append(f"| {name} | {r.get('skipped') or r.get('error')} | | | | | | |")
            continue
        for stage in ("sft", "dpo"):
            lines.append(f"| {name} | {r['why']} | {stage.upper()} | {r[f'{stage}_len']:,} | "
                         f"{r[f'{stage}_peak_allocated_gb']:.2f} | "
                         f"{r[f'{stage}_peak_reserved_gb']:.2f} | "
                         f"{r[f'{stage}_steady_tokens_per_s']:,.0f} | "
                         f"{r[f'{stage}_s_per_step']:.2f} |")
    for shape, edge in report["edge"].items():
        lines += ["", f"## The edge of a {edge['card_gb']:g} GB card ({shape})", "",
                  f"PyTorch's allocator capped at {edge['allocator_cap_gb']:g} GB (what such a "
                  "card leaves after the CUDA context), "
                  f"{report['edge_steps']} steps a try; each series stops at its first "
                  "out-of-memory, and tries left when the run's time budget was spent are "
                  "marked not tried.", "",
                  "| try (stage@tokens x micro-batch) | fits | peak reserved (GB) | s per step |",
                  "| --- | --- | ---: | ---: |"]
        for name, t in edge["tries"].items():
            fits = {True: "yes", False: "out of memory", None: "not tried"}[t.get("fits")]
            peak = f"{t['peak_reserved_gb']:.2f}" if "peak_reserved_gb" in t else ""
            step = f"{t['s_per_step']:.2f}" if t.get("s_per_step") else ""
            lines.append(f"| {name} | {fits} | {peak} | {step} |")
        lines += [""] + [f"- {edge_sentence(k, r)}" for k, r in edge["summary"].items()]
    for shape, g in report["generation"].items():
        batches = sorted(int(k.split("_")[1]) for k in g if k.endswith("_tokens_per_s"))
        lines += ["", f"## Stage 5's in-process generation ({shape})", "",
                  f"bfloat16 weights, a LoRA adapter attached (not merged), left-padded "
                  f"{g['prompt_tokens']}-token prompts, every reply {g['new_tokens']} tokens, "
                  "greedy, through `transformers`' `generate`. Decoding here is bound by "
                  "per-step overhead (Python and kernel launches), not by the GPU: the batch-1 "
                  "figure moves with what ran before in the process, and larger batches are "
                  "the ones to plan with (`aloe plan` takes the batch-16 figure).", "",
                  "| batch | tokens/s | replies/s | speed-up over batch 1 | peak allocated (GB) |",
                  "| ---: | ---: | ---: | ---: | ---: |"]
        for b in batches:
            lines.append(f"| {b} | {g[f'batch_{b}_tokens_per_s']:,.1f} | "
                         f"{g[f'batch_{b}_replies_per_s']:.3f} | "
                         f"{g.get(f'batch_{b}_speedup', 1.0):.2f} | "
                         f"{g.get(f'batch_{b}_peak_allocated_gb', float('nan')):.2f} |")
    memory = figures["peak_memory_gb"]
    lines += ["", "## What `aloe plan` and the preflight take from it", "",
              "`src/aloe/operations/gpu_figures.json`, written from this run. tokens/s for the "
              "reference workload (Llama-3-8B, 2,048 tokens, micro-batch 1; generation at batch "
              f"{figures['reference']['generate_batch']}), scaled to other models by parameter "
              "count:", "",
              "| GPU class | SFT tokens/s | DPO tokens/s | generation tokens/s | measured |",
              "| --- | ---: | ---: | ---: | --- |"]
    for gpu, entry in figures["gpus"].items():
        lines.append(f"| {gpu} | {entry['sft_tokens_per_s']:,.0f} | "
                     f"{entry['dpo_tokens_per_s']:,.0f} | {entry['generate_tokens_per_s']:,.1f} | "
                     f"{'yes' if entry['measured'] else 'no: calibrated estimate'} |")
    lines += ["", "Memory a training stage asks of a card (the preflight's GPU check): "
              "(parameters / 8.03B) x (fixed + slope x max_length x micro-batch / 1,024), a "
              "line through the reserved peaks above (training tables and tries that fit):", ""]
    for stage, fit in memory["fit"].items():
        lines.append(f"- {stage.upper()}: fixed {fit['fixed_gb']:.2f} GB, slope "
                     f"{fit['per_1k_tokens_gb']:.3f} GB per 1,024 tokens ({fit['points']} "
                     "measurements)")
    lines += ["", "An unquantised base (`load_in_4bit: false`) multiplies the fixed part by "
              f"{memory['unquantised_fixed_factor']:g} (an estimate, not measured).", ""]
    return "\n".join(lines)


def datasheet_estimate(gpu: dict[str, Any], parameters: float) -> dict[str, float]:
    """tokens/s by the datasheet rules of gpu_figures.json's `method` (25% of the dense BF16
    peak at 6 and 8 x parameters FLOPs per token; decoding 16 sequences at 50% of the memory
    bandwidth reading the bfloat16 weights once per step)."""
    flops = gpu["bf16_tflops"] * 1e12 * 0.25
    return {"sft_tokens_per_s": flops / (6 * parameters),
            "dpo_tokens_per_s": flops / (8 * parameters),
            "generate_tokens_per_s": 16 * 0.5 * gpu["bandwidth_gb_s"] * 1e9 / (2 * parameters)}


def measured_class(report: dict[str, Any], figures: dict[str, Any]) -> str:
    """The GPU class of gpu_figures.json the report's GPU belongs to ('NVIDIA H200' ->
    'H200 141GB')."""
    for name in figures["gpus"]:
        if name.rsplit(" ", 1)[0].lower() in report["gpu"].lower():
            return name
    raise SystemExit(f"gpu_check: no class of {FIGURES.name} matches the GPU "
                     f"{report['gpu']!r}: add one (its datasheet TFLOPS and bandwidth)")


def memory_fit(report: dict[str, Any], stage: str) -> dict[str, float]:
    """Peak reserved memory (what the allocator took from the card) of one stage against
    tokens per micro-batch (length x micro-batch), least squares over every llama3-8b
    measurement that fit: GB fixed, and GB per 1,024 tokens."""
    points = [(r[f"{stage}_len"], r[f"{stage}_peak_reserved_gb"])
              for name, r in report["training"].items()
              if name.startswith("llama3-8b@") and f"{stage}_peak_reserved_gb" in r]
    points += [(t["len"] * int(name.rsplit("x", 1)[1]), t["peak_reserved_gb"])
               for edge in report["edge"].values() for name, t in edge["tries"].items()
               if name.startswith(f"{stage}@") and t.get("fits")]
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    slope = (sum((x - mean_x) * (y - mean_y) for x, y in points)
             / sum((x - mean_x) ** 2 for x, _ in points))
    return {"fixed_gb": round(mean_y - slope * mean_x, 3),
            "per_1k_tokens_gb": round(slope * 1024, 4), "points": n}


def figures_from_report(report: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    """gpu_figures.json with the report's measured class (steady tokens/s of the reference
    workload, generation at the reference batch), the other classes' datasheet estimates
    calibrated by the measured/estimated ratio, and the memory rule fitted to the peaks."""
    reference = report["training"][REFERENCE_SCENARIO]
    generation = report["generation"]["llama3-8b"]
    batch = figures["reference"]["generate_batch"]
    parameters = figures["reference"]["parameters"]
    name = measured_class(report, figures)
    measured = {"sft_tokens_per_s": reference["sft_steady_tokens_per_s"],
                "dpo_tokens_per_s": reference["dpo_steady_tokens_per_s"],
                "generate_tokens_per_s": generation[f"batch_{batch}_tokens_per_s"]}
    estimate = datasheet_estimate(figures["gpus"][name], parameters)
    ratio = {key: measured[key] / estimate[key] for key in RATE_KEYS}
    where = f"scripts/gpu_check.py on an {report['gpu']}, {report['date']} (docs/gpu_check.json)"
    for gpu, entry in figures["gpus"].items():
        if gpu == name:
            entry.update({key: round(measured[key], 1) for key in RATE_KEYS})
            entry.update(measured=True, source=(
                f"measured by {where}: steady tokens/s of QLoRA SFT and DPO at "
                f"{REFERENCE_SCENARIO}; in-process generation at batch {batch}, a LoRA adapter "
                "attached, 128-token replies"))
            continue
        own = datasheet_estimate(entry, parameters)
        entry.update({key: round(own[key] * ratio[key], 1) for key in RATE_KEYS[:2]})
        entry["generate_tokens_per_s"] = round(min(measured["generate_tokens_per_s"],
                                                   own["generate_tokens_per_s"]), 1)
        entry.update(measured=False, source=(
            f"estimate: training, the datasheet rule of 'method' times the measured/estimated "
            f"ratio on {name} (sft {ratio['sft_tokens_per_s']:.2f}, dpo "
            f"{ratio['dpo_tokens_per_s']:.2f}); generation, the slower of {name}'s measured "
            f"rate (bound by per-step overhead there, at {ratio['generate_tokens_per_s']:.2f} "
            "of its bandwidth rule) and this class's bandwidth rule; not measured on this "
            "class"))
    figures["measured"] = [name]
    figures["about"] = (
        "Throughput and memory of the workbook's GPU work per GPU class, for `aloe plan` (GPU "
        "hours) and the preflight's GPU check (memory), for the reference workload below, "
        "scaled to other models by parameter count. Written by `scripts/gpu_check.py "
        f"--from-report docs/gpu_check.json`: {name} is measured; every other class is a "
        "datasheet estimate calibrated by that measurement (each entry says which).")
    figures["peak_memory_gb"] = {
        "sft": reference["sft_peak_allocated_gb"], "dpo": reference["dpo_peak_allocated_gb"],
        "sft_reserved": reference["sft_peak_reserved_gb"],
        "dpo_reserved": reference["dpo_peak_reserved_gb"],
        "fit": {stage: memory_fit(report, stage) for stage in ("sft", "dpo")},
        "unquantised_fixed_factor": 3.5, "measured": True,
        "source": (f"measured by {where}: torch.cuda.max_memory_allocated at "
                   f"{REFERENCE_SCENARIO} (and _reserved: max_memory_reserved); 'fit' is a "
                   "line through every Llama-3-8B reserved peak (lengths and micro-batches, "
                   "edge tries included) against tokens per micro-batch, what the preflight "
                   "asks of a card; the factor for an unquantised base is an estimate")}
    figures["method"]["peak_memory_gb"] = (
        "peak = (parameters / reference parameters) x (fit.fixed_gb x [unquantised_fixed_factor "
        "when load_in_4bit is false] + fit.per_1k_tokens_gb x max_length x "
        "per_device_train_batch_size / 1024)")
    figures["method"].pop("scaling", None)
    return figures


def gpu_memory_gb(device: Device) -> float | None:
    if device.kind != "cuda":
        return None
    import torch

    return round(torch.cuda.get_device_properties(device.local_rank).total_memory / GIB, 1)


def verdict(report: dict[str, Any], target_gb: float) -> str:
    """Which training scenarios stay under the target peak (allocated) memory, and the edge of
    the smaller card."""
    if report["tiny"]:
        return "tiny run: the code path works; its figures say nothing about a GPU"
    lines = []
    for name, result in report["training"].items():
        peaks = [result.get(f"{s}_peak_allocated_gb") for s in ("sft", "dpo")]
        fits = all(p is not None and p < target_gb for p in peaks)
        lines.append(f"{'PASS' if fits else 'FAIL'} {name}: peak SFT {peaks[0]} GB, DPO "
                     f"{peaks[1]} GB (target < {target_gb:g} GB)")
    for shape, edge in report["edge"].items():
        lines.append(f"edge of a {edge['card_gb']:g} GB card ({edge['allocator_cap_gb']:g} GB "
                     f"for PyTorch), {shape}: " + "; ".join(
                         edge_sentence(key, result)
                         for key, result in edge.get("summary", {}).items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
