"""Runs side by side: what `aloe compare RUN [RUN ...]` and notebook 07_compare show.

How a researcher reads an ablation (another judge rule, beta, start_from, judge model): the
parameters that differ between the runs (from their manifests; where the files went is no
difference), their AL curves side by side, each model's figures run by run, the paired
difference of each later run's model over the first run's on the benchmark personas the runs
share (the same persona, with the same text: `matched_personas`), and what each run cost.

The parameters are not all that can differ: each run's data are fingerprinted too (a content
hash of its training personas, benchmark users, conversations and adapter weights), and the
page opens with a warning (`warnings`) whenever a product differs that no differing parameter
makes, when the runs share no benchmark persona, when they ran other code, and when one was
served from the response cache while another sent its requests (its wall time is no speed).

A run is a finished run folder (its `metrics.json` is required), named on the command line by
its path or by its name under the output directory. The statistics are `aloe.analysis.metrics`'
(pure): nothing here computes a figure of its own.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from aloe.analysis import findings, metrics
from aloe.core import manifest, protocols
from aloe.core.config import resolve_path
from aloe.core.errors import BadInputError
from aloe.core.layout import ADAPTER_STAGES, ADAPTER_STATS, DEFAULT_VARIANT, RunLayout, run_layout
from aloe.core.records import read_json, read_records
from aloe.core.schemas import persona_check, record_check
from aloe.llm import load_usage_history

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
    data: dict[str, str | None] | None = None  # each product's content hash (`fingerprints`)

    @property
    def params(self) -> dict[str, Any]:
        return (self.manifest or {}).get("params") or {}

    def records(self, model: str) -> list[dict[str, Any]]:
        """The model's records of the default variant, read with their schema."""
        check = record_check(protocols.of_variant(DEFAULT_VARIANT), model)
        return read_records(self.layout.eval_records(model), check=check)


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
# What differs: the data, and what the parameters do not explain
# ------------------------------------------------------------------------------------------
# The parameters that make each product (a dotted key, or the start of one): a product that
# differs between two runs is explained only by a differing parameter among its makers. A run
# in another project folder misses the response cache, and the local server draws other text.
PERSONA_MAKERS = ("run.seed", "personas.", "roles.generator.", "local_model.",
                  "evaluation.benchmark", "evaluation.aloe_")
CONVERSATION_MAKERS = (*PERSONA_MAKERS, "conversations.", "roles.user.", "roles.inducer.",
                       "roles.assistant.", "roles.judge.")
SFT_MAKERS = (*CONVERSATION_MAKERS, "sft.")
DPO_MAKERS = (*SFT_MAKERS, "dpo.")
CACHE_SERVED = 0.5  # a run with more of its LLM answers from the cache was served from it


def records_sha256(path: Path) -> str | None:
    """A JSONL file's content hash: its records (keys sorted), in any order; None: no file.
    The stages append records as they finish, so the same records can lie in another order."""
    if not path.exists():
        return None
    digests = []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            line = json.dumps(json.loads(line), sort_keys=True).encode()
        except ValueError:  # an unreadable line is content all the same
            pass
        digests.append(hashlib.sha256(line).hexdigest())
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def weights_sha256(layout: RunLayout, stage: str) -> str | None:
    """An adapter's weights: the sha256 training recorded in training_stats.json, else the
    file's own; None when the run has no such adapter."""
    from aloe.stages.policy import adapter_weights, file_sha256

    folder = layout.adapter(stage)
    weights = adapter_weights(folder) if folder.is_dir() else None
    if weights is None:
        return None
    stats = folder / ADAPTER_STATS
    recorded = (read_json(stats).get("adapter_weights") or {}) if stats.exists() else {}
    if recorded.get("file") == weights.name and recorded.get("sha256"):
        return str(recorded["sha256"])
    return file_sha256(weights)


# (what a reader calls it, its content hash, the parameters that make it, the products it is
# made from: a difference that follows from theirs is told with theirs, not apart)
DATA: tuple[tuple[str, Any, tuple[str, ...], tuple[str, ...]], ...] = (
    ("training personas", lambda layout: records_sha256(layout.personas), PERSONA_MAKERS, ()),
    ("benchmark users", lambda layout: records_sha256(layout.benchmark), PERSONA_MAKERS, ()),
    ("conversations", lambda layout: records_sha256(layout.conversations), CONVERSATION_MAKERS,
     ("training personas",)),
    ("SFT adapter weights", lambda layout: weights_sha256(layout, "sft"), SFT_MAKERS,
     ("conversations",)),
    ("DPO adapter weights", lambda layout: weights_sha256(layout, "dpo"), DPO_MAKERS,
     ("SFT adapter weights", "conversations")),
)
TRAINED = ("SFT adapter weights", "DPO adapter weights")


