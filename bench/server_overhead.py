"""What the local server (`transformers serve`) adds to a request over the model's own
`generate` in-process: each of the tiny profile's request shapes (bench/local_server.py's:
generator, user, assistant, judge), sent to the server and then generated in this process with
the same seed, the same number of new tokens and one torch thread each.

    OMP_NUM_THREADS=1 .venv/bin/python bench/server_overhead.py [--seeds 1 2]

Prints, per request, the prompt's and the reply's tokens, both times and their ratio, and
whether both made the same reply (greedy ones must). A ratio near 1 says the server costs
nothing beyond the model's own work: a faster local model then needs less work per token (a
cheaper precision, fewer prompt tokens), not another server.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx
import torch
from local_server import _one, request_shapes, start
from transformers import AutoModelForCausalLM, AutoTokenizer

from aloe.core.config import load_params, project_root
from aloe.core.local_model import local_model_path


def served(server, shape: dict, seed: int) -> tuple[float, int, str]:
    """Seconds for one request to the server, the tokens it generated, its reply."""
    async def ask() -> tuple[float, int, str]:
        async with httpx.AsyncClient(timeout=600) as client:
            started = time.perf_counter()
            text, tokens = await _one(client, server, shape, seed)
            return time.perf_counter() - started, tokens, text

    return asyncio.run(ask())


def in_process(model, tokenizer, shape: dict, seed: int,
               tokens: int) -> tuple[float, int, str]:
    """Seconds for `generate` to make exactly `tokens` new tokens for the same messages, the
    prompt's length, the reply."""
    prompt = tokenizer.apply_chat_template(shape["messages"], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    sampling = ({"do_sample": True, "temperature": shape["temperature"]}
                if shape["temperature"] > 0 else {"do_sample": False})
    torch.manual_seed(seed)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**prompt, max_new_tokens=tokens, min_new_tokens=tokens, **sampling)
    length = int(prompt["input_ids"].shape[1])
    reply = tokenizer.decode(out[0, length:], skip_special_tokens=True)
    return time.perf_counter() - started, length, reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a server on two cores with `local_model.servers: 2`
    params = load_params(project_root() / "params" / "tiny.yaml")
    params.local_model.cache_dir = str(project_root() / "outputs" / "models")
    path = local_model_path(params)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    server = start("plain", Path(path), Path(tempfile.mkdtemp()))
    print(f"{'role':<10} {'prompt':>6} {'new':>4} {'server (s)':>11} {'generate (s)':>13} "
          f"{'ratio':>6} same reply")
    total_served = total_generated = 0.0
    try:
        for shape in request_shapes():
            for seed in args.seeds:
                seconds, tokens, answer = served(server, shape, seed)
                generated, prompt, reply = in_process(model, tokenizer, shape, seed, tokens)
                total_served, total_generated = total_served + seconds, total_generated + generated
                print(f"{shape['role']:<10} {prompt:>6} {tokens:>4} {seconds:>11.2f} "
                      f"{generated:>13.2f} {seconds / generated:>6.2f} "
                      f"{'yes' if answer.strip() == reply.strip() else 'no'}", flush=True)
    finally:
        server.stop()
    print(f"{'all':<10} {'':>6} {'':>4} {total_served:>11.2f} {total_generated:>13.2f} "
          f"{total_served / total_generated:>6.2f}")


if __name__ == "__main__":
    main()
