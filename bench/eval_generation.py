"""Replies per second of stage 5's in-process generation at batch 1 vs 8 vs 16.

    .venv/bin/python bench/eval_generation.py [--prompts 16] [--max-new-tokens 48] [--model PATH]

The same prompts (first turns of benchmark-like chats) go through `InProcessResponder` at each
batch size, greedy, so every batch size writes the same replies and only the batching differs.
Each size is timed once after one warm-up batch; the ratios to batch 1 are printed at the end.
The model is the embedded SmolLM2-135M-Instruct unless --model names another.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Benchmark input only (the opening lines of simulated users), not prompt templates.
OPENERS = [
    "Just got back from a 10k run, legs are jelly but I feel great.",
    "My daughter lost her first tooth today and asked if the tooth fairy takes cards.",
    "Trying to decide between sourdough and focaccia for the weekend bake.",
    "Work was brutal, three meetings that could have been emails.",
    "Finally finished restoring the old Mustang's carburettor!",
    "Anyone else think winter evenings are made for board games?",
    "I'm planning a hiking trip to the Dolomites next month.",
    "My tomatoes are finally turning red, after weeks of waiting.",
    "Just started learning the cello at 45, it's harder than it looks.",
    "We adopted a rescue greyhound, he sleeps twenty hours a day.",
    "Got promoted to team lead, a bit nervous about it honestly.",
    "Been reading a lot of sci-fi lately, any favourites?",
    "The kids want a treehouse and I have zero carpentry skills.",
    "Brewed my first batch of IPA, it came out a little too bitter.",
    "Thinking of switching careers into teaching, is that crazy at 38?",
    "Rainy Sunday, perfect excuse to do nothing at all.",
]


def histories(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": OPENERS[i % len(OPENERS)]}] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--model", default=None, help="default: the embedded model")
    args = parser.parse_args()

    import torch

    from aloe.core.local_model import ensure_embedded_model
    from aloe.stages.policy import InProcessResponder

    model = args.model or str(ensure_embedded_model("outputs/models"))
    responder = InProcessResponder(model, batch_size=1, max_new_tokens=args.max_new_tokens,
                                   temperature=0.0)
    prompts = histories(args.prompts)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    device = responder.device + ("" if responder.device == "cpu"
                                 else f" ({torch.cuda.get_device_name()})")
    print(f"model {model} on {device}, torch threads {torch.get_num_threads()}, "
          f"{len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, greedy")
    responder.reply_many(prompts[: max(sizes)], batch_size=max(sizes))  # warm-up

    results: dict[int, tuple[float, int, list[str]]] = {}
    for size in sizes:
        started = time.perf_counter()
        replies = responder.reply_many(prompts, batch_size=size)
        seconds = time.perf_counter() - started
        texts = [r.text if hasattr(r, "text") else str(r) for r in replies]
        tokens = sum(len(responder.tokenizer(text).input_ids) for text in texts)
        results[size] = (seconds, tokens, texts)
        print(f"batch {size:>2}: {seconds:7.2f} s  {len(prompts) / seconds:6.2f} replies/s  "
              f"{tokens / seconds:7.1f} reply tokens/s")
    base = sizes[0]
    for size in sizes[1:]:
        same = sum(a == b for a, b in zip(results[base][2], results[size][2]))
        print(f"batch {size} vs {base}: {results[base][0] / results[size][0]:.2f}x replies/s "
              f"({same}/{len(prompts)} replies identical to batch {base})")


if __name__ == "__main__":
    main()