def fingerprints(run: Run) -> dict[str, str | None]:
    """The content hash of each product of a run (None: the run has none), computed once."""
    if run.data is None:
        run.data = {label: digest(run.layout) for label, digest, _, _ in DATA}
    return run.data


def data_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per product, one column per run: the first 12 hex digits of its content hash
    ("none": the run has no such product)."""
    rows = [{"product": label, **{run.name: (fingerprints(run)[label] or "none")[:12]
                                  for run in runs}} for label, _, _, _ in DATA]
    table = pd.DataFrame(rows).set_index("product")
    table.index.name, table.columns.name = None, "product"  # one header row
    return table


def _differing_keys(a: Run, b: Run) -> list[str] | None:
    """The parameters (dotted keys) whose values differ between two runs, locations left out;
    None when either has no manifest (its parameters are not recorded)."""
    if not (a.manifest and b.manifest):
        return None
    flat_a, flat_b = (manifest.flatten(manifest.portable(r.params)) for r in (a, b))
    return sorted(k for k in (flat_a.keys() | flat_b.keys()) - manifest.LOCATION_KEYS
                  if json.dumps(flat_a.get(k), sort_keys=True, default=str)
                  != json.dumps(flat_b.get(k), sort_keys=True, default=str))


def _data_warnings(reference: Run, run: Run) -> list[str]:
    """One line per product that differs where no differing parameter makes it, with the
    products made from it that differ in its wake."""
    differing = _differing_keys(reference, run)
    a, b = fingerprints(reference), fingerprints(run)
    unexplained = [label for label, _, makers, _ in DATA if a[label] != b[label]
                   and not (differing and any(k.startswith(makers) for k in differing))]
    inputs = {label: made_from for label, _, _, made_from in DATA}

    def root(label: str) -> str:
        cause = next((i for i in inputs[label] if i in unexplained), None)
        return label if cause is None else root(cause)

    found = []
    for label in [label for label in unexplained if root(label) == label]:
        hashes = f"{reference.name}: {(a[label] or 'none')[:12]}, {run.name}: " \
                 f"{(b[label] or 'none')[:12]}"
        wake = [other for other in unexplained if other != label and root(other) == label]
        also = f", and so do what was made from them ({', '.join(wake)})" if wake else ""
        tested = ", ".join(differing or [])
        same_inputs = bool(inputs[label]) and all(a[i] is not None and a[i] == b[i]
                                                  for i in inputs[label])
        if differing is None:
            reason = ("and the parameters of a run without a manifest are not recorded: "
                      f"nothing says why{also}")
        elif label in TRAINED and same_inputs:
            reason = ("although their training data and the parameters that make them are the "
                      f"same: training was not bit-for-bit reproducible (GPU kernels seldom "
                      f"are){also}; part of any difference between the runs is that noise"
                      + (f", not {tested}" if tested else ""))
        elif tested:
            reason = (f"although no parameter that makes them differs{also}: their numbers are "
                      f"not comparable as a test of {tested}")
        else:
            reason = (f"although no parameter differs{also}: the runs are not repeats of one "
                      "another (a run whose response cache missed draws other text)")
        found.append(f"The runs' {label} differ ({hashes}) {reason}.")
    return found


def _no_persona_in_common(reference: Run, run: Run) -> list[str]:
    models = [m for m in reference.metrics.get("models", {}) if m in run.metrics.get("models", {})]
    if not models or any(matched_personas(reference, run, m) for m in models):
        return []
    return [f"{run.name} and {reference.name} share 0 benchmark personas (the same persona with "
            "the same text): there is no paired difference, and their curves are measured on "
            "other users."]


def _other_code(reference: Run, run: Run) -> list[str]:
    if not (reference.manifest and run.manifest):
        return []
    git_a, git_b = ((r.manifest or {}).get("git") or {} for r in (reference, run))
    if not git_a.get("commit") or not git_b.get("commit") or all(
            git_a.get(k) == git_b.get(k) for k in ("commit", "dirty", "changes_sha256")):
        return []

    def label(found: dict[str, Any], git: dict[str, Any]) -> str:
        changes = git.get("changes_sha256")
        return manifest.commit_label(found) + (f" ({changes})" if changes else "")

    return [f"The runs ran other code ({reference.name}: commit "
            f"{label(reference.manifest, git_a)}, {run.name}: commit "
            f"{label(run.manifest, git_b)}): a difference may come from the code, not from "
            "the parameters."]


def _usage(run: Run) -> dict[str, int]:
    totals = [e.get("totals") or {} for e in load_usage_history(run.layout)]
    return {key: sum(int(t.get(key, 0)) for t in totals) for key in ("requests", "cache_hits")}


def cache_share(run: Run) -> tuple[float, int]:
    """The share of a run's LLM answers that came from the response cache, and how many
    answers it had (every session of the run)."""
    usage = _usage(run)
    answers = usage["requests"] + usage["cache_hits"]
    return (usage["cache_hits"] / answers if answers else 0.0), answers


def _cache_warnings(runs: Sequence[Run]) -> list[str]:
    shares = {run.name: cache_share(run) for run in runs}
    served = [name for name, (share, n) in shares.items() if n and share > CACHE_SERVED]
    fresh = [name for name, (share, n) in shares.items() if n and share <= CACHE_SERVED]
    if not served or not fresh:
        return []
    return [f"{name} was served from the response cache ({shares[name][0]:.0%} of its "
            f"{shares[name][1]:,} LLM answers) and {', '.join(fresh)} sent "
            f"{'its' if len(fresh) == 1 else 'their'} requests: the wall time says nothing "
            "about which is faster." for name in served]


def warnings(runs: Sequence[Run]) -> list[str]:
    """What differs between the runs besides the parameters listed (each later run against
    the first): their data, their benchmark users, their code, and a cached run's time."""
    reference = runs[0]
    found: list[str] = []
    for run in runs[1:]:
        found += _data_warnings(reference, run)
        found += _no_persona_in_common(reference, run)
        found += _other_code(reference, run)
    return list(dict.fromkeys(found + _cache_warnings(runs)))


