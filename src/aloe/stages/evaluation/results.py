"""Stage 5's results read back: the records of every model (live or replayed), the metrics
computed from them (`aloe.analysis.metrics`, `aloe.analysis.measures`), agreement with people,
transcripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from aloe.analysis import agreement, measures, metrics
from aloe.core import protocols
from aloe.core.config import Params
from aloe.core.protocols import sources
from aloe.core.records import read_records
from aloe.core.schemas import (
    human_rating_check,
    probe_check,
    record_check,
    second_judge_check,
    simulator_measure_check,
)
from aloe.stages.evaluation.dialogue import finished_turns
from aloe.stages.evaluation.run import EvaluationRun

Record = dict[str, Any]


def with_design(records: list[Record], personas: list[dict[str, Any]] | None) -> list[Record]:
    """Records with their persona's personality id, which the records do not hold: what a
    two-way bootstrap (profiles x personalities) needs to know of the benchmark's design."""
    personality = {str(p["id"]): p.get("personality_id") for p in personas or []}
    return [{**r, "personality_id": personality[str(r["persona_id"])]}
            if not r.get("personality_id") and personality.get(str(r.get("persona_id")))
            else r for r in records]


def compute_metrics(params: Params, records: list[Record],
                    personas: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """metrics.json's content from evaluation records, with the run's bootstrap settings: the
    protocol (name, version, definition), the variant, AL(k) and its trend statistics per
    model, paired differences, and, where they ran, recovery after a preference shift,
    inference accuracy per turn, the simulated user's measures and the judges' agreement."""
    e = params.evaluation
    protocol = protocols.get(e.protocol)
    records = with_design(records, personas)
    by_model: dict[str, list[Record]] = {}
    for record in records:
        by_model.setdefault(str(record["model"]), []).append(record)
    unit = None if e.bootstrap_unit == "auto" else e.bootstrap_unit
    unit = unit or metrics.default_unit(records)
    boot = {"n_boot": e.bootstrap_samples, "confidence": e.confidence, "seed": params.run.seed,
            "unit": unit}
    summary = metrics.summarise(by_model, models=[m.name for m in e.models],
                                multiplier=protocol.multiplier, **boot)
    where = sources(params.evaluation)
    shift = e.preference_shift
    summary.update({
        "protocol": protocol.to_json(), "variant": protocols.variant_name(e),
        "user_mode": e.user_mode,
        "replay_from": e.reference_model if e.user_mode == "replay" else None,
        "user_sources": {name: f"{s.mode}" + (f" ({e.reference_model}'s users)"
                                                 if s.mode == "replay" else "")
                         for name, s in where.items()},
        "turns": e.turns,
        "preference_shift": shift.model_dump() if shift else None})
    if shift is not None:
        summary["recovery"] = {name: measures.recovery(rows, shift.turn, model=name,
                                                      multiplier=protocol.multiplier, **boot)
                               for name, rows in by_model.items()}
    layout = params.layout
    if e.inference_probe:
        summary["inference"] = {}
        for name in by_model:
            probes = read_records(layout.probe_records(name, where[name].variant),
                                  check=probe_check(name))
            if probes:
                summary["inference"][name] = measures.turn_curve(with_design(probes, personas),
                                                                "accuracy", **boot)
    persona_text = {str(p["id"]): f"{p['profile']} {p['personality']}" for p in personas or []}
    simulator: dict[str, Any] = {}
    for name, rows in by_model.items():
        if where[name].mode != "live" or not persona_text:
            continue
        lexical = with_design(measures.lexical_reveal_records(rows, persona_text), personas)
        checks = with_design(read_records(layout.simulator_records(name, where[name].variant),
                                          check=simulator_measure_check(name)),
                             personas) if e.simulator_check else []
        first_turn = 2 if protocols.get(e.protocol).first_message is not None else 1
        simulator[name] = measures.simulator_summary(checks, lexical, reveal_flag=e.reveal_flag,
                                                    first_turn=first_turn, **boot)
    if simulator:
        summary["simulator"] = simulator
    if e.judge_check is not None:
        judged = read_records(layout.judge_check(protocols.variant_name(e)),
                              check=second_judge_check(protocol))
        pairs = [r for r in judged
                 if r.get("main_score") is not None and r.get("second_score") is not None]
        result = agreement.agreement([r["main_score"] for r in pairs],
                                     [r["second_score"] for r in pairs], protocol.categories,
                                     clusters=[str(r.get(f"{unit}_id") or r["persona_id"])
                                               for r in pairs],
                                     n_boot=e.bootstrap_samples, confidence=e.confidence,
                                     seed=params.run.seed)
        main_judge, second = params.roles.judge, params.roles.second_judge
        result.update({"judge": main_judge.model, "second_judge": second.model if second else None,
                       "sampled": len(judged), "unreadable": len(judged) - len(pairs),
                       "same_model": bool(second and second.model == main_judge.model
                                          and second.base_urls == main_judge.base_urls)})
        summary["judge_agreement"] = result
    human = human_agreement(params)
    if human is not None:
        summary["human_agreement"] = human
    return summary


def human_agreement(params: Params) -> dict[str, Any] | None:
    """The judge against the people who rated the blinded sample (`aloe.presentation.ratings`):
    every (human rating, judge score) pair of the configured variant's imported ratings; None when
    none were imported (`aloe ratings import`)."""
    path = params.layout.human_ratings(protocols.variant_name(params.evaluation))
    if not path.exists():
        return None
    e = params.evaluation
    protocol = protocols.get(e.protocol)
    rows = [r for r in read_records(path, check=human_rating_check(protocol.categories))
            if r.get("judge_score") is not None]
    if not rows:
        return None
    result = agreement.agreement([r["judge_score"] for r in rows], [r["rating"] for r in rows],
                                 protocol.categories,
                                 clusters=[str(r.get("profile_id") or r["persona_id"])
                                           for r in rows],
                                 n_boot=e.bootstrap_samples, confidence=e.confidence,
                                 seed=params.run.seed)
    result["raters"] = sorted({r["rater"] for r in rows})
    result["items_rated"] = len({r["item"] for r in rows})
    return result


# ------------------------------------------------------------------------------------------
# Reading results
# ------------------------------------------------------------------------------------------
def load_records(params: Params, personas: list[dict[str, Any]] | None = None) -> list[Record]:
    """The evaluation records the metrics are computed from: the models of
    `evaluation.models`, the benchmark's personas (default: `benchmark_personas(params)`),
    turns 1..K, one record per (model, persona, turn) (the first, as resuming uses it)."""
    run = EvaluationRun.resolve(params, personas)
    records = []
    for spec in run.settings.models:
        for by_turn in finished_turns(run, spec).values():
            records += [by_turn[turn] for turn in sorted(by_turn)]
    return records


def comparison_pair(params: Params) -> list[str]:
    """The two models to read side by side: base and DPO when both are evaluated, else the
    first and the last model."""
    names = [m.name for m in params.evaluation.models]
    if "base" in names and "dpo" in names:
        return ["base", "dpo"]
    return [names[0], names[-1]] if len(names) > 1 else names


def transcripts(params: Params, models: Sequence[str], persona_id: str | None = None) -> Any:
    """Side-by-side transcripts of one persona (default: the first one all `models` share):
    one row per turn, each model's user message, reply and score."""
    where = sources(params.evaluation)
    protocol = protocols.get(params.evaluation.protocol)
    by_model = {m: {(str(r["persona_id"]), int(r["turn"])): r
                    for r in read_records(params.layout.eval_records(m, where[m].variant),
                                          check=record_check(protocol, m))}
                for m in models}
    if persona_id is None:
        shared = [set(p for p, _ in records) for records in by_model.values()]
        common = set.intersection(*shared) if shared else set()
        first = next(iter(by_model.values()), {})
        ordered = [p for p, _ in first if p in common]
        if not ordered:
            return pd.DataFrame()
        persona_id = ordered[0]
    turns = sorted({t for records in by_model.values() for p, t in records if p == persona_id})
    rows = []
    for turn in turns:
        row: dict[str, Any] = {"turn": turn}
        for model in models:
            record = by_model[model].get((persona_id, turn), {})
            row[f"{model}: user"] = record.get("user")
            row[f"{model}: reply"] = record.get("reply")
            row[f"{model}: score"] = record.get("score")
        rows.append(row)
    table = pd.DataFrame(rows).set_index("turn")
    table.attrs["persona_id"] = persona_id
    return table


def sibling_metrics(params: Params) -> dict[str, dict[str, Any]]:
    """The metrics of every variant of this run's protocol that has been evaluated (e.g. the
    live and the replayed users of the same models), by variant name; the configured one
    included. Never another protocol's: their numbers are on another scale."""
    e = params.evaluation
    found: dict[str, dict[str, Any]] = {}
    candidates = [params.layout.variant_metrics()] + sorted(
        params.layout.eval_dir.glob("*/metrics.json"))
    from aloe.core.records import read_json

    for path in candidates:
        if path.exists():
            summary = read_json(path)
            if protocols.of_summary(summary) is protocols.get(e.protocol):
                found[summary.get("variant", "aloe")] = summary
    return found
