"""What one decoding step of the embedded model costs on this machine, in-process: at one
sequence and at several at once, with one torch thread and with two. It says how far batching
the roles' requests could go on a CPU (the local server decodes one request at a time).

    .venv/bin/python bench/decode_step.py [--batches 1 4 8] [--threads 1 2] [--steps 30]
                                          [--precisions float32 bfloat16 int8-dynamic]

Prints, per precision, thread count and batch size, milliseconds per step, tokens per second
and their ratio to the first batch size's; every step after a prompt of ~100 tokens, with the
key-value cache. float32 is how the model is served. For another precision it also prints how
often its next token (greedy) is float32's, and the mean KL divergence from float32's
next-token distribution, over eight of the embedded seed profiles read as text: a faster precision
that changes the model's answers is a weaker model, not a faster one.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from aloe.core.config import load_params, project_root
from aloe.core.local_model import local_model_path
from aloe.stages.pools import builtin_seeds


def step_ms(model, ids: torch.Tensor, steps: int) -> float:
    """Milliseconds per decoding step after the prompt `ids` (one row per sequence)."""
    with torch.inference_mode():
        out = model(ids, use_cache=True)
        cache, token = out.past_key_values, ids[:, -1:]
        started = time.perf_counter()
        for _ in range(steps):
            out = model(token, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
        return (time.perf_counter() - started) / steps * 1000


def in_precision(model, precision: str):
    """A copy of the float32 `model` that computes in `precision`."""
    if precision == "float32":
        return model
    if precision == "bfloat16":
        return copy.deepcopy(model).to(torch.bfloat16)
    if precision == "int8-dynamic":  # int8 weights per tensor and int8 activations per call
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                      dtype=torch.qint8)
    raise SystemExit(f"--precisions: unknown precision {precision!r}")


def agreement(reference, model, texts: list[torch.Tensor]) -> tuple[float, float]:
    """How often `model`'s most likely next token is `reference`'s, and the mean KL divergence
    of its next-token distribution from `reference`'s, over every position of `texts`."""
    same = total = 0
    divergence = 0.0
    with torch.inference_mode():
        for ids in texts:
            ref = torch.log_softmax(reference(ids).logits[0].float(), -1)
            got = torch.log_softmax(model(ids).logits[0].float(), -1)
            same += int((ref.argmax(-1) == got.argmax(-1)).sum())
            total += ref.shape[0]
            divergence += float((ref.exp() * (ref - got)).sum(-1).sum())
    return same / total, divergence / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precisions", nargs="+", default=["float32"],
                        choices=["float32", "bfloat16", "int8-dynamic"])
    args = parser.parse_args()
    params = load_params(project_root() / "params" / "tiny.yaml")
    params.local_model.cache_dir = str(project_root() / "outputs" / "models")
    path = local_model_path(params)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Plan a quiet weekend for a tired nurse. " * 8}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    print(f"prompt {prompt.shape[1]} tokens, {args.steps} steps each")
    print(f"{'threads':>7} {'batch':>5} {'ms/step':>8} {'tokens/s':>9} {'x first':>9} precision")
    variants = {name: in_precision(model, name) for name in args.precisions}
    for name, variant in variants.items():
        for threads in args.threads:
            torch.set_num_threads(threads)
            single = None
            for batch in args.batches:
                ms = step_ms(variant, prompt.repeat(batch, 1), args.steps)
                rate = batch * 1000 / ms
                single = single or rate
                print(f"{threads:>7} {batch:>5} {ms:>8.1f} {rate:>9.1f} {rate / single:>9.2f}"
                      f" {name}")
    texts = [tokenizer(seed, return_tensors="pt")["input_ids"][:, :256]
             for seed in builtin_seeds("profile")[:8]]
    for name, variant in variants.items():
        if name != "float32":
            same, kl = agreement(model, variant, texts)
            print(f"{name}: next token as float32's {same:.3f} of the time, "
                  f"mean KL from float32 {kl:.4f} nats ({sum(t.shape[1] for t in texts)} "
                  "positions of the seed profiles)")


if __name__ == "__main__":
    main()