WARNING_CSS = ("<style>.aloe-compare-warnings{border-left:4px solid #c0392b;background:#fbeaea;"
               "padding:4px 12px;margin:6px 0;font-size:14px;max-width:1100px}"
               ".aloe-compare-warnings ul{margin:2px 0;padding-left:18px}</style>")


def warnings_html(runs: Sequence[Run]) -> str:
    """The warnings as a box for the top of the page ("" when there are none)."""
    found = warnings(runs)
    if not found:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in found)
    return (f"{WARNING_CSS}<div class='aloe-compare-warnings'><b>Warning: more differs than "
            f"the parameters listed below</b><ul>{items}</ul></div>")


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
    for persona in read_records(run.layout.benchmark, check=persona_check()):
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
    """Each run's caveats (aloe.analysis.findings), as markdown."""
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
    for stage in ADAPTER_STAGES:
        file = layout.adapter_file(stage, "training_stats.json")
        if file.exists():
            total += float(read_json(file).get("train_wall_s") or 0.0)
    return total


def wall_time_text(seconds: float, share: float, answers: int) -> str:
    """A run's wall time, saying how much of its LLM answers the response cache gave (short:
    a table cell shows 50 characters)."""
    from aloe.presentation.report import duration

    if not answers or not share:
        return duration(seconds)
    if share > CACHE_SERVED:
        return f"{duration(seconds)} (served from the cache: {share:.0%})"
    return f"{duration(seconds)} ({share:.0%} from the cache)"


def cost_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Per run, over every `aloe run` of its folder (as its report counts): LLM requests sent
    and answered from the cache, tokens, estimated cost, the stages' wall time (the report's
    own left out) and how many `aloe run`s it adds up, the wall time saying how much the cache
    answered, and the training time."""
    from aloe.presentation.report import stage_times

    rows = []
    for run in runs:
        totals = [e.get("totals") or {} for e in load_usage_history(run.layout)]
        times = stage_times(run.layout)
        share, answers = cache_share(run)
        rows.append({"run": run.name,
                     "requests sent": sum(int(t.get("requests", 0)) for t in totals),
                     "answered from the cache": sum(int(t.get("cache_hits", 0)) for t in totals),
                     "tokens": sum(int(t.get("prompt_tokens", 0))
                                   + int(t.get("completion_tokens", 0)) for t in totals),
                     "cost (USD)": round(sum(float(t.get("cost_usd", 0.0)) for t in totals), 4),
                     "wall time (s)": round(times["wall_s"], 1),
                     "aloe runs": times["invocations"],
                     "wall time": wall_time_text(times["wall_s"], share, answers),
                     "training time (s)": round(_training_seconds(run.layout), 1)})
    return pd.DataFrame(rows).set_index("run")
