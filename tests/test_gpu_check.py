"""scripts/gpu_check.py: its code path kept alive on CPU with tiny models (`--tiny`), the edge
search's logic, and the figures aloe plan reads tied to the GPU run that measured them
(docs/gpu_check.json). The GPU run itself (8B shapes) needs a GPU and is never part of the
suite."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.support.scripts import load_script

SCRIPT = ROOT / "scripts" / "gpu_check.py"
DOCS_REPORT = ROOT / "docs" / "gpu_check.json"


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    return load_script("gpu_check")


@pytest.mark.slow
def test_tiny_gpu_check_measures_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    result = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=1200,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["tiny"] and set(report["versions"]) >= {"torch", "trl", "bitsandbytes"}
    assert list(report["training"]) == ["llama3-8b@64x1", "qwen2-7b@64x1",
                                        "llama3-8b@sft128-dpo64x1"]
    for name, figures in report["training"].items():
        for stage in ("sft", "dpo"):
            assert figures[f"{stage}_steps"] == 2, name
            assert figures[f"{stage}_tokens_per_s"] > 0 and figures[f"{stage}_s_per_step"] > 0
            assert figures[f"{stage}_peak_rss_gb"] > 0  # on a GPU: _peak_allocated_gb, ...
    assert report["training"]["llama3-8b@sft128-dpo64x1"]["sft_len"] == 128
    assert report["training"]["llama3-8b@sft128-dpo64x1"]["dpo_len"] == 64
    generation = report["generation"]["llama3-8b"]
    assert {"batch_1_replies_per_s", "batch_4_replies_per_s", "batch_4_speedup"} <= set(generation)
    edge = report["edge"]["llama3-8b"]
    assert all(t["fits"] and t["steps"] == 2 for t in edge["tries"].values())  # CPU: no cap
    assert edge["summary"]["sft_length_at_micro_batch_1"] == {
        "fits_up_to": 128, "first_out_of_memory": None, "not_tried": []}
    assert not DOCS_REPORT.exists() or not json.loads(DOCS_REPORT.read_text())["tiny"]


def test_docs_are_written_only_from_a_gpu_run() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--write-docs"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "not with --tiny" in result.stderr


def test_an_edge_series_stops_at_its_first_out_of_memory(gpu_check: ModuleType, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Each try runs in its own process (`isolated`); here a stand-in answers as a card would
    that holds 96 tokens per micro-batch, so that the search's own logic is what is tested."""
    asked: list[str] = []

    def card(args: Any, kind: str, name: str) -> dict[str, Any]:
        asked.append(name)
        if kind != "edge":
            return {"skipped": "not asked"}
        probe = next(p for series in gpu_check.edge_probes(True) for p in series
                     if p.name == name)
        fits = probe.seq_len * probe.micro_batch <= 96
        return {"fits": fits, "len": probe.seq_len, "peak_reserved_gb": 1.0} if fits else {
            "fits": False, "error": "OutOfMemoryError: CUDA out of memory."}

    monkeypatch.setattr(gpu_check, "isolated", card)
    assert gpu_check.main(["--tiny", "--only", "edge", "--out", str(tmp_path)]) == 0
    # sft 64 fits, 128 does not; 64x2 does not, so 64x4 is never tried; dpo likewise
    assert asked == ["sft@64x1", "sft@128x1", "sft@64x2", "dpo@64x1", "dpo@128x1", "dpo@64x2"]
    edge = json.loads((tmp_path / "gpu_check.json").read_text())["edge"]["llama3-8b"]
    assert edge["summary"] == {
        "sft_length_at_micro_batch_1": {"fits_up_to": 64, "first_out_of_memory": 128,
                                        "not_tried": []},
        "sft_micro_batch_at_length_64": {"fits_up_to": None, "first_out_of_memory": 2,
                                         "not_tried": []},
        "dpo_length_at_micro_batch_1": {"fits_up_to": 64, "first_out_of_memory": 128,
                                        "not_tried": []},
        "dpo_micro_batch_at_length_64": {"fits_up_to": None, "first_out_of_memory": 2,
                                         "not_tried": []}}


