"""Runs side by side: what `aloe compare RUN [RUN ...]` and notebook 07_compare show.

How a researcher reads an ablation (another judge rule, beta, start_from, judge model): the
parameters that differ between the runs (from their manifests; where the files went is no
difference), their AL curves side by side, each model's figures run by run, the paired
difference of each later run's model over the first run's on the benchmark personas the runs
share (the same persona, with the same text: `matched_personas`), and what each run cost.

A run is a finished run folder (its `metrics.json` is required), named on the command line by
its path or by its name under the output directory. The statistics are `aloe.metrics`'
(pure): nothing here computes a figure of its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from aloe import findings, manifest, metrics
from aloe.config import resolve_path
from aloe.errors import BadInputError
from aloe.layout import TRAINING_STAGES, RunLayout, run_layout
from aloe.llm import load_usage_history
from aloe.records import read_json, read_records

DEFAULT_OUTPUT_DIR = "outputs"
NAME = re.compile(r"[^A-Za-z0-9._-]+")
NOT_RECORDED = "not recorded"


class CompareError(BadInputError):
    """A run to compare cannot be found or has not been evaluated; one line names it."""


@dataclass
class Run:
    """One finished run: its name, files, manifest (None: made before manifests) and metrics."""

    name: str
    layout: RunLayout
    manifest: dict[str, Any] | None
    metrics: dict[str, Any]

    @property
    def params(self) -> dict[str, Any]:
        return (self.manifest or {}).get("params") or {}

    def records(self, model: str) -> list[dict[str, Any]]:
        return read_records(self.layout.eval_records(model))


# ------------------------------------------------------------------------------------------
# Finding and loading runs
# ------------------------------------------------------------------------------------------
def resolve_run(reference: str, output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> Path:
    """A run folder from a path, or from a run name under the output directory."""
    for candidate in (resolve_path(reference), resolve_path(output_dir) / reference):
        if candidate.is_dir():
            return candidate
    raise CompareError(f"no run folder '{reference}' (neither a folder nor a run name under "
                       f"{manifest.display_path(resolve_path(output_dir))}/)")


def finished_runs(output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> list[Path]:
    """Every run folder under the output directory that has metrics."""
    root = resolve_path(output_dir)
    return sorted(p.parent for p in root.glob("*/metrics.json"))


def load_run(folder: Path) -> Run:
    layout = run_layout(folder)
    if not layout.metrics.exists():
        raise CompareError(f"run '{folder.name}' has no metrics.json: run stage 5 "
                           f"(aloe run --stages 5) on it first")
    return Run(folder.name, layout, manifest.read(layout), read_json(layout.metrics))


def load_runs(references: Sequence[str | Path],
              output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> list[Run]:
    """The runs to compare, in the order given (the first is the reference); two runs of the
    same name (from different folders) are told apart by their parent folder."""
    runs = [load_run(resolve_run(str(ref), output_dir)) for ref in references]
    if len(runs) < 2:
        raise CompareError("aloe compare: give at least two runs (paths or run names)")
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{run.layout.run_dir.parent.name}/{run.name}"
    return runs


def default_name(runs: Sequence[Run]) -> str:
    """The page's name: the runs' names joined with -vs- (file-name safe)."""
    return NAME.sub("_", "-vs-".join(r.name for r in runs))[:120]


# ------------------------------------------------------------------------------------------
# What differs
# ------------------------------------------------------------------------------------------
def runs_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: code commit, start, parameter file, benchmark size and turns."""
    rows = []
    for run in runs:
        found = run.manifest or {}
        first = next(iter(run.metrics.get("models", {}).values()), {})
        rows.append({"run": run.name,
                     "commit": manifest.commit_label(found) if found else NOT_RECORDED,
                     "started": manifest.started_label(found),
                     "parameter file": str(found.get("params_file") or NOT_RECORDED),
                     "benchmark personas": first.get("n_personas"),
                     "turns": len(first.get("turns") or []),
                     "models": ", ".join(run.metrics.get("models", {}))})
    return pd.DataFrame(rows).set_index("run")


