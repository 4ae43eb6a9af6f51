"""Will QLoRA SFT and DPO of an 8B model fit one 24 GB GPU? Measure it, without a download.

    python scripts/gpu_check.py            # on a machine with an NVIDIA GPU (a few minutes)
    python scripts/gpu_check.py --tiny     # a 2-layer model through the same code, even on CPU

Builds a model shaped like Llama-3-8B(-Instruct) with random weights straight into 4-bit NF4,
one linear layer at a time on the GPU (the 16 GB bfloat16 model never exists anywhere), then
runs about 10 SFT and 10 DPO steps at sequence length 2048 through the workbook's own trainer
code (`aloe.qlora`: QLoRA on all linear layers, gradient checkpointing, paged 8-bit AdamW;
DPO continues the SFT adapter with its frozen copy as the reference) and prints, for each,
the peak GPU memory and the training tokens per second. Target: both peaks under 20 GB, so
that the paper profile fits a 24 GB card; the whole check under 8 minutes.

Random weights train on random text, so the losses mean nothing; memory and speed depend only
on the shapes. Never a test, never in CI: it needs a GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aloe import qlora, training  # noqa: E402
from aloe.config import DPOConfig, SFTConfig  # noqa: E402
from aloe.policy import Device, detect_device  # noqa: E402

GIB = 2**30


def llama3_8b_config(vocab_size: int = 128256) -> Any:
    """The shapes of Meta-Llama-3-8B(-Instruct)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
                       tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128009)


def tiny_config(vocab_size: int) -> Any:
    """Two small layers: the same code path in seconds, for a smoke run on any machine."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=4096, tie_word_embeddings=False)


def parameter_count(config: Any) -> int:
    h, i, v, n = (config.hidden_size, config.intermediate_size, config.vocab_size,
                  config.num_hidden_layers)
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h
    return n * per_layer + 2 * v * h + h


def build_random_4bit_model(config: Any, device: Device) -> Any:
    """A LlamaForCausalLM with random weights whose decoder linears are bitsandbytes 4-bit NF4
    (double quantisation), built on the meta device and materialised one tensor at a time, so
    peak memory stays near the 4-bit size. Embeddings, norms and the LM head stay unquantised,
    as when a checkpoint is loaded with `BitsAndBytesConfig(load_in_4bit=True)`."""
    import bitsandbytes as bnb
    import torch
    from torch import nn
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    target = torch.device("cuda", device.local_rank) if device.kind == "cuda" else torch.device("cpu")
    dtype = device.compute_dtype
    config.dtype = dtype
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    generator = torch.Generator(device=target).manual_seed(0)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, linear in list(parent.named_children()):
                if not isinstance(linear, nn.Linear):
                    continue
                quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False,
                                              compute_dtype=dtype, compress_statistics=True,
                                              quant_type="nf4", device="meta")
                weight = torch.empty(linear.out_features, linear.in_features, dtype=dtype,
                                     device=target).normal_(0.0, 0.02, generator=generator)
                quantized.weight = bnb.nn.Params4bit(weight, requires_grad=False,
                                                     compress_statistics=True,
                                                     quant_type="nf4").to(target)
                del weight
                setattr(parent, name, quantized)
    for module in model.modules():  # embeddings, norms, LM head
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_meta:
                value = torch.empty(param.shape, dtype=dtype, device=target)
                if "norm" in type(module).__name__.lower():
                    value.fill_(1.0)
                else:
                    value.normal_(0.0, 0.02, generator=generator)
                setattr(module, name, nn.Parameter(value, requires_grad=False))
    with target:  # the rotary frequencies are computed, not loaded
        model.model.rotary_emb = LlamaRotaryEmbedding(config=config)
    model.is_loaded_in_4bit = True  # what peft and TRL look at to treat it as a QLoRA base
    model.config.use_cache = False
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise RuntimeError(f"tensors left on the meta device: {leftovers[:5]}")
    return model


def prepare_for_training(model: Any, cfg: SFTConfig, device: Device) -> Any:
    """As `qlora.load_base_model` does: frozen, upcast; the trainer turns activation
    checkpointing on, from cfg.trainer["activation_checkpointing"]."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def word_list(tokenizer: Any) -> list[str]:
    """Lower-case words that are single tokens with a leading space, so that text of n such
    words is about n tokens long (byte-level BPE vocabularies mark the space with 'Ġ')."""
    words = sorted({t[1:] for t in tokenizer.get_vocab()
                    if t.startswith("\u0120") and t[1:].isalpha() and t[1:].islower() and len(t) > 3})
    return words or ["token"]


