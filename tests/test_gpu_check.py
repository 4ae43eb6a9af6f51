"""scripts/gpu_check.py's code path, kept alive on CPU with tiny models (`--tiny`): the GPU run
(8B shapes, docs/gpu_check.json) needs a GPU and is never part of the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_tiny_gpu_check_measures_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny",
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["tiny"] and set(report["versions"]) >= {"torch", "trl", "bitsandbytes"}
    assert list(report["training"]) == ["llama3-8b@64x1", "qwen2-7b@64x1", "llama3-8b@96x2"]
    for name, figures in report["training"].items():
        for stage in ("sft", "dpo"):
            assert figures[f"{stage}_steps"] == 2, name
            assert figures[f"{stage}_tokens_per_s"] > 0 and figures[f"{stage}_s_per_step"] > 0
            assert figures[f"{stage}_peak_rss_gb"] > 0  # on a GPU: _peak_allocated_gb, ...
    generation = report["generation"]["llama3-8b"]
    assert {"batch_1_replies_per_s", "batch_4_replies_per_s", "batch_4_speedup"} <= set(generation)
    assert not (ROOT / "docs" / "gpu_check.json").exists() or \
        not json.loads((ROOT / "docs" / "gpu_check.json").read_text())["tiny"]


def test_docs_are_written_only_from_a_gpu_run() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--tiny",
                             "--write-docs"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not with --tiny" in result.stderr
