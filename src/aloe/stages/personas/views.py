"""Stage 1 read back, for the notebook and the report: the round log, every screened
candidate, the benchmark's leakage check, and a 2-D map of the pools."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from aloe.core.config import Params
from aloe.core.layout import RunLayout
from aloe.core.records import read_json, read_records, write_json
from aloe.core.schemas import (
    candidate_check,
    leakage_check,
    persona_check,
    pool_item_check,
    round_check,
)
from aloe.stages.personas.novelty import NoveltyFilter
from aloe.stages.personas.stage import threshold_for
from aloe.stages.pools import KINDS, kind_plural


def read_pool(layout: RunLayout, name: str) -> list[dict[str, Any]]:
    return read_records(layout.pool(name), check=pool_item_check())


def rounds_table(layout: RunLayout) -> pd.DataFrame:
    """One row per round and pool: calls, unusable replies, candidates, admitted, size, rate."""
    columns = ["pool", "round", "calls", "unusable", "dropped_fragments", "candidates",
               "admitted", "rejected", "surplus", "pool_size", "admission_rate"]
    rows = read_records(layout.persona_rounds, check=round_check())
    return pd.DataFrame(rows, columns=columns).sort_values(["pool", "round"],
                                                           ignore_index=True)


def candidates_table(layout: RunLayout) -> pd.DataFrame:
    """Every screened candidate: pool, round, text, highest similarity, nearest, status."""
    columns = ["pool", "round", "call", "text", "max_similarity", "nearest_id", "status"]
    table = pd.DataFrame(read_records(layout.persona_candidates, check=candidate_check()),
                         columns=columns)
    table.insert(1, "kind", table["pool"].map(pool_kind))
    return table


def pool_kind(pool: str) -> str:
    """'profile' or 'personality' for a pool name such as 'benchmark_profiles'."""
    return "personality" if pool.endswith("personalities") else "profile"


def leakage_table(layout: RunLayout) -> pd.DataFrame:
    """Benchmark items with their highest similarity to the training pool of their kind."""
    rows = []
    for kind in KINDS:
        for item in read_pool(layout, f"benchmark_{kind_plural(kind)}"):
            rows.append({"kind": kind, "id": item["id"], "source": item["source"],
                         "train_similarity": item.get("train_similarity"),
                         "nearest_train_id": item.get("nearest_train_id"),
                         "text": item["text"]})
    return pd.DataFrame(rows, columns=["kind", "id", "source", "train_similarity",
                                       "nearest_train_id", "text"])


def persona_leakage_table(layout: RunLayout) -> pd.DataFrame:
    """Each benchmark persona with its nearest training persona (before the screen dropped
    near-copies) and their similarity, most similar first."""
    benchmark = {p["id"]: p for p in read_records(layout.benchmark, check=persona_check())}
    rows = [{**row, "benchmark_profile": benchmark.get(row["benchmark_id"], {}).get("profile")}
            for row in read_records(layout.persona_leakage, check=leakage_check())]
    columns = ["benchmark_id", "nearest_train_id", "similarity", "benchmark_profile"]
    return (pd.DataFrame(rows, columns=columns)
            .sort_values("similarity", ascending=False, ignore_index=True))


def leakage_report(layout: RunLayout) -> pd.DataFrame:
    """Per kind: how close the benchmark items come to the training pool, and how many
    generated benchmark candidates were rejected for resembling a training item."""
    items = leakage_table(layout)
    candidates = candidates_table(layout)
    rows = []
    for kind in KINDS:
        mine = items[items["kind"] == kind]
        pool = f"benchmark_{kind_plural(kind)}"
        rejected = candidates[(candidates["pool"] == pool) & (candidates["status"] == "rejected")]
        near_train = sum(not str(i).startswith("bench") for i in rejected["nearest_id"])
        rows.append({"kind": kind, "benchmark_items": len(mine),
                     "max_train_similarity": mine["train_similarity"].max(),
                     "mean_train_similarity": mine["train_similarity"].mean(),
                     "rejected_close_to_training": near_train,
                     "rejected_close_to_benchmark": len(rejected) - near_train})
    return pd.DataFrame(rows).set_index("kind")


def pool_map(params: Params) -> pd.DataFrame:
    """Every pool and benchmark item with a 2-D PCA position (per kind) and its nearest-
    neighbour similarity within the training pool (benchmark items: to the training pool).

    Kept in `persona_map.json` with what it was computed from, so that the report and a rerun
    do not load the embedding model again while the pools are unchanged."""
    layout = params.layout
    pools = {kind: (read_pool(layout, kind_plural(kind)),
                    read_pool(layout, f"benchmark_{kind_plural(kind)}")) for kind in KINDS}
    key = hashlib.sha256(json.dumps(
        [params.personas.embedding_model,
         [threshold_for(params.personas, kind) for kind in KINDS],
         {kind: [[i["id"], i["text"]] for i in train + bench]
          for kind, (train, bench) in pools.items()}]).encode()).hexdigest()
    saved = layout.persona_map
    if saved.exists() and (kept := read_json(saved)).get("key") == key:
        return pd.DataFrame(kept["rows"])
    table = _compute_pool_map(params, pools)
    write_json(saved, {"key": key, "rows": table.to_dict(orient="records")})
    return table


def _compute_pool_map(params: Params, pools: dict[str, tuple[list, list]]) -> pd.DataFrame:
    frames = []
    for kind, (train, bench) in pools.items():
        novelty = NoveltyFilter(threshold_for(params.personas, kind),
                                params.personas.embedding_model)
        novelty.extend([item["text"] for item in train])
        nn = novelty.nearest_neighbour_similarities()
        bench_scores, _ = novelty.similarity_to_pool([item["text"] for item in bench])
        vectors = np.vstack([novelty.embeddings, novelty.encode([i["text"] for i in bench])])
        coords = pca_2d(vectors)
        rows = [{"kind": kind, "id": item["id"], "source": item["source"],
                 "nn_similarity": float(score)} for item, score in zip(train, nn)]
        rows += [{"kind": kind, "id": item["id"], "source": "benchmark",
                  "nn_similarity": float(score)} for item, score in zip(bench, bench_scores)]
        frame = pd.DataFrame(rows)
        frame["x"], frame["y"] = coords[:, 0].astype(float), coords[:, 1].astype(float)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components (numpy SVD; no scikit-learn needed)."""
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2))
    centred = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T