def random_text(words: list[str], n_tokens: int, rng: random.Random) -> str:
    return " ".join(rng.choice(words) for _ in range(n_tokens))


def datasets(tokenizer: Any, seq_len: int, steps: int) -> tuple[Any, Any]:
    """Prompt/completion and preference pairs long enough that every sequence is cut at
    `seq_len`: the measured batches all hold `seq_len` tokens per sequence."""
    from datasets import Dataset

    rng = random.Random(0)
    words = word_list(tokenizer)
    template = training._render_length(tokenizer, [{"role": "user", "content": ""}], True)
    room = max(seq_len - template - 8, 8)  # tokens left for the words of the prompt
    n = steps + 2

    def text(n_words: int) -> str:
        return random_text(words, max(n_words, 1), rng)

    sft = Dataset.from_list([{
        "prompt": [{"role": "user", "content": text(int(room * 0.6))}],
        "completion": [{"role": "assistant", "content": text(seq_len // 2)}],
    } for _ in range(n)])
    dpo = Dataset.from_list([{
        "prompt": [{"role": "user", "content": text(room // 2)}],
        "chosen": [{"role": "assistant", "content": text(seq_len * 2 // 3)}],
        "rejected": [{"role": "assistant", "content": text(seq_len * 2 // 3)}],
    } for _ in range(n)])
    return sft, dpo


class StepTimer:
    """Wall time of every optimiser step, to report speed without the first (warm-up) step."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                timer.begin.append(time.perf_counter())

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                timer.end.append(time.perf_counter())
                timer.tokens.append(state.num_input_tokens_seen)

        self.begin: list[float] = []
        self.end: list[float] = []
        self.tokens: list[int] = []
        self.callback = Callback()

    def steady_tokens_per_s(self) -> float | None:
        if len(self.end) < 2:
            return None
        return (self.tokens[-1] - self.tokens[0]) / (self.end[-1] - self.end[0])


def run_stage(stage: str, model: Any, tokenizer: Any, data: Any, cfg: Any,
              device: Device, out: Path) -> tuple[dict[str, Any], Any]:
    import torch

    timer = StepTimer()
    args = qlora.trainer_arguments(stage, cfg, out / stage, device, save_strategy="no",
                                   logging_steps=1, disable_tqdm=False, report_to="none")
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
    report = {"stage": stage, "steps": trainer.state.global_step, "wall_s": round(wall, 1),
              "tokens": int(tokens), "tokens_per_s": round(tokens / wall, 1),
              "steady_tokens_per_s": _round(timer.steady_tokens_per_s()),
              "optimizer": args.optim if isinstance(args.optim, str) else args.optim.value,
              **qlora.peak_memory(device)}
    if device.kind == "cuda":
        report["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
    last = [e for e in trainer.state.log_history if "loss" in e]
    report["last_loss"] = _round(last[-1]["loss"] if last else None)
    trained = trainer.model
    del trainer
    gc.collect()
    if device.kind == "cuda":
        torch.cuda.empty_cache()
    return report, trained


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="a 2-layer model, sequence length 64, 2 steps: a smoke run (CPU ok)")
    parser.add_argument("--steps", type=int, default=None, help="steps per stage (default 10)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (2048)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--target-gb", type=float, default=20.0)
    parser.add_argument("--max-minutes", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 10)
    args.seq_len = args.seq_len or (64 if args.tiny else 2048)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    device = detect_device()
    if device.kind != "cuda" and not args.tiny:
        print("gpu_check: no CUDA GPU visible; run it on a machine with an NVIDIA GPU, or use "
              "--tiny for a smoke run of the same code on CPU", file=sys.stderr)
        return 2
    from aloe.local_model import ensure_embedded_model

    tokenizer = qlora.load_tokenizer(str(ensure_embedded_model(ROOT / "outputs" / "models")))
    config = tiny_config(len(tokenizer)) if args.tiny else llama3_8b_config()
    print(f"device: {device.name} ({device.kind}), compute dtype "
          f"{str(device.compute_dtype).removeprefix('torch.')}")
    print(f"model: Llama-3-8B shapes{' (tiny)' if args.tiny else ''}: "
          f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, "
          f"{parameter_count(config) / 1e9:.2f}B parameters, random weights, 4-bit NF4")
    trainer = dict(max_length=args.seq_len, max_steps=args.steps, per_device_train_batch_size=1,
                   gradient_accumulation_steps=1, activation_checkpointing=True, optim="auto")
    lora = dict(lora_r=args.lora_r, lora_alpha=2 * args.lora_r)
    sft_cfg = SFTConfig(**lora, trainer={**trainer, "learning_rate": 2e-4})
    dpo_cfg = DPOConfig(**lora, trainer={**trainer, "beta": 0.1, "learning_rate": 5e-6})

    import torch

    build_started = time.perf_counter()
    model = build_random_4bit_model(config, device)
    if device.kind == "cuda":
        torch.cuda.synchronize()
    built = {"build_s": round(time.perf_counter() - build_started, 1)}
    if device.kind == "cuda":
        built["weights_gb"] = round(torch.cuda.memory_allocated() / GIB, 2)
    print(f"built in {built['build_s']} s" + (f", {built['weights_gb']} GB on the GPU"
                                              if "weights_gb" in built else ""))
    model = prepare_for_training(model, sft_cfg, device)
    sft_data, dpo_data = datasets(tokenizer, args.seq_len, args.steps)
    sft, model = run_stage("sft", model, tokenizer, sft_data, sft_cfg, device, args.out)
    dpo, _ = run_stage("dpo", model, tokenizer, dpo_data, dpo_cfg, device, args.out)

    total_min = (time.perf_counter() - started) / 60
    report = {"device": device.name, "tiny": args.tiny, "seq_len": args.seq_len,
              "steps": args.steps, "lora_r": args.lora_r, **built, "sft": sft, "dpo": dpo,
              "total_minutes": round(total_min, 2), "target_gb": args.target_gb}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print()
    print(f"{'stage':6} {'steps':>5} {'wall s':>8} {'tokens/s':>10} {'steady tok/s':>13} "
          f"{'peak GB':>8}  memory")
    for r in (sft, dpo):
        print(f"{r['stage']:6} {r['steps']:>5} {r['wall_s']:>8} {r['tokens_per_s']:>10} "
              f"{str(r['steady_tokens_per_s']):>13} {r['peak_memory_gb']:>8}  "
              f"{r['peak_memory_kind']}")
    print(f"total: {total_min:.1f} min; report: {args.out / 'gpu_check.json'}")
    if args.tiny:
        return 0
    fits = all(r["peak_memory_gb"] < args.target_gb for r in (sft, dpo))
    fast = total_min < args.max_minutes
    print(f"{'PASS' if fits else 'FAIL'}: peak memory under {args.target_gb:g} GB "
          f"(SFT {sft['peak_memory_gb']} GB, DPO {dpo['peak_memory_gb']} GB)")
    print(f"{'PASS' if fast else 'FAIL'}: finished in under {args.max_minutes:g} minutes")
    return 0 if fits and fast else 1


if __name__ == "__main__":
    sys.exit(main())
