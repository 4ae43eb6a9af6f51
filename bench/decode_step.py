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

`--batch-invariance STEPS`: each of those eight texts continued greedily for STEPS tokens alone
and inside one left-padded batch of all eight (float32, the threads given last): how many
continuations are the same token for token, and the largest difference of a next-token logit
while they agree. A batching server answers a request with what its batch computes: where the
two differ, an answer would depend on which requests happened to share its batch (timing).
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

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


def continued(model, tokenizer, texts: list[str], steps: int) -> tuple[list[list[int]], Any]:
    """Greedy continuations of `texts` as one left-padded batch, and the next-token logits of
    every step (batch x steps x vocabulary)."""
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=steps, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    return out.sequences[:, width:].tolist(), torch.stack(out.scores, dim=1)


def batch_invariance(model, tokenizer, texts: list[str], steps: int) -> tuple[int, float]:
    """How many of `texts` continue the same alone and in one batch of all, and the largest
    next-token logit difference over the steps where the two still agree."""
    together, batch_logits = continued(model, tokenizer, texts, steps)
    same, largest = 0, 0.0
    for i, text in enumerate(texts):
        alone, logits = continued(model, tokenizer, [text], steps)
        agreed = next((k for k, (a, b) in enumerate(zip(alone[0], together[i])) if a != b),
                      min(len(alone[0]), len(together[i])))
        same += alone[0] == together[i]
        if agreed:
            diff = (logits[0, :agreed] - batch_logits[i, :agreed]).abs().max()
            largest = max(largest, float(diff))
    return same, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precisions", nargs="+", default=["float32"],
                        choices=["float32", "bfloat16", "int8-dynamic"])
    parser.add_argument("--batch-invariance", type=int, default=0, metavar="STEPS")
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
    if args.batch_invariance:
        seeds = [tokenizer.decode(t[0][:128]) for t in texts]
        same, largest = batch_invariance(model, tokenizer, seeds, args.batch_invariance)
        print(f"batch of {len(seeds)}, {args.batch_invariance} greedy steps, "
              f"{torch.get_num_threads()} threads: {same} of {len(seeds)} continuations the "
              f"same alone and batched; largest next-token logit difference {largest:.2e}")


if __name__ == "__main__":
    main()
