"""Stage 6: what the shared report says beside its figures (the figures are in plots.py).

First the summary a colleague reads in a minute (`summary_html`): the question, the headline
numbers per model with their intervals and the differences over the base model, how much data
the run made, what it cost and how long it took, and the caveats; then the findings
(`aloe.analysis.findings`), what was run on which code (`run_facts`, the resolved parameters
collapsed in `parameters_html`), and how many of each product the run folder holds.

Counts are read from the files themselves, so the report can never disagree with them, and no
machine path is ever shown (`aloe.core.manifest.portable`).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from aloe.analysis import findings
from aloe.core import manifest, protocols
from aloe.core.config import ROLE_NAMES, Params, resolve_path
from aloe.core.layout import (
    ADAPTER_STAGES,
    DEFAULT_VARIANT,
    REPORT_NOTEBOOK,
    TRAINING_STAGES,
    RunLayout,
)
from aloe.core.records import Check, read_json, read_records
from aloe.core.schemas import conversation_check, persona_check, pool_item_check, record_check
from aloe.llm import load_usage_history
from aloe.presentation import tables, viewer
from aloe.stages import model_card


def load_optional(path: Path) -> Any:
    """A JSON product of a stage, or None when that stage has not run."""
    return read_json(path) if Path(path).exists() else None


# ------------------------------------------------------------------------------------------
# What the run holds
# ------------------------------------------------------------------------------------------
def _lines(path: Path, check: Check) -> int:
    return len(read_records(path, check=check)) if path.exists() else 0


def _dataset_rows(folder: Path) -> dict[str, int]:
    """Rows per split of a saved DatasetDict (memory-mapped: nothing is read into memory)."""
    if not (folder / "dataset_dict.json").exists():
        return {}
    from datasets import load_from_disk

    return {split: len(rows) for split, rows in load_from_disk(str(folder)).items()}


def product_counts(layout: RunLayout) -> dict[str, int]:
    """How many of each product the run folder holds, counted from the files."""
    conversations = read_records(layout.conversations, check=conversation_check())
    counts = {
        "profiles": _lines(layout.pool("profiles"), pool_item_check()),
        "personalities": _lines(layout.pool("personalities"), pool_item_check()),
        "personas": _lines(layout.personas, persona_check()),
        "benchmark personas": _lines(layout.benchmark, persona_check()),
        "conversations": len(conversations),
        "conversation turns": sum(len(c["turns"]) for c in conversations),
    }
    for kind in TRAINING_STAGES:
        for split, n in _dataset_rows(layout.dataset(kind)).items():
            counts[f"{kind} {split} examples"] = n
    for kind in TRAINING_STAGES:  # an adapter, or the whole model of full fine-tuning
        counts[f"{kind} adapter"] = int(layout.adapter_file(kind, "adapter_config.json").exists()
                                        or layout.adapter_file(kind, "config.json").exists())
    for file in sorted(layout.eval_dir.glob("*.jsonl")):
        if file.name != "judge_check.jsonl":
            counts[f"evaluation records: {file.stem}"] = _lines(file, _model_check(file.stem))
    return counts


def counts_table(layout: RunLayout) -> pd.DataFrame:
    """How many of each product, with one header row (product, count)."""
    table = pd.DataFrame(list(product_counts(layout).items()),
                         columns=["product", "count"]).set_index("product")
    table.index.name, table.columns.name = None, "product"  # the name in the header's corner
    return table


def _model_check(model: str) -> Check:
    """The schema of a model's records in the default variant's folder (eval/ itself)."""
    return record_check(protocols.of_variant(DEFAULT_VARIANT), model)


def evaluation_records(layout: RunLayout, models: list[str]) -> list[dict[str, Any]]:
    """Every evaluation record of the given models (for the score distribution)."""
    return [r for model in models
            for r in read_records(layout.eval_records(model), check=_model_check(model))]


def training_stats(layout: RunLayout) -> dict[str, dict[str, Any]]:
    """Each finished adapter's training statistics, by stage."""
    found = {}
    for stage in ADAPTER_STAGES:  # GRPO's too
        file = layout.adapter_file(stage, "training_stats.json")
        if file.exists():
            found[stage] = read_json(file)
    return found