def parameter_differences(runs: Sequence[Run]) -> pd.DataFrame:
    """The resolved parameters whose values differ between the runs (one row per dotted key,
    one column per run); where the files went (`manifest.LOCATION_KEYS`) is left out."""
    flat = {run.name: manifest.flatten(manifest.portable(run.params)) for run in runs
            if run.manifest}
    keys = sorted({k for values in flat.values() for k in values} - manifest.LOCATION_KEYS)
    rows = []
    for key in keys:
        values = {name: flat[name].get(key, "(absent)") for name in flat}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            rows.append({"parameter": key, **{n: _text(v) for n, v in values.items()}})
    columns = ["parameter", *flat]
    return pd.DataFrame(rows, columns=columns).set_index("parameter")


def _text(value: Any) -> str:
    return "null" if value is None else json.dumps(value) if isinstance(value, (list, dict)) \
        else str(value)


def differences_html(runs: Sequence[Run]) -> str:
    """The parameter differences as a table (class `aloe-param-diff`), with the runs that
    have no manifest named."""
    table = parameter_differences(runs)
    unknown = [r.name for r in runs if not r.manifest]
    note = (f"<p>No manifest (parameters {NOT_RECORDED}): {', '.join(unknown)}.</p>"
            if unknown else "")
    if table.empty:
        return note + "<p>The runs' resolved parameters are identical.</p>"
    return note + table.to_html(classes="aloe-param-diff", border=0)


