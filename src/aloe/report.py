"""Stage 6: the facts a shared report states beside its figures (the figures are in plots.py):
what was run, on what, and how many of each product the run folder holds.

Counts are read from the files themselves, so the report can never disagree with them.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from aloe.config import ROLE_NAMES, Params
from aloe.layout import RunLayout
from aloe.records import read_json, read_records

PACKAGES = ("aloe", "torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "openai")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _hardware() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    except ImportError:  # pragma: no cover
        pass
    return f"CPU only ({os.cpu_count()} cores, {platform.machine()})"


def run_facts(params: Params) -> pd.DataFrame:
    """Profile, roles and their backends, versions and hardware, as one two-column table."""
    rows: list[tuple[str, str]] = [
        ("parameter file", params.source),
        ("run", f"{params.run.name} (seed {params.run.seed})"),
        ("report made", dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
        ("hardware", _hardware()),
    ]
    for role in ROLE_NAMES:
        config = getattr(params.roles, role)
        backend = "local transformers serve" if config.is_local else ", ".join(config.base_urls)
        rows.append((f"role: {role}", f"{config.model} via {backend}"))
    rows.append(("policy (trained)", params.sft.base_model or "embedded SmolLM2-135M-Instruct"))
    rows += [(f"version: {p}", _version(p)) for p in PACKAGES]
    rows.append(("version: python", platform.python_version()))
    return pd.DataFrame(rows, columns=["what", "value"]).set_index("what")


def _lines(path: Path) -> int:
    return len(read_records(path)) if path.exists() else 0


def _dataset_rows(folder: Path) -> dict[str, int]:
    """Rows per split of a saved DatasetDict (memory-mapped: nothing is read into memory)."""
    if not (folder / "dataset_dict.json").exists():
        return {}
    from datasets import load_from_disk

    return {split: len(rows) for split, rows in load_from_disk(str(folder)).items()}


def product_counts(layout: RunLayout) -> dict[str, int]:
    """How many of each product the run folder holds, counted from the files."""
    conversations = read_records(layout.conversations)
    counts = {
        "profiles": _lines(layout.pool("profiles")),
        "personalities": _lines(layout.pool("personalities")),
        "personas": _lines(layout.personas),
        "benchmark personas": _lines(layout.benchmark),
        "conversations": len(conversations),
        "conversation turns": sum(len(c["turns"]) for c in conversations),
    }
    for kind in ("sft", "dpo"):
        for split, n in _dataset_rows(layout.dataset(kind)).items():
            counts[f"{kind} {split} examples"] = n
    for kind in ("sft", "dpo"):
        counts[f"{kind} adapter"] = int(layout.adapter_file(kind, "adapter_config.json")
                                        .exists())
    for file in sorted(layout.eval_dir.glob("*.jsonl")):
        counts[f"evaluation records: {file.stem}"] = _lines(file)
    return counts


def counts_table(layout: RunLayout) -> pd.DataFrame:
    return pd.DataFrame(list(product_counts(layout).items()),
                        columns=["product", "count"]).set_index("product")


def load_optional(path: Path) -> Any:
    """A JSON product of a stage, or None when that stage has not run."""
    return read_json(path) if Path(path).exists() else None
