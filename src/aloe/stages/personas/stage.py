"""Stage 1: the persona pool, grown by iterative self-generation and filtered by novelty.

Two pools grow from a few seeds: *profiles* (plain facts: age, work, family, hobbies, habits;
no traits) and *personalities* (traits that show in conversation; no facts); see `grow` for a
round and `novelty` for the filter. Profiles are paired with random personalities into
personas; a held-out benchmark is generated apart from the training pools (every benchmark item
checked against them), or read from the official ALOE files. Everything is appended as it is
decided, so a rerun continues where an interrupted run stopped, and the response cache replays
the calls it already made.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aloe.core.config import Params, PersonasConfig, resolve_path
from aloe.core.layout import RunLayout
from aloe.core.progress import Reporter, count, money, reporter
from aloe.core.records import read_records, write_json, write_records
from aloe.core.schemas import (
    candidate_check,
    leakage_check,
    persona_check,
    pool_item_check,
    round_check,
)
from aloe.stages.personas.grow import (
    STOP_REASONS,
    Hook,
    PoolGrower,
    PoolSpec,
    PoolSummary,
    generation_requests,
)
from aloe.stages.personas.leakage import screen as screen_leakage
from aloe.stages.personas.novelty import NoveltyFilter
from aloe.stages.plan_lengths import Lengths, generated_pools, initial_texts
from aloe.stages.planned import PlannedRequest
from aloe.stages.pools import (
    ALOE_BENCHMARK_PERSONALITIES,
    KINDS,
    as_items,
    builtin_seeds,
    cross_benchmark,
    kind_plural,
    persona_record,
    read_text_pool,
)


# ==========================================================================================
# Pairing
# ==========================================================================================
def pair_personas(profiles: Sequence[dict[str, Any]], personalities: Sequence[dict[str, Any]],
                  per_profile: int, seed: int, pairing: str = "distinct") -> list[dict[str, Any]]:
    """Profiles paired with personalities into personas (seeded, reproducible).

    distinct: each profile, in turn, with `per_profile` different random personalities.
    random (the released code): `per_profile` passes over the profiles, each giving every
    profile one personality drawn with replacement; personas listed pass by pass.
    """
    if not profiles or not personalities:
        return []
    rng = random.Random(f"{seed}/pairing")
    if pairing == "random":
        pairs = [(profile, rng.choice(list(personalities)))
                 for _ in range(per_profile) for profile in profiles]
    else:
        pairs = [(profile, personality) for profile in profiles
                 for personality in rng.sample(list(personalities),
                                               min(per_profile, len(personalities)))]
    width = len(str(len(pairs)))
    return [persona_record(f"persona-{number:0{width}d}", profile, personality)
            for number, (profile, personality) in enumerate(pairs, start=1)]


# ==========================================================================================
# The stage
# ==========================================================================================
@dataclass
class PersonasSummary:
    """What stage 1 produced and why growth stopped; saved as persona_summary.json."""

    profiles: int
    personalities: int
    personas: int
    benchmark: int
    benchmark_source: str  # "generated" here, or "aloe": the official files
    pools: dict[str, PoolSummary]
    rounds: list[dict[str, Any]]
    pairing: str = "distinct"
    leakage_threshold: float | None = None
    leakage_dropped: list[dict[str, Any]] = field(default_factory=list)  # training personas

    @property
    def stop_reasons(self) -> dict[str, str]:
        return {name: pool.stop_reason for name, pool in self.pools.items()}

    @property
    def stop_reason(self) -> str:
        """The training pools' stopping rule; the weaker one when they differ
        (max_rounds, then saturation, then target)."""
        reasons = {self.pools[name].stop_reason for name in ("profiles", "personalities")
                   if name in self.pools}
        return next((r for r in reversed(STOP_REASONS) if r in reasons), "target")

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(pool) for pool in self.pools.values()]).set_index("name")

    def explain(self) -> str:
        """One sentence per pool saying which stopping rule fired, for notebooks and logs."""
        words = {"target": "reached its target size",
                 "saturation": "saturated (admission rate over the last rounds below the floor)",
                 "max_rounds": "ran out of rounds (max_rounds) before its target"}
        lines = []
        for pool in self.pools.values():
            if pool.rounds == 0 and pool.size == pool.initial:
                how = "was used as given (no generation needed)"
            else:
                how = words[pool.stop_reason]
            lines.append(f"{pool.name}: {_count(pool.size, 'item')} (target {pool.target}) - "
                         f"{how} after {_count(pool.rounds, 'round')}, "
                         f"{_count(pool.calls, 'call')}, "
                         f"{_count(pool.unusable_replies, 'unusable reply', 'unusable replies')}"
                         f", {pool.admitted}/{pool.candidates} candidates admitted.")
        if self.leakage_threshold is not None:
            lines.append(f"leakage screen: {_count(len(self.leakage_dropped), 'training persona')}"
                         f" dropped as near-copies of a benchmark persona (similarity above "
                         f"{self.leakage_threshold}); {self.personas} personas remain.")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop_reason"] = self.stop_reason
        data.pop("rounds")
        return data


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def initial_items(params: Params, kind: str) -> tuple[list[dict[str, Any]], bool]:
    """The items a training pool starts from, and whether it grows beyond them.

    Seeds: our own 20 (`seeds: builtin`) or `{seeds}/profiles.jsonl` and
    `{seeds}/personalities.jsonl`. An imported pool (e.g. ALOE's) joins the seeds
    (`import_as: seeds`) or is the whole pool, used as is (`import_as: pool`).
    """
    config = params.personas
    imported = getattr(config, f"import_{kind_plural(kind)}")
    prefix = kind
    items: list[dict[str, Any]] = []
    if not (imported and config.import_as == "pool"):
        seeds = (builtin_seeds(kind) if config.seeds == "builtin" else
                 read_text_pool(resolve_path(config.seeds) / f"{kind_plural(kind)}.jsonl"))
        items += [{"text": text, "source": "seed"} for text in seeds]
    if imported:
        items += [{"text": text, "source": "aloe"} for text in read_text_pool(imported)]
    for number, item in enumerate(items, start=1):
        item["id"] = f"{prefix}-{number:04d}"
    return ([{"id": i["id"], "text": i["text"], "source": i["source"]} for i in items],
            not (imported and config.import_as == "pool"))


def threshold_for(config: PersonasConfig, kind: str) -> float:
    """The similarity threshold of a kind: personalities may have their own, because
    trait lists sit much closer together in embedding space than profiles do."""
    if kind == "personality" and config.personality_threshold is not None:
        return config.personality_threshold
    return config.threshold


def _load_logs(layout: RunLayout) -> list[dict[str, Any]]:
    """The logged rounds; candidates of rounds that never got logged are dropped."""
    rounds = read_records(layout.persona_rounds, check=round_check())
    done = {(r["pool"], r["round"]) for r in rounds}
    candidates_file = layout.persona_candidates
    candidates = read_records(candidates_file, check=candidate_check())
    kept = [c for c in candidates if (c["pool"], c["round"]) in done]
    if len(kept) != len(candidates):
        write_records(candidates_file, kept, check=candidate_check())
    return rounds


def run_stage(params: Params, *, hook: Hook | None = None) -> PersonasSummary:
    """Grow both pools, pair them into personas, write the benchmark; resumable.

    Writes into the run folder (`params.layout`): profiles.jsonl, personalities.jsonl,
    personas.jsonl,
    benchmark.jsonl, benchmark_profiles.jsonl, benchmark_personalities.jsonl, the rounds log
    (persona_rounds.jsonl), every screened candidate (persona_candidates.jsonl) and
    persona_summary.json. `hook(event, info)` is called after each round's items are written
    and after its log line ("items_written", "round_logged"), for progress displays and tests.
    """
    from aloe.llm import open_llm

    config = params.personas
    layout = params.layout
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    logged = _load_logs(layout)
    generated = params.evaluation.benchmark == "run"  # else stage 5 uses the official files
    live = reporter(layout.progress, "rounds")
    with open_llm(params, "personas") as llm:
        train = {kind: _grower(params, kind, llm, logged, hook) for kind in KINDS}
        llm.run(_grow_all(list(train.values()), llm, live))
        profiles, personalities = train["profile"].items, train["personality"].items
        personas = pair_personas(profiles, personalities, config.pairings_per_profile,
                                 params.run.seed, config.pairing)
        if generated:  # a held-out benchmark, grown apart from the training pools
            bench = {kind: _benchmark_grower(params, kind, train[kind], llm, logged, hook)
                     for kind in KINDS}
            llm.run(_grow_all(list(bench.values()), llm, live))
            bench_items = {kind: bench[kind].items for kind in KINDS}
            pools = [*train.values(), *bench.values()]
        else:  # no pool that evaluation would not use: the official items, annotated
            bench_items = {kind: _aloe_benchmark_items(params, kind, train[kind])
                           for kind in KINDS}
            pools = list(train.values())
    m = (min(config.benchmark_personalities, len(bench_items["personality"])) if generated
         else ALOE_BENCHMARK_PERSONALITIES)
    benchmark = cross_benchmark(bench_items["profile"], bench_items["personality"], m,
                                prefix="bench" if generated else "aloe-eval")
    leakage = screen_leakage(personas, benchmark, config.leakage_threshold,
                             config.embedding_model)
    write_records(layout.personas, leakage.kept, check=persona_check())
    write_records(layout.benchmark, benchmark, check=persona_check())
    write_records(layout.persona_leakage, leakage.nearest, check=leakage_check())
    summary = PersonasSummary(
        profiles=len(profiles), personalities=len(personalities),
        personas=len(leakage.kept), benchmark=len(benchmark),
        benchmark_source="generated" if generated else "aloe",
        pools={grower.spec.name: grower.summary() for grower in pools},
        rounds=read_records(layout.persona_rounds, check=round_check()),
        pairing=config.pairing, leakage_threshold=leakage.threshold,
        leakage_dropped=leakage.dropped)
    write_json(layout.persona_summary, summary.to_json())
    return summary


async def _grow_all(growers: list[PoolGrower], llm: Any, live: Reporter) -> list[str]:
    """Grow pools side by side, each with its bar; the stage's live progress after each
    round: rounds run, every pool's size against its target, requests and cost."""
    from tqdm.auto import tqdm

    bars = [tqdm(total=g.spec.target, initial=min(len(g.items), g.spec.target),
                 desc=g.spec.name, unit="item") for g in growers]

    def report(force: bool = False) -> None:
        usage = llm.ledger.totals()
        live.update(sum(len(g.rounds) for g in growers),
                    [*(f"{g.spec.name} {len(g.items):,}/{g.spec.target:,}" for g in growers),
                     count(usage.requests, "requests"), money(usage.cost_usd)], force=force)

    report(force=True)
    try:
        return list(await asyncio.gather(*(g.grow(bar, report)
                                           for g, bar in zip(growers, bars))))
    finally:
        report(force=True)
        for bar in bars:
            bar.close()


def _grower(params: Params, kind: str, llm: Any, logged: list[dict[str, Any]],
            hook: Hook | None) -> PoolGrower:
    config = params.personas
    initial, grows = initial_items(params, kind)
    target = getattr(config, f"{kind_plural(kind)}_target") if grows else len(initial)
    spec = PoolSpec(name=kind_plural(kind), kind=kind,
                    file=params.layout.pool(kind_plural(kind)),
                    target=target, id_prefix=kind,
                    initial=initial, examples=[], grow=grows)
    grower = PoolGrower(spec, NoveltyFilter(threshold_for(config, kind), config.embedding_model),
                        params, llm, hook=hook)
    grower.restore(logged)
    return grower


def _benchmark_grower(params: Params, kind: str, train: PoolGrower, llm: Any,
                      logged: list[dict[str, Any]], hook: Hook | None) -> PoolGrower:
    """A held-out pool: screened against the training pool, shown only seed examples."""
    config = params.personas
    target = config.benchmark_profiles if kind == "profile" else config.benchmark_personalities
    spec = PoolSpec(name=f"benchmark_{kind_plural(kind)}", kind=kind,
                    file=params.layout.pool(f"benchmark_{kind_plural(kind)}"),
                    target=target, id_prefix=f"bench-{kind}", initial=[],
                    examples=[item["text"] for item in train.spec.initial],
                    reference=list(train.labels))
    train_filter = train.filter

    def annotate(items: list[dict[str, Any]]) -> None:
        _annotate_leakage(items, train_filter, train.labels)

    grower = PoolGrower(spec, train_filter.copy(), params, llm, annotate=annotate, hook=hook)
    grower.restore(logged)
    return grower


def _annotate_leakage(items: list[dict[str, Any]], train_filter: NoveltyFilter,
                      train_ids: Sequence[str]) -> None:
    """Each benchmark item's highest similarity to the training pool, and to which item."""
    if not items:
        return
    scores, nearest = train_filter.similarity_to_pool([item["text"] for item in items])
    for item, score, index in zip(items, scores, nearest):
        item["train_similarity"] = None if np.isnan(score) else round(float(score), 4)
        item["nearest_train_id"] = None if index < 0 else train_ids[int(index)]


def _aloe_benchmark_items(params: Params, kind: str, train: PoolGrower) -> list[dict[str, Any]]:
    """The official benchmark items, with their similarity to our training pool (reported,
    never filtered: it is the official benchmark)."""
    e = params.evaluation
    source = e.aloe_profiles if kind == "profile" else e.aloe_personalities
    items = as_items(source, f"aloe-eval-{kind}")
    _annotate_leakage(items, train.filter, train.labels)
    write_records(params.layout.pool(f"benchmark_{kind_plural(kind)}"), items,
                  check=pool_item_check())
    return items


# ==========================================================================================
# What the stage will send (`aloe plan`)
# ==========================================================================================
DEFAULT_ADMISSION = 0.2  # share of generated candidates the novelty filter admits, unmeasured


def planned_requests(params: Params, lengths: Lengths) -> list[PlannedRequest]:
    """Stage 1's generator calls for `aloe plan`, per pool it generates: a round's calls as
    `generation_requests` asks them (`sample_k` examples at the lengths of pool items), for
    `max_rounds` rounds under the ceiling (an upper bound: growth stops earlier at the target
    or at saturation), or under the forecast the rounds the target needs at the measured or
    default admission rate."""
    p = params.personas
    planned = []
    for pool, kind in generated_pools(params):
        counter = lengths.counter()
        shown = [counter.slot(lengths.pool_item[kind]) for _ in range(p.sample_k)]
        spec = PoolSpec(name=pool, kind=kind, file=params.layout.pool(pool), target=0,
                        id_prefix=kind, initial=[], examples=shown)
        calls = generation_requests(spec, [], 0, p, params.run.seed)
        rounds = (_forecast_rounds(params, pool, kind) if lengths.kind == "forecast"
                  else p.max_rounds)
        planned.append(PlannedRequest("generator", rounds * len(calls),
                                      counter.tokens(calls[0][0]),
                                      lengths.completion["generator"]))
    return planned


def _pool_target(params: Params, pool: str, kind: str) -> tuple[int, int]:
    """A pool's target size and the items it starts with."""
    p = params.personas
    if pool.startswith("benchmark_"):
        return (p.benchmark_profiles if kind == "profile" else p.benchmark_personalities), 0
    return getattr(p, f"{kind_plural(kind)}_target"), len(initial_texts(params, kind))


def _forecast_rounds(params: Params, pool: str, kind: str) -> int:
    """The rounds a pool needs to reach its target at the admission rate its logged rounds
    measured (else `DEFAULT_ADMISSION`), at most `max_rounds`."""
    p = params.personas
    target, initial = _pool_target(params, pool, kind)
    logged = [r for r in read_records(params.layout.persona_rounds, check=round_check())
              if r.get("pool") == pool]
    candidates = sum(r.get("candidates", 0) for r in logged)
    rate = sum(r.get("admitted", 0) for r in logged) / candidates if candidates \
        else DEFAULT_ADMISSION
    per_round = p.calls_per_round * p.generate_n * max(rate, 1e-3)
    return min(p.max_rounds, math.ceil(max(target - initial, 0) / per_round))