def test_a_resumed_check_measures_only_what_the_report_left_out(
        gpu_check: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def card(args: Any, kind: str, name: str) -> dict[str, Any]:
        asked.append(name)
        return {"fits": True, "peak_reserved_gb": 2.0}

    monkeypatch.setattr(gpu_check, "isolated", card)
    monkeypatch.setattr(gpu_check, "versions", lambda: {"torch": "1"})
    first = tmp_path / "first"
    assert gpu_check.main(["--tiny", "--only", "edge", "--out", str(first)]) == 0
    report = json.loads((first / "gpu_check.json").read_text())
    tries = report["edge"]["llama3-8b"]["tries"]
    tries["dpo@128x1"] = {"skipped": "out of time (--minutes)"}
    del tries["dpo@64x2"]
    (first / "gpu_check.json").write_text(json.dumps(report))
    asked.clear()
    second = tmp_path / "second"
    assert gpu_check.main(["--tiny", "--only", "edge", "--resume", str(first / "gpu_check.json"),
                           "--out", str(second)]) == 0
    assert asked == ["dpo@128x1", "dpo@64x2"]
    resumed = json.loads((second / "gpu_check.json").read_text())
    assert resumed["edge"]["llama3-8b"]["tries"]["sft@64x1"] == {"fits": True,
                                                                 "peak_reserved_gb": 2.0}
    assert resumed["edge"]["llama3-8b"]["summary"]["dpo_length_at_micro_batch_1"][
        "not_tried"] == []
    assert resumed["resumed"] == [resumed["date"]]
    monkeypatch.setattr(gpu_check, "versions", lambda: {"torch": "2"})  # other figures: refused
    assert gpu_check.main(["--tiny", "--only", "edge", "--resume", str(second / "gpu_check.json"),
                           "--out", str(tmp_path / "third")]) == 2
    assert not (tmp_path / "third").exists()


def test_an_edge_left_untried_is_not_called_an_edge(gpu_check: ModuleType) -> None:
    tries = {"dpo@64x1": {"fits": True}, "dpo@128x1": {"skipped": "out of time (--minutes)"}}
    summary = gpu_check.edge_summary(tries, tiny_run=True)
    assert summary["dpo_length_at_micro_batch_1"] == {
        "fits_up_to": 64, "first_out_of_memory": None, "not_tried": [128]}
    assert summary["dpo_micro_batch_at_length_64"]["fits_up_to"] is None
    words = [gpu_check.edge_sentence(k, v) for k, v in summary.items()]
    assert "dpo length at micro-batch 1: fits 64 (128 not tried)" in words
    assert "dpo micro-batch at length 64: not tried" in words


# ------------------------------------------------------------------------------------------
# The GPU run on record, and the figures aloe plan reads
# ------------------------------------------------------------------------------------------
def test_the_report_on_record_is_a_gpu_run_at_the_paper_settings() -> None:
    report = json.loads(DOCS_REPORT.read_text())
    assert not report["tiny"] and "H200" in report["gpu"]
    assert report["versions"]["trl"] and report["versions"]["bitsandbytes"]
    paper = report["training"]["llama3-8b@2048x1"]
    for stage in ("sft", "dpo"):
        assert paper[f"{stage}_optimizer"] == "paged_adamw_8bit"
        assert 0 < paper[f"{stage}_peak_allocated_gb"] <= paper[f"{stage}_peak_reserved_gb"] < 20
    assert report["training"]["llama3-8b@sft8192-dpo512x1"]["sft_len"] == 8192
    assert set(report["generation"]["llama3-8b"]) >= {
        f"batch_{b}_tokens_per_s" for b in (1, 16, 64)}


def test_gpu_figures_are_what_the_report_on_record_gives(gpu_check: ModuleType) -> None:
    """src/aloe/operations/gpu_figures.json is written from docs/gpu_check.json by
    `gpu_check.py --from-report`: the two cannot drift apart, and the derived summary and
    verdict are the script's own."""
    report = json.loads(DOCS_REPORT.read_text())
    figures = json.loads(gpu_check.FIGURES.read_text())
    assert gpu_check.figures_from_report(report, copy.deepcopy(figures)) == figures
    for edge in report["edge"].values():
        assert edge["summary"] == gpu_check.edge_summary(edge["tries"], tiny_run=False)
    assert report["verdict"] == gpu_check.verdict(report, 20.0)
    assert gpu_check.DOCS_PAGE.read_text() == gpu_check.render_markdown(report, figures)
    h200 = figures["gpus"]["H200 141GB"]
    assert h200["measured"] is True
    assert h200["sft_tokens_per_s"] == round(
        report["training"]["llama3-8b@2048x1"]["sft_steady_tokens_per_s"], 1)
    assert figures["peak_memory_gb"]["dpo"] == report["training"]["llama3-8b@2048x1"][
        "dpo_peak_allocated_gb"]


def test_from_report_refuses_a_tiny_run(gpu_check: ModuleType, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({"tiny": True}))
    assert gpu_check.main(["--from-report", str(tiny)]) == 2


def test_the_scaling_page_quotes_the_report_on_record() -> None:
    """Every figure of docs/scaling.md's "GPU figures" section is the report's."""
    page = (ROOT / "docs" / "scaling.md").read_text()
    section = page[page.index("## GPU figures"):]
    section = " ".join(section[:section.index("`aloe plan` and the preflight")].split())
    report = json.loads(DOCS_REPORT.read_text())
    paper, released = (report["training"][n] for n in ("llama3-8b@2048x1",
                                                       "llama3-8b@sft8192-dpo512x1"))
    qwen = report["training"]["qwen2-7b@2048x1"]
    edge = report["edge"]["llama3-8b"]
    generation = report["generation"]["llama3-8b"]
    dpo_length = edge["summary"]["dpo_length_at_micro_batch_1"]
    dpo_batch = edge["summary"]["dpo_micro_batch_at_length_2048"]
    quoted = [f"SFT peaked at {paper['sft_peak_allocated_gb']:.2f} GB allocated "
              f"({paper['sft_peak_reserved_gb']:.2f} GB reserved), DPO at "
              f"{paper['dpo_peak_allocated_gb']:.2f} GB ({paper['dpo_peak_reserved_gb']:.2f} GB)",
              f"Qwen2-7B at {qwen['sft_peak_allocated_gb']:.2f} and "
              f"{qwen['dpo_peak_allocated_gb']:.2f} GB",
              f"packed to {released['sft_len']:,} tokens peaked at "
              f"{released['sft_peak_allocated_gb']:.2f} GB and DPO at {released['dpo_len']} "
              f"tokens at {released['dpo_peak_allocated_gb']:.2f} GB",
              f"capped at {edge['allocator_cap_gb']:g} GB",
              f"SFT trains up to {edge['summary']['sft_length_at_micro_batch_1']['fits_up_to']:,}"
              f" tokens at micro-batch 1 "
              f"({edge['summary']['sft_length_at_micro_batch_1']['first_out_of_memory']:,} ran "
              f"out of memory) and at micro-batch "
              f"{edge['summary']['sft_micro_batch_at_length_2048']['fits_up_to']} at 2,048",
              f"DPO trains up to {dpo_length['fits_up_to']:,} tokens at micro-batch 1 "
              f"({dpo_length['first_out_of_memory']:,} ran out of memory) and at micro-batch "
              f"{dpo_batch['fits_up_to']} at 2,048 tokens ({dpo_batch['first_out_of_memory']} "
              "ran out of memory)",
              f"SFT {paper['sft_steady_tokens_per_s']:,.0f} tokens/s, DPO "
              f"{paper['dpo_steady_tokens_per_s']:,.0f} tokens/s",
              f"{generation['batch_16_tokens_per_s']} tokens/s at batch 16 and "
              f"{generation['batch_64_tokens_per_s']} at batch 64",
              f"one {report['gpu']} ({report['date']})"]
    missing = [text for text in quoted if text not in section]
    assert not missing, missing
