"""What one decoding step of the embedded model costs on this machine, in-process: at one
sequence and at several at once, with one torch thread and with two. It says how far batching
the roles' requests could go on a CPU (the local server decodes one request at a time).

    .venv/bin/python bench/decode_step.py [--batches 1 4 8] [--threads 1 2] [--steps 30]

Prints, per thread count and batch size, milliseconds per step, tokens per second and their
ratio to the first batch size's; every
step after a prompt of ~100 tokens, with the key-value cache, float32 as served.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from aloe.core.config import load_params, project_root
from aloe.core.local_model import local_model_path


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=30)
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
    print(f"{'threads':>7} {'batch':>5} {'ms/step':>8} {'tokens/s':>9} {'x first':>9}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        single = None
        for batch in args.batches:
            ms = step_ms(model, prompt.repeat(batch, 1), args.steps)
            rate = batch * 1000 / ms
            single = single or rate
            print(f"{threads:>7} {batch:>5} {ms:>8.1f} {rate:>9.1f} {rate / single:>9.2f}")


if __name__ == "__main__":
    main()
