"""Will QLoRA SFT and DPO of a 7-8B model fit one 24 GB GPU, and how fast is stage 5's batched
generation? Measure it on a GPU, without a download.

    python scripts/gpu_check.py                 # on a machine with an NVIDIA GPU (~7 minutes)
    python scripts/gpu_check.py --tiny          # the same code with tiny models, even on CPU
    python scripts/gpu_check.py --write-docs    # also write docs/gpu_check.json (a GPU run)

No weights are downloaded: each model is built from the shapes of a published one (its config)
with random weights, straight into 4-bit NF4 one linear layer at a time (the 16 GB bfloat16
model never exists anywhere). Random weights train and generate at the speed, and in the memory,
of trained ones of the same shape; their losses and replies mean nothing.

What it measures, through the workbook's own code (`aloe.qlora`: NF4 with double quantisation,
LoRA r=16 on every linear layer, gradient checkpointing, paged 8-bit AdamW; DPO continues the
SFT adapter with its frozen copy as the reference, as `dpo.start_from: sft` does):

1. QLoRA SFT and DPO at Llama-3-8B-Instruct's shapes, sequence length 2,048, micro-batch 1
   (`params/paper.yaml`), and at Qwen2-7B's shapes (another family): peak GPU memory
   (`torch.cuda.max_memory_allocated` and `max_memory_reserved`), tokens/s, seconds per
   optimiser step. Goal: peaks under 20 GB, so that the paper profile fits a 24 GB card.
2. The same at 4,096 tokens and micro-batch 2: the edge of a 24 GB card.
3. Stage 5's in-process generation (`aloe.policy.InProcessResponder`'s way: left-padded
   batches, bfloat16 weights, a LoRA adapter attached): replies/s at batch 1, 16 and 64 and the
   speed-up over batch 1, every reply `--new-tokens` long.

The report (`--out`/gpu_check.json, and with `--write-docs` docs/gpu_check.json) names the GPU,
the date and the versions; its memory keys name the stage and the unit (`sft_peak_allocated_gb`).
`aloe plan` reads the tokens/s from docs/gpu_check.json for its GPU-hour estimate.

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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aloe import qlora, training  # noqa: E402
from aloe.config import DPOConfig, SFTConfig  # noqa: E402
from aloe.manifest import package_versions  # noqa: E402
from aloe.policy import Device, detect_device  # noqa: E402

GIB = 2**30
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
    """One training measurement: a shape, a sequence length and a micro-batch."""

    shape: str
    seq_len: int
    micro_batch: int

    @property
    def name(self) -> str:
        return f"{self.shape}@{self.seq_len}x{self.micro_batch}"


def scenarios(tiny_run: bool) -> list[Scenario]:
    if tiny_run:
        return [Scenario("llama3-8b", 64, 1), Scenario("qwen2-7b", 64, 1),
                Scenario("llama3-8b", 96, 2)]
    return [Scenario("llama3-8b", 2048, 1), Scenario("qwen2-7b", 2048, 1),
            Scenario("llama3-8b", 4096, 2)]


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


def prepare_for_training(model: Any, cfg: SFTConfig, device: Device) -> Any:
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
    template = training._render_length(tokenizer, [{"role": "user", "content": ""}], True)
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


def configs(scenario: Scenario, steps: int, lora_r: int) -> tuple[SFTConfig, DPOConfig]:
    """The paper profile's training settings at this scenario's length and micro-batch."""
    trainer = dict(max_length=scenario.seq_len, max_steps=steps,
                   per_device_train_batch_size=scenario.micro_batch,
                   gradient_accumulation_steps=1, activation_checkpointing=True, optim="auto")
    lora = dict(lora_r=lora_r, lora_alpha=2 * lora_r)
    return (SFTConfig(**lora, trainer={**trainer, "learning_rate": 2e-4}),
            DPOConfig(**lora, trainer={**trainer, "beta": 0.1, "learning_rate": 5e-6}))


def train(stage: str, model: Any, tokenizer: Any, data: Any, cfg: Any, device: Device,
          out: Path) -> tuple[dict[str, Any], Any]:
    """One stage's steps through the workbook's trainers; its figures, keyed by the stage."""
    import torch

    timer = StepTimer()
    args = qlora.trainer_arguments(stage, cfg, out / stage, device, save_strategy="no",
                                   logging_steps=1, disable_tqdm=True, report_to="none")
    build = qlora.build_sft_trainer if stage == "sft" else qlora.build_dpo_trainer
    trainer = build(model, tokenizer, training.prepare_dataset(data, tokenizer, stage,
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
    report = {"steps": trainer.state.global_step, "wall_s": round(wall, 2),
              "tokens_per_s": round(tokens / wall, 1), "steady_tokens_per_s": _round(steady_tps),
              "s_per_step": _round(step_s),
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


def measure_training(scenario: Scenario, tokenizer: Any, device: Device, steps: int, lora_r: int,
                     tiny_run: bool, out: Path) -> dict[str, Any]:
    import torch

    config = SHAPES[scenario.shape]()
    config = tiny(config) if tiny_run else config
    sft_cfg, dpo_cfg = configs(scenario, steps, lora_r)
    started = time.perf_counter()
    model = build_random_4bit_model(config, device)
    if device.kind == "cuda":
        torch.cuda.synchronize()
    result: dict[str, Any] = {"parameters_b": round(parameter_count(config) / 1e9, 3),
                              "build_s": round(time.perf_counter() - started, 1)}
    if device.kind == "cuda":
        result["weights_gb"] = round(torch.cuda.memory_allocated() / GIB, 3)
    model = prepare_for_training(model, sft_cfg, device)
    sft_data, dpo_data = datasets(tokenizer, scenario.seq_len, (steps + 2) * scenario.micro_batch)
    sft, model = train("sft", model, tokenizer, sft_data, sft_cfg, device, out / scenario.name)
    dpo, model = train("dpo", model, tokenizer, dpo_data, dpo_cfg, device, out / scenario.name)
    del model
    _free(device)
    return {**result, **sft, **dpo}


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
    for batch in [batches[0], *batches]:  # the first, again at the start: a warm-up
        prompts = [tokenizer.apply_chat_template(
            [{"role": "user", "content": " ".join(rng.choice(words) for _ in range(prompt_tokens))}],
            tokenize=False, add_generation_prompt=True) for _ in range(batch)]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True,
                           add_special_tokens=False).to(_target(device))
        if device.kind == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False, pad_token_id=tokenizer.pad_token_id)
        if device.kind == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        report[f"batch_{batch}_replies_per_s"] = round(batch / seconds, 3)
        report[f"batch_{batch}_tokens_per_s"] = round(batch * new_tokens / seconds, 1)
    base = report[f"batch_{batches[0]}_replies_per_s"]
    for batch in batches[1:]:
        report[f"batch_{batch}_speedup"] = round(report[f"batch_{batch}_replies_per_s"] / base, 2)
    report.update({f"generation_{k}": v for k, v in memory(device).items()})
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
    from aloe.local_model import ensure_embedded_model

    return qlora.load_tokenizer(str(ensure_embedded_model(ROOT / "outputs" / "models")))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="two-layer models, short sequences, 2 steps: a smoke run (CPU ok)")
    parser.add_argument("--steps", type=int, default=None, help="steps per stage (default 8)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--only", choices=["training", "generation"], default=None)
    parser.add_argument("--new-tokens", type=int, default=None,
                        help="tokens per generated reply (default 128)")
    parser.add_argument("--tokenizer", default=None, help="a tokenizer folder (default: the "
                        "embedded SmolLM2's)")
    parser.add_argument("--target-gb", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check")
    parser.add_argument("--write-docs", action="store_true",
                        help="also write docs/gpu_check.json (the figures the README and "
                        "aloe plan read); refused with --tiny")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 8)
    args.new_tokens = args.new_tokens or (8 if args.tiny else 128)
    if args.tiny and args.write_docs:
        parser.error("--write-docs records a GPU's figures: not with --tiny")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    device = detect_device()
    if device.kind != "cuda" and not args.tiny:
        print("gpu_check: no CUDA GPU visible; run it on a machine with an NVIDIA GPU, or use "
              "--tiny for a smoke run of the same code on CPU", file=sys.stderr)
        return 2
    tokenizer = load_tokenizer(args.tokenizer)
    report: dict[str, Any] = {
        "gpu": device.name, "date": dt.date.today().isoformat(), "tiny": args.tiny,
        "compute_dtype": str(device.compute_dtype).removeprefix("torch."),
        "versions": versions(), "steps": args.steps, "lora_r": args.lora_r,
        "training": {}, "generation": {}}
    print(f"device: {device.name} ({device.kind}); {json.dumps(report['versions'])}", flush=True)
    if args.only in (None, "training"):
        for scenario in scenarios(args.tiny):
            result = measure_training(scenario, tokenizer, device, args.steps, args.lora_r,
                                      args.tiny, args.out)
            report["training"][scenario.name] = result
            print(f"{scenario.name}: {json.dumps(result)}", flush=True)
    if args.only in (None, "generation"):
        batches = [1, 2, 4] if args.tiny else [1, 16, 64]
        report["generation"]["llama3-8b"] = measure_generation(
            "llama3-8b", tokenizer, device, batches, args.new_tokens,
            16 if args.tiny else 512, args.lora_r, args.tiny)
        print(f"generation: {json.dumps(report['generation']['llama3-8b'])}", flush=True)
    report["total_minutes"] = round((time.perf_counter() - started) / 60, 2)
    report["verdict"] = verdict(report, args.target_gb)
    args.out.mkdir(parents=True, exist_ok=True)
    written = [args.out / "gpu_check.json"]
    if args.write_docs:
        written.append(ROOT / "docs" / "gpu_check.json")
    for path in written:
        path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['verdict']}\ntotal: {report['total_minutes']} min; report: "
          f"{', '.join(map(str, written))}")
    return 0


def verdict(report: dict[str, Any], target_gb: float) -> str:
    """Which training scenarios stay under the target peak (allocated) memory."""
    if report["tiny"]:
        return "tiny run: the code path works; its figures say nothing about a GPU"
    lines = []
    for name, result in report["training"].items():
        peaks = [result.get(f"{s}_peak_allocated_gb") for s in ("sft", "dpo")]
        fits = all(p is not None and p < target_gb for p in peaks)
        lines.append(f"{'PASS' if fits else 'FAIL'} {name}: peak SFT {peaks[0]} GB, DPO "
                     f"{peaks[1]} GB (target < {target_gb:g} GB)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