# ------------------------------------------------------------------------------------------
# What was run
# ------------------------------------------------------------------------------------------
def model_label(reference: str) -> str:
    """A model as a reader knows it: a hub id or API model as is, a folder by its name."""
    reference = manifest.display_path(reference)
    if reference.startswith("…/") or resolve_path(reference).is_dir():
        return Path(reference).name
    return reference


def run_facts(params: Params, found: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The run, the code (commit), the parameter file, the model behind each role, the policy,
    the versions and the hardware, without machine paths."""
    models = found.get("models") or manifest.models(params)
    rows: list[tuple[str, str]] = [
        ("run", f"{params.run.name} (seed {params.run.seed})"),
        ("started", manifest.started_label(found)),
        ("code", f"aloe {found.get('workbook_version')}, commit {manifest.commit_label(found)}"),
        ("parameter file", str(found.get("params_file") or manifest.display_path(params.source))),
        ("hardware", manifest.hardware_summary(found.get("hardware") or {})),
    ]
    for role in ROLE_NAMES:
        config = getattr(params.roles, role)
        role_model = (models.get("roles") or {}).get(role, {}).get("model", config.model)
        backend = "local transformers serve" if config.is_local else ", ".join(config.base_urls)
        rows.append((f"role: {role}", f"{model_label(role_model)} via {backend}"))
    policy = models.get("policy") or {}
    rows.append(("policy (trained)", f"{model_label(str(policy.get('base_model')))} "
                                     f"({policy.get('snapshot') or 'no snapshot recorded'})"))
    packages = found.get("packages") or manifest.package_versions()
    rows.append(("versions", ", ".join(f"{name} {version}" for name, version in packages.items())))
    return rows


def _value_text(value: Any) -> str:
    """A value as the parameter file writes it: null, not None; lists and mappings as JSON."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "null" if value is None else str(value)


def two_column_html(rows: list[tuple[str, Any]], css_class: str) -> str:
    """A key-value table whose values wrap instead of being cut off."""
    body = "".join(f"<tr><th {LEFT}>{html.escape(str(key))}</th><td {LEFT}>"
                   f"{html.escape(_value_text(value))}</td></tr>" for key, value in rows)
    return f"<table class='{css_class}'>{body}</table>"


def run_facts_html(params: Params, found: Mapping[str, Any]) -> str:
    return TABLE_CSS + two_column_html(run_facts(params, found), "aloe-facts")


def parameters_html(found: Mapping[str, Any]) -> str:
    """Every parameter as resolved (defaults and overrides applied), collapsed, and the whole
    manifest as JSON, collapsed too; machine paths shown relative to the project."""
    flat = manifest.flatten(manifest.portable(found.get("params") or {}))
    source = html.escape(str(found.get("params_file") or "the notebook's parameters"))
    return (f"{TABLE_CSS}<details><summary>Parameters as resolved: {len(flat)} values (from "
            f"{source}, with every default and override)</summary>"
            f"{two_column_html(list(flat.items()), 'aloe-facts')}</details>"
            "<details><summary>The run's manifest (manifest.json)</summary><pre>"
            f"{html.escape(manifest.dumps(found))}</pre></details>")


LEFT = "style='text-align:left'"  # inline: the page's own table style aligns cells right
TABLE_CSS = """<style>
table.aloe-facts{border-collapse:collapse;font-size:13px}
table.aloe-facts th{text-align:left;padding:2px 12px 2px 0;white-space:nowrap;vertical-align:top}
table.aloe-facts td{text-align:left;padding:2px 0;white-space:normal;max-width:none;
  overflow:visible}
</style>"""


# ------------------------------------------------------------------------------------------
# The summary
# ------------------------------------------------------------------------------------------
def question(params: Params, found: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> str:
    """The question the run asks, with its policy, benchmark size, turns and judge."""
    models = found.get("models") or {}
    policy = model_label(str((models.get("policy") or {}).get("base_model") or "the policy"))
    judge = model_label(str(((models.get("roles") or {}).get("judge") or {}).get("model")
                            or params.roles.judge.model))
    first = next(iter(((metrics or {}).get("models") or {}).values()), {})
    size = (f"{first.get('n_personas')} benchmark personas" if first
            else f"the {params.evaluation.benchmark} benchmark")
    return (f"Does fine-tuning <code>{html.escape(str(policy))}</code> on simulated preference "
            "conversations (SFT, then DPO) make it fit an unseen user better as a conversation "
            f"goes on? Measured on {size} over {params.evaluation.turns} turns, each reply "
            f"scored 1-5 by the judge <code>{html.escape(str(judge))}</code>.")


def data_volume(layout: RunLayout) -> str:
    """Personas, conversations and examples, in one sentence."""
    counts = product_counts(layout)
    sft = sum(n for k, n in counts.items() if k.startswith("sft ") and k.endswith("examples"))
    dpo = sum(n for k, n in counts.items() if k.startswith("dpo ") and k.endswith("examples"))
    return (f"{counts['personas']} training personas and {counts['benchmark personas']} "
            f"benchmark personas; {counts['conversations']} conversations with "
            f"{counts['conversation turns']} judged turns; {sft} SFT and {dpo} DPO examples.")


def duration(seconds: float) -> str:
    """'45 s', '3 min 05 s', '2 h 04 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def stage_times(layout: RunLayout) -> dict[str, Any]:
    """The wall time of the run's stages (the report's own left out), summed over every
    `aloe run` of the folder as the request counts are (runner.json keeps the earlier ones'
    stage times under `earlier`): total seconds, how many `aloe run`s timed a stage, the
    last one's seconds, and the stages' numbers."""
    timings = load_optional(layout.timings) or {}
    invocations = [[s for s in entry.get("stages") or [] if s.get("notebook") != REPORT_NOTEBOOK]
                   for entry in [*(timings.get("earlier") or []), timings]]
    timed = [stages for stages in invocations if stages]
    seconds = [sum(float(s.get("seconds", 0.0)) for s in stages) for stages in timed]
    return {"wall_s": sum(seconds), "invocations": len(timed),
            "last_s": seconds[-1] if seconds else 0.0,
            "stages": sorted({s["notebook"][:2] for stages in timed for s in stages})}


def cost_and_time(layout: RunLayout) -> dict[str, Any]:
    """LLM requests, cache answers, tokens and cost over every stage session of the run, and
    the wall time of its stages over every `aloe run` (this report excluded): both cover
    every invocation, so that they describe the same work."""
    history = load_usage_history(layout)
    totals = [entry.get("totals") or {} for entry in history]
    return {"requests": sum(int(t.get("requests", 0)) for t in totals),
            "cache_hits": sum(int(t.get("cache_hits", 0)) for t in totals),
            "tokens": sum(int(t.get("prompt_tokens", 0)) + int(t.get("completion_tokens", 0))
                          for t in totals),
            "cost_usd": sum(float(t.get("cost_usd", 0.0)) for t in totals),
            **stage_times(layout)}


def cost_sentence(cost: Mapping[str, Any]) -> str:
    stages, runs = cost["stages"], cost.get("invocations", 1)
    span = ("no stage timed" if not stages else f"stage {stages[0]}" if len(stages) == 1
            else f"stages {stages[0]}-{stages[-1]}")
    summed = ("" if not stages else ", one aloe run" if runs == 1 else
              f", summed over {runs} aloe runs; the last took {duration(cost['last_s'])}")
    return (f"{cost['requests']:,} LLM requests sent and {cost['cache_hits']:,} answered from "
            f"the cache, {cost['tokens']:,} tokens, ${cost['cost_usd']:,.2f} estimated, over "
            f"every invocation of the run; wall time {duration(cost['wall_s'])} ({span}"
            f"{summed}).")


def earlier_note(found: Mapping[str, Any]) -> str:
    """Say when earlier `aloe run`s of this folder ran other code or other parameters."""
    earlier = found.get("earlier") or []
    if not earlier:
        return ""
    return (f" · {len(earlier)} earlier invocation{'s' if len(earlier) > 1 else ''} of this "
            "folder ran other code or parameters (see the manifest)")


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`(.+?)`")


def inline_html(markdown: str) -> str:
    """A finding's sentence (markdown with **bold** and `code`) as HTML."""
    text = html.escape(markdown, quote=False)
    return _CODE.sub(r"<code>\1</code>", _BOLD.sub(r"<b>\1</b>", text))


SUMMARY_CSS = """<style>
.aloe-summary{font-size:14px;line-height:1.4;max-width:1100px}
.aloe-summary h1{font-size:24px;margin:0 0 2px 0}
.aloe-summary p{margin:4px 0}
.aloe-summary .meta{color:#555}
.aloe-summary table{border-collapse:collapse;margin:6px 0}
.aloe-summary th,.aloe-summary td{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}
.aloe-summary .caveats{border-left:4px solid #d9822b;background:#fdf4e7;padding:4px 10px;
  margin-top:6px}
.aloe-summary .caveats ul{margin:2px 0;padding-left:18px}
</style>"""


def summary_html(params: Params, found: Mapping[str, Any], metrics: Mapping[str, Any] | None,
                 found_findings: list[findings.Finding]) -> str:
    """The report's first screen: title, run and commit, question, headline numbers, data,
    cost and time, and the caveats."""
    layout = params.layout
    meta = (f"Run <b>{html.escape(params.run.name)}</b> · code commit "
            f"<code>{html.escape(manifest.commit_label(found))}</code> · started "
            f"{html.escape(manifest.started_label(found))} · parameter file "
            f"<code>{html.escape(str(found.get('params_file') or params.source))}</code>"
            f"{earlier_note(found)}")
    if viewer.link_html(layout):  # written by the report notebook just before this summary
        meta += f" · {viewer.link_html(layout)}"
    table = tables.headline_table(metrics)
    numbers = (table.to_html(classes="aloe-headline", border=0) if not table.empty
               else "<p><i>No evaluation in this run yet.</i></p>")
    caveats = [f for f in found_findings if f.caveat]
    caveat_box = ("<div class='caveats'><b>Caveats</b><ul>"
                  + "".join(f"<li>{inline_html(f.text)}</li>" for f in caveats)
                  + "</ul></div>") if caveats else ""
    level = round(100 * float((metrics or {}).get("confidence", 0.95)))
    units = findings.unit_words(findings.unit(metrics))
    return (f"{SUMMARY_CSS}<div class='aloe-summary'>"
            f"<h1>{html.escape(params.report.heading(params.run.name))}</h1>"
            f"<p class='meta'>{meta}</p>"
            f"<p><b>Question.</b> {question(params, found, metrics)}</p>"
            f"<p><b>Headline</b> ({level}% bootstrap intervals over {units}; differences "
            "are paired, on the same personas):</p>"
            f"{numbers}<p><b>Data.</b> {html.escape(data_volume(layout))} <b>Cost and time.</b> "
            f"{html.escape(cost_sentence(cost_and_time(layout)))}</p>{caveat_box}</div>")


def run_findings(params: Params, found: Mapping[str, Any]) -> list[findings.Finding]:
    """The run's findings, from metrics.json, the stage summaries and the resolved parameters."""
    layout = params.layout
    return findings.run_findings(load_optional(layout.metrics),
                                 conversations=load_optional(layout.conversations_summary),
                                 export=load_optional(layout.export_summary),
                                 params=found.get("params") or params.model_dump(mode="json"),
                                 training_stats=training_stats(layout))


def findings_markdown(params: Params, found_findings: list[findings.Finding]) -> str:
    """The results (the caveats are in the summary, above them)."""
    metrics = load_optional(params.layout.metrics) or {}
    return findings.to_markdown([f for f in found_findings if not f.caveat],
                                float(metrics.get("confidence", 0.95)), findings.unit(metrics))


# ------------------------------------------------------------------------------------------
# Tables with human labels
# ------------------------------------------------------------------------------------------
USAGE_LABELS = {"requests": "requests sent", "cache_hits": "answered from the cache",
                "retries": "retries", "failures": "failed requests",
                "prompt_tokens": "prompt tokens", "completion_tokens": "completion tokens",
                "cost_usd": "cost (USD)"}


def usage_summary(history: list[dict[str, Any]]) -> pd.DataFrame:
    """LLM usage per stage and role, summed over the stage sessions, with human labels."""
    table = tables.usage_table(history)
    summed = table.groupby(["stage", "role"], sort=False)[list(USAGE_LABELS)].sum()
    return summed.round({"cost_usd": 4}).rename(columns=USAGE_LABELS)


def write_model_cards(params: Params) -> list[str]:
    """Rewrite each finished adapter's model card with the run's metrics; their paths,
    relative to the project."""
    written = [model_card.write_card(params, stage, with_metrics=True)
               for stage in ADAPTER_STAGES]
    return [manifest.display_path(path) for path in written if path is not None]