# ------------------------------------------------------------------------------------------
# Figures, run by run
# ------------------------------------------------------------------------------------------
def curves(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """Each run's metrics, by run name (what plots.plot_alignment_comparison draws)."""
    return {run.name: run.metrics for run in runs}


def metric_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Per model and run: mean AL, IR and N-IR with their intervals, personas, missing share."""
    rows = []
    models = list(dict.fromkeys(m for run in runs for m in run.metrics.get("models", {})))
    for model in models:
        for run in runs:
            m = run.metrics.get("models", {}).get(model)
            if m is None:
                continue
            missing = m.get("missing_rate")
            rows.append({"model": model, "run": run.name,
                         "mean AL (1-5)": findings.interval_text(m.get("mean_al")),
                         "IR (per turn)": findings.interval_text(m.get("ir"), "+.3f"),
                         "N-IR (per turn)": findings.interval_text(m.get("n_ir"), "+.3f"),
                         "personas": m.get("n_personas"),
                         "no score": "n/a" if missing is None else f"{missing:.0%}"})
    return pd.DataFrame(rows).set_index(["model", "run"]) if rows else pd.DataFrame()


def _persona_keys(run: Run) -> dict[str, str]:
    """Benchmark persona id -> what identifies that persona: its text (hashed) when the run
    evaluated on its own benchmark.jsonl, its id for the official ALOE benchmark."""
    if (run.params.get("evaluation") or {}).get("benchmark") == "aloe":
        return {}
    keys = {}
    for persona in read_records(run.layout.benchmark) if run.layout.benchmark.exists() else []:
        text = json.dumps([persona.get("profile"), persona.get("personality")])
        keys[str(persona["id"])] = hashlib.sha256(text.encode()).hexdigest()
    return keys


def matched_personas(a: Run, b: Run, model: str) -> list[str]:
    """The personas both runs evaluated `model` on and that are the same persona in both."""
    ids_a = {str(r["persona_id"]) for r in a.records(model)}
    ids_b = {str(r["persona_id"]) for r in b.records(model)}
    keys_a, keys_b = _persona_keys(a), _persona_keys(b)
    return sorted(p for p in ids_a & ids_b
                  if not (keys_a and keys_b) or keys_a.get(p) == keys_b.get(p))


def paired_across_runs(runs: Sequence[Run]) -> pd.DataFrame:
    """Each later run's model minus the first run's same model, paired on matched personas,
    with bootstrap intervals (the first run's bootstrap settings)."""
    reference = runs[0]
    settings = {"n_boot": int(reference.metrics.get("bootstrap_samples", metrics.DEFAULT_BOOT)),
                "confidence": float(reference.metrics.get("confidence",
                                                          metrics.DEFAULT_CONFIDENCE)),
                "seed": int(reference.metrics.get("seed", 0))}
    rows = []
    for run in runs[1:]:
        for model in reference.metrics.get("models", {}):
            if model not in run.metrics.get("models", {}):
                continue
            shared = set(matched_personas(reference, run, model))
            keep = [r for r in reference.records(model) if str(r["persona_id"]) in shared]
            other = [r for r in run.records(model) if str(r["persona_id"]) in shared]
            rows.append(_paired_row(model, run.name, reference.name, keep, other, settings))
    return pd.DataFrame(rows).set_index("comparison") if rows else pd.DataFrame()


def _paired_row(model: str, run: str, reference: str, a: list[dict[str, Any]],
                b: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    label = f"{model}: {run} − {reference}"
    if not a or not b:
        return {"comparison": label, "matched personas": 0, "mean difference (per turn)": "n/a",
                "IR difference (per turn)": "n/a", "reading": "no persona in common"}
    diff = metrics.paired_difference(a, b, **settings).to_json()
    mean = diff["mean_diff"]
    reading = findings.direction(mean, f"higher in {run}", f"lower in {run}",
                                 "no difference distinguishable from zero")
    return {"comparison": label, "matched personas": diff["n_personas"],
            "mean difference (per turn)": findings.interval_text(mean, "+.3f"),
            "IR difference (per turn)": findings.interval_text(diff["ir_diff"], "+.3f"),
            "reading": reading}


def caveats(runs: Sequence[Run]) -> str:
    """Each run's caveats (aloe.findings), as markdown."""
    parts = []
    for run in runs:
        layout = run.layout
        found = findings.run_findings(
            run.metrics, params=run.params or None,
            conversations=read_json(layout.conversations_summary)
            if layout.conversations_summary.exists() else None,
            export=read_json(layout.export_summary) if layout.export_summary.exists() else None)
        lines = [f"- {f.text}" for f in found if f.caveat] or ["- none detected"]
        parts.append(f"**{run.name}**\n\n" + "\n".join(lines))
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------
# Cost and time
# ------------------------------------------------------------------------------------------
def _training_seconds(layout: RunLayout) -> float:
    total = 0.0
    for stage in TRAINING_STAGES:
        file = layout.adapter_file(stage, "training_stats.json")
        if file.exists():
            total += float(read_json(file).get("train_wall_s") or 0.0)
    return total


def cost_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Per run: LLM requests sent and answered from the cache, tokens, estimated cost, the
    wall time of the last `aloe run`'s stages and the training time."""
    rows = []
    for run in runs:
        totals = [e.get("totals") or {} for e in load_usage_history(run.layout)]
        timings = read_json(run.layout.timings) if run.layout.timings.exists() else {}
        rows.append({"run": run.name,
                     "requests sent": sum(int(t.get("requests", 0)) for t in totals),
                     "answered from the cache": sum(int(t.get("cache_hits", 0)) for t in totals),
                     "tokens": sum(int(t.get("prompt_tokens", 0))
                                   + int(t.get("completion_tokens", 0)) for t in totals),
                     "cost (USD)": round(sum(float(t.get("cost_usd", 0.0)) for t in totals), 4),
                     "stages' wall time (s)": round(sum(float(s.get("seconds", 0.0)) for s in
                                                        timings.get("stages") or []), 1),
                     "training time (s)": round(_training_seconds(run.layout), 1)})
    return pd.DataFrame(rows).set_index("run")
