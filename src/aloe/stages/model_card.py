"""Adapters that travel: a base model named so that another machine can find it, and a model
card (the adapter folder's README.md) filled from the run's manifest.

PEFT writes the base model into `adapter_config.json` as it was loaded: on this machine, an
absolute folder. `portable_base` names it instead by its Hugging Face id, by a path relative to
the project, or (the embedded model outside the project) by the hub id it was converted from.
The card says what the adapter was trained on (the data export), how (the hyperparameters as
resolved), on what code (commit, versions), and how it scored (the run's metrics with their
caveats) once stage 5 has measured it: training writes the card, the report rewrites it with
the metrics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aloe.analysis import findings
from aloe.core import manifest, protocols
from aloe.core.config import Params, project_root
from aloe.core.local_model import EMBEDDED_HUB_ID, embedded_source, is_embedded
from aloe.core.records import read_json

STAGE_TITLES = {"sft": "supervised fine-tuning on the preferred replies",
                "dpo": "direct preference optimisation on the preference pairs",
                "grpo": "GRPO (group relative policy optimisation), turn by turn, against the "
                        "run's simulated users"}


# ------------------------------------------------------------------------------------------
# The base model, named portably
# ------------------------------------------------------------------------------------------
def _hub_id_in(folder: Path) -> str | None:
    """The hub id a model folder's config.json says it came from, if it names one."""
    config = folder / "config.json"
    if not config.exists():
        return None
    name = str(json.loads(config.read_text()).get("_name_or_path") or "")
    return name if name and not manifest.is_machine_path(name) and "/" in name else None


def portable_base(base: str, root: Path | None = None) -> str:
    """The base model as another machine can find it: the embedded model by the hub id it was
    converted from (the card says how it differs); a hub id as is; a folder inside the project
    relative to it; another folder by the hub id its config names, else by its name."""
    if is_embedded(Path(base)):
        return EMBEDDED_HUB_ID
    if not manifest.is_machine_path(base):
        return base
    shown = manifest.display_path(base, root or project_root())
    if not shown.startswith("…/"):
        return shown
    return _hub_id_in(Path(base)) or Path(base).name


def make_portable(adapter_config: Path) -> None:
    """Rewrite `base_model_name_or_path` of an adapter_config.json with `portable_base`."""
    if not adapter_config.exists():
        return
    config = json.loads(adapter_config.read_text())
    base = config.get("base_model_name_or_path")
    if base:
        config["base_model_name_or_path"] = portable_base(base)
        adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------------
# The card
# ------------------------------------------------------------------------------------------
def _evaluated_name(params: Mapping[str, Any], stage: str) -> str | None:
    """The name this run's evaluation gave the adapter (`evaluation.models`, adapter: STAGE)."""
    for model in (params.get("evaluation") or {}).get("models") or []:
        if model.get("adapter") == stage and not model.get("base_url"):
            return str(model["name"])
    return None


def _bullets(rows: Mapping[str, Any]) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in rows.items() if value is not None)


def _front_matter(base: str, stage: str) -> str:
    return ("---\n"
            f"base_model: {base}\n"
            "library_name: peft\n"
            "pipeline_tag: text-generation\n"
            f"tags:\n- aloe-workbench\n- lora\n- {stage}\n- trl\n"
            "---\n")


def _base_section(base: str, snapshot: str | None) -> str:
    note = ""
    if base == EMBEDDED_HUB_ID or base.endswith("SmolLM2-135M-Instruct"):
        note = (f"\n\nTrained on the workbook's embedded model: {EMBEDDED_HUB_ID} as shipped "
                f"quantised in {embedded_source()}, dequantised to float32. On the hub's own "
                "weights it loads and runs, but it was not trained on them.")
    return f"## Base model\n\n`{base}`" + (f" ({snapshot})" if snapshot else "") + note


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _split(split: Mapping[str, Any]) -> str:
    return (f"{_plural(int(split.get('examples', 0)), 'example')} from "
            f"{_plural(int(split.get('personas', 0)), 'persona')}")


def _data_section(export: Mapping[str, Any] | None, params: Mapping[str, Any],
                  stats: Mapping[str, Any] | None = None) -> str:
    if stats and stats.get("training_personas") is not None:  # no export: live dialogues
        rows = {"training personas (stage 1, after the leakage screen)":
                stats.get("training_personas"), "dialogues (persona x simulated user)":
                stats.get("dialogues"), "turns trained (rows)": stats.get("rows")}
        return ("## Data\n\nDialogues played live with the run's simulated users, on the "
                "training personas only (never the benchmark's).\n\n" + _bullets(rows))
    if not export:
        return "## Data\n\nNo export summary in the run folder."
    train, validation = export.get("train") or {}, export.get("validation") or {}
    conversations = params.get("conversations") or {}
    rows = {"conversations": export.get("conversations"),
            "judged turns": export.get("turns"),
            "examples (one per decided turn)": export.get("examples"),
            "train": _split(train),
            "validation": _split(validation) + " (no persona of train)",
            "left out": ", ".join(f"{n} {k}" for k, n in (export.get("left_out") or {}).items()),
            "judge rule": conversations.get("judge_rule")}
    return ("## Data\n\nPreference conversations simulated by the run (stage 2), exported in "
            "TRL's conversational format.\n\n" + _bullets(rows))


