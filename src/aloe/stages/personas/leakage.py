"""The leakage screen: no training persona may be a near-copy of a user of the benchmark that
stage 5 will evaluate.

A persona is embedded as one text, its profile followed by its personality. For each benchmark
persona the screen records its nearest training persona and their cosine similarity (kept in
the run folder as persona_leakage.jsonl, shown in notebook 01); every training persona more
similar than `personas.leakage_threshold` to any benchmark persona is dropped from the training
personas, and counted. The benchmark is screened as it is: it is what is measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aloe.stages.personas.novelty import NoveltyFilter


@dataclass
class LeakageScreen:
    kept: list[dict[str, Any]]  # the training personas that stay
    dropped: list[dict[str, Any]]  # near-copies of a benchmark persona, with why
    nearest: list[dict[str, Any]]  # per benchmark persona: its nearest training persona
    threshold: float


def persona_text(persona: dict[str, Any]) -> str:
    return f"{persona['profile']} {persona['personality']}"


def screen(training: Sequence[dict[str, Any]], benchmark: Sequence[dict[str, Any]],
           threshold: float, embedding_model: str, *,
           batch_size: int = 1024) -> LeakageScreen:
    """Screen `training` personas against `benchmark` personas (see the module docstring)."""
    if not training or not benchmark:
        return LeakageScreen(list(training), [], [], threshold)
    encoder = NoveltyFilter(threshold, embedding_model)
    bench = encoder.encode([persona_text(p) for p in benchmark])
    best = np.full(len(training), -np.inf, dtype=np.float32)  # per training persona
    closest = np.zeros(len(training), dtype=int)
    bench_best = np.full(len(benchmark), -np.inf, dtype=np.float32)  # per benchmark persona
    bench_nearest = np.zeros(len(benchmark), dtype=int)
    for start in range(0, len(training), batch_size):  # memory: one block at a time
        block = encoder.encode([persona_text(p) for p in training[start:start + batch_size]])
        scores = block @ bench.T  # (block, benchmark)
        best[start:start + len(block)] = scores.max(axis=1)
        closest[start:start + len(block)] = scores.argmax(axis=1)
        better = scores.max(axis=0) > bench_best
        bench_nearest[better] = start + scores.argmax(axis=0)[better]
        bench_best = np.maximum(bench_best, scores.max(axis=0))
    nearest = [{"benchmark_id": b["id"], "nearest_train_id": training[int(i)]["id"],
                "similarity": round(float(s), 4)}
               for b, i, s in zip(benchmark, bench_nearest, bench_best)]
    kept, dropped = [], []
    for persona, score, index in zip(training, best, closest):
        if score > threshold:
            dropped.append({"id": persona["id"], "similarity": round(float(score), 4),
                            "benchmark_id": benchmark[int(index)]["id"]})
        else:
            kept.append(persona)
    return LeakageScreen(kept, dropped, nearest, threshold)
