"""How much faster is NoveltyFilter than the released ALOE code's way of screening candidates?

    .venv/bin/python bench/persona_filter.py [--pool FILE] [--candidates FILE] [--n 20]
                                             [--naive-n N]

The pool is the official 331 profiles (profile.jsonl), the candidates the 20 official benchmark
profiles (profile_eval.jsonl), i.e. 20 new items none of which the pool has seen. Both ways
load the same sentence-embedding model before the clock starts and make the same decisions
(checked); the timed part is screening only:

- naive (the released persona_generation.py): for every candidate, for every pool item,
  encode the candidate and the item one at a time and take their cosine similarity; an
  admitted candidate joins the pool before the next one is screened;
- NoveltyFilter: the pool is encoded once beforehand (as the stage does when it starts or
  resumes; not timed), then one batched encoding of the candidates and one matrix product.

Prints both times and their ratio. The naive way makes 2 x 20 x 331 = 13,240 single encodings;
on a slow or busy CPU `--naive-n 2` times it on 2 candidates and scales linearly (its cost is
linear in the candidates). On a CPU shared by many processes, OMP_NUM_THREADS=1 avoids thread
oversubscription, which slows small single encodings tenfold.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from aloe.stages.personas import NoveltyFilter  # noqa: E402
from aloe.stages.pools import read_text_pool  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "aloe_reference"


def naive_screen(model, pool: list[str], candidates: list[str], threshold: float) -> list[bool]:
    """The released code's loop: two single-text encodings per (candidate, pool item) pair."""
    from tqdm.auto import tqdm

    pool = list(pool)
    decisions = []
    for candidate in tqdm(candidates, desc="naive", unit="candidate"):
        best = -1.0
        for item in pool:
            a = model.encode([candidate], show_progress_bar=False)
            b = model.encode([item], show_progress_bar=False)
            best = max(best, float(a[0] @ b[0] / (np.linalg.norm(a[0]) * np.linalg.norm(b[0]))))
        decisions.append(best <= threshold)
        if decisions[-1]:
            pool.append(candidate)
    return decisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", default=str(REFERENCE / "profile.jsonl"))
    parser.add_argument("--candidates", default=str(REFERENCE / "profile_eval.jsonl"))
    parser.add_argument("--n", type=int, default=20, help="candidates to screen")
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--naive-n", type=int, default=None,
                        help="time the naive way on only the first N candidates and scale its "
                             "time linearly to all (it is linear in the candidates); default: all")
    args = parser.parse_args()

    pool = read_text_pool(args.pool)
    candidates = read_text_pool(args.candidates)[:args.n]
    novelty = NoveltyFilter(args.threshold, args.model)  # loads the model (not timed)
    novelty.encode(["warm-up"])
    print(f"pool: {len(pool)} items from {args.pool}")
    print(f"candidates: {len(candidates)} from {args.candidates}; model {args.model}, "
          f"threshold {args.threshold}; torch threads: {_threads()}")

    novelty.extend(pool)
    started = time.perf_counter()
    fast = [s.admitted for s in novelty.screen(candidates)]
    fast_s = time.perf_counter() - started

    timed = candidates[:args.naive_n or len(candidates)]
    started = time.perf_counter()
    slow = naive_screen(novelty.model, pool, timed, args.threshold)
    naive_s = (time.perf_counter() - started) * len(candidates) / len(timed)
    scaled = "" if len(timed) == len(candidates) else \
        f", measured on {len(timed)} candidates and scaled to {len(candidates)}"

    same = fast[:len(slow)] == slow
    if not same:
        print(f"WARNING: the two ways disagree on {sum(a != b for a, b in zip(fast, slow))} "
              "candidates (float rounding at the threshold?)", file=sys.stderr)
    print(f"admitted: {sum(fast)} of {len(candidates)} (same decisions as naive: {same})")
    print(f"naive (re-encode the pool per candidate): {naive_s:10.3f} s "
          f"({2 * len(candidates) * len(pool):,}+ single encodings{scaled})")
    print(f"NoveltyFilter (one batch + one matmul):    {fast_s:10.3f} s")
    print(f"ratio naive / NoveltyFilter: {naive_s / fast_s:,.0f}x")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