def _training_section(stage: str, params: Mapping[str, Any],
                      stats: Mapping[str, Any] | None) -> str:
    section = dict(params.get(stage) or {})
    trainer = section.pop("trainer", {}) or {}
    hyper = {k: v for k, v in section.items() if k not in ("base_model",)}
    lines = ["## Training", "", f"QLoRA {STAGE_TITLES[stage]} (TRL).", "",
             "Adapter and loading:", _bullets(hyper), "", "Trainer (TRL's options, as resolved):",
             _bullets(trainer)]
    if stats and stats.get("rewards"):  # learnt from the environment's rewards (GRPO)
        lines += ["", f"Rewards (weight), from the simulated users of protocol "
                      f"{stats.get('protocol')}, {stats.get('num_generations')} replies per "
                      "turn compared:", _bullets(stats["rewards"])]
    if stats:
        lines += ["", "What it did:", _bullets({
            "optimiser steps": stats.get("steps"), "training examples": stats.get("train_examples"),
            "training time (s)": stats.get("train_wall_s"), "device": stats.get("device"),
            "final loss (nats/token)": _rounded(stats.get("final_loss"))})]
    return "\n".join(lines)


def _rounded(value: Any, digits: int = 3) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def _metrics_fresh(metrics_file: Path, adapter_weights: Path) -> bool:
    return (metrics_file.exists() and adapter_weights.exists()
            and metrics_file.stat().st_mtime >= adapter_weights.stat().st_mtime)


def _evaluation_section(metrics: Mapping[str, Any] | None, name: str | None,
                        caveats: list[findings.Finding]) -> str:
    model = ((metrics or {}).get("models") or {}).get(name or "")
    if not model:
        return "## Evaluation\n\nNot evaluated yet (stage 5 writes the metrics; the report " \
               "then fills this section)."
    unit_name = findings.unit(metrics)
    rows = {"benchmark": f"{findings.units_text(model, unit_name)}, "
                         f"{len(model.get('turns') or [])} turns",
            f"mean AL ({protocols.of_summary(metrics).scale_label})":
                findings.interval_text(model.get("mean_al")),
            "IR (per turn)": findings.interval_text(model.get("ir"), "+.3f"),
            "N-IR": findings.interval_text(model.get("n_ir"), "+.3f")}
    for label, pair in ((metrics or {}).get("paired") or {}).items():
        if pair.get("b") == name:
            rows[f"{label} (per turn)"] = findings.interval_text(pair.get("mean_diff"), "+.3f")
    level = round(100 * float((metrics or {}).get("confidence", 0.95)))
    text = (f"## Evaluation\n\nThe ALOE benchmark as model `{name}` ({level}% bootstrap "
            f"intervals over {unit_name}s):\n\n" + _bullets(rows))
    if caveats:
        text += "\n\nCaveats:\n\n" + "\n".join(f"- {c.text}" for c in caveats)
    return text


def _provenance_section(found: Mapping[str, Any]) -> str:
    rows = {"run": found.get("run"), "started": manifest.started_label(dict(found)),
            "workbook": f"aloe {found.get('workbook_version')}, commit "
                        f"{manifest.commit_label(found)}",
            "parameter file": found.get("params_file"),
            "seed": (found.get("seeds") or {}).get("run.seed"),
            "versions": ", ".join(f"{k} {v}" for k, v in (found.get("packages") or {}).items()
                                  if k in ("torch", "transformers", "trl", "peft")),
            "hardware": manifest.hardware_summary(found.get("hardware") or {})}
    return "## Provenance\n\n" + _bullets(rows)


def render_card(stage: str, found: Mapping[str, Any], export: Mapping[str, Any] | None,
                stats: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None) -> str:
    """The model card (markdown with the hub's front matter) from a manifest, the data export
    summary, the training statistics and the metrics (None: not evaluated)."""
    params = found.get("params") or {}
    base = portable_base(str((stats or {}).get("base_model")
                             or (found.get("models") or {}).get("policy", {}).get("base_model")
                             or ""))
    snapshot = ((found.get("models") or {}).get("policy") or {}).get("snapshot")
    caveats = [f for f in findings.run_findings(metrics, export=export, params=params)
               if f.caveat] if metrics else []
    run = found.get("run", "")
    parts = [_front_matter(base, stage),
             f"# {run} · {stage.upper()} adapter (ALOE Workbench)",
             f"A LoRA adapter for `{base}`, trained by the ALOE Workbench with "
             f"{STAGE_TITLES[stage]}: a policy meant to infer a user's unspoken preferences "
             "over a conversation and adapt its replies (ALOE, arXiv 2410.03642).",
             "```python\nfrom peft import AutoPeftModelForCausalLM\n\n"
             f"model = AutoPeftModelForCausalLM.from_pretrained(\"adapters/{stage}\")\n```",
             _base_section(base, snapshot), _data_section(export, params, stats),
             _training_section(stage, params, stats),
             _evaluation_section(metrics, _evaluated_name(params, stage), caveats),
             _provenance_section(found)]
    return "\n\n".join(parts).replace("\n\n\n", "\n\n") + "\n"


def write_card(params: Params, stage: str, with_metrics: bool = False) -> Path | None:
    """Write `adapters/STAGE/README.md` for a finished adapter (None when there is none) and
    make its adapter_config.json portable. With `with_metrics`, the run's metrics go in when
    they were computed after the adapter was trained."""
    layout = params.layout
    folder = layout.adapter(stage)
    if not (folder / "adapter_config.json").exists():
        return None
    make_portable(folder / "adapter_config.json")  # also for adapters trained before this
    stats_file = folder / "training_stats.json"
    stats = read_json(stats_file) if stats_file.exists() else None
    export = read_json(layout.export_summary) if layout.export_summary.exists() else None
    fresh = with_metrics and _metrics_fresh(layout.metrics,
                                            folder / "adapter_model.safetensors")
    metrics = read_json(layout.metrics) if fresh else None
    card = render_card(stage, manifest.portable(manifest.load_or_build(params)), export, stats,
                       metrics)
    target = layout.model_card(stage)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(card, encoding="utf-8")
    os.replace(tmp, target)
    return target

