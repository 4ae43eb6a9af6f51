"""`aloe compare`: runs found by path or name, the parameters that differ (and only those), the
paired difference of the same model across runs on the personas they share, and the page,
rendered and opened in headless Chromium. The runs are hand-made run folders: a manifest, a
benchmark, evaluation records and the metrics `aloe.metrics` computes from them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aloe import compare, manifest
from aloe.config import deep_merge, params_from_dict
from aloe.metrics import summarise
from aloe.records import write_json, write_records
from tests.conftest import ROOT, tiny_dict
from tests.support.browser import chromium_path, inspect_page

MODELS = ("base", "dpo")


def make_run(root: Path, name: str, bonus: int = 0, changes: dict | None = None,
             renamed: str | None = None) -> Path:
    """A finished run folder under root/outputs: 6 benchmark personas x 3 turns; dpo scores
    `bonus` more than base; `renamed` gives that persona another text (another persona)."""
    data = deep_merge(tiny_dict(root), {"run": {"name": name, "output_dir": str(root / "outputs")},
                                        **(changes or {})})
    params = params_from_dict(data, source=f"params/{name}.yaml")
    layout = params.layout
    personas = [{"id": f"bench-{i}", "profile": f"profile {i}",
                 "personality": "curious" if f"bench-{i}" != renamed else "grumpy"}
                for i in range(6)]
    write_records(layout.benchmark, personas)
    by_model = {}
    for model in MODELS:
        extra = bonus if model == "dpo" else 0
        by_model[model] = [{"model": model, "persona_id": p["id"], "turn": k,
                            "score": min(5, 1 + (i + k) % 3 + extra)}
                           for i, p in enumerate(personas) for k in (1, 2, 3)]
        write_records(layout.eval_records(model), by_model[model])
    write_json(layout.metrics, summarise(by_model, n_boot=100, models=list(MODELS)))
    write_json(layout.manifest, manifest.build(params, f"params/{name}.yaml", ["05_evaluate"]))
    write_json(layout.timings, {"stages": [{"notebook": "05_evaluate", "seconds": 12.5}]})
    return layout.run_dir


def test_runs_are_found_by_name_or_path_and_checked(tmp_path: Path) -> None:
    first, second = make_run(tmp_path, "a"), make_run(tmp_path, "b")
    runs = compare.load_runs(["a", str(second)], tmp_path / "outputs")
    assert [r.name for r in runs] == ["a", "b"] and runs[0].layout.run_dir == first
    with pytest.raises(compare.CompareError, match="no run folder 'nope'") as error:
        compare.load_runs(["a", "nope"], tmp_path / "outputs")
    assert error.value.exit_code == 2
    with pytest.raises(compare.CompareError, match="at least two runs"):
        compare.load_runs(["a"], tmp_path / "outputs")
    (second / "metrics.json").unlink()
    with pytest.raises(compare.CompareError, match="run 'b' has no metrics.json"):
        compare.load_runs(["a", "b"], tmp_path / "outputs")


def test_exactly_the_parameter_that_differs(tmp_path: Path) -> None:
    make_run(tmp_path, "beta-0.1")
    make_run(tmp_path, "beta-0.5", changes={"dpo": {"trainer": {"beta": 0.5}}})
    runs = compare.load_runs(["beta-0.1", "beta-0.5"], tmp_path / "outputs")
    table = compare.parameter_differences(runs)  # run.name differs too: a location, not a change
    assert list(table.index) == ["dpo.trainer.beta"]
    assert table.loc["dpo.trainer.beta"].tolist() == ["0.1", "0.5"]
    same = compare.load_runs(["beta-0.1", "beta-0.1"], tmp_path / "outputs")
    assert compare.parameter_differences(same).empty
    assert "identical" in compare.differences_html(same)


def test_paired_differences_on_the_personas_both_runs_share(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    make_run(tmp_path, "b", bonus=1, renamed="bench-5")
    runs = compare.load_runs(["a", "b"], tmp_path / "outputs")
    assert compare.matched_personas(runs[0], runs[1], "dpo") == [f"bench-{i}" for i in range(5)]
    table = compare.paired_across_runs(runs)
    assert list(table.index) == ["base: b − a", "dpo: b − a"]
    base, dpo = table.loc["base: b − a"], table.loc["dpo: b − a"]
    assert base["matched personas"] == dpo["matched personas"] == 5
    assert base["mean difference (per turn)"] == "+0.000 [+0.000, +0.000]"
    assert base["reading"] == "no difference distinguishable from zero"
    assert dpo["mean difference (per turn)"].startswith("+") and dpo["reading"] == "higher in b"
    costs = compare.cost_table(runs)
    assert costs.loc["a", "stages' wall time (s)"] == 12.5 and costs.loc["b", "requests sent"] == 0


def test_a_missing_run_exits_2_with_one_line(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    result = subprocess.run([sys.executable, "-m", "aloe.cli", "compare", "a", "missing",
                             "--output-dir", str(tmp_path / "outputs")], capture_output=True,
                            text=True, env={**os.environ, "ALOE_ROOT": str(ROOT)})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("aloe: no run folder 'missing'")


def param_diff_rows(page: str) -> list[str]:
    """The parameter names in the page's table of differences."""
    table = re.search(r'<table[^>]*class="[^"]*aloe-param-diff[^"]*".*?</table>', page, re.S)
    assert table, "the page has no table of parameter differences"
    body = table.group(0).split("<tbody>")[1]
    return re.findall(r"<th>([^<]+)</th>", body)


@pytest.mark.slow
def test_aloe_compare_writes_a_page_that_renders(tmp_path: Path) -> None:
    """The command end to end: 07_compare executed by papermill, rendered, opened in Chromium."""
    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    (root / "notebooks").symlink_to(ROOT / "notebooks")
    make_run(root, "base-run")
    make_run(root, "ablation", bonus=1, changes={"dpo": {"start_from": "base"}})
    result = subprocess.run([sys.executable, "-m", "aloe.cli", "compare", "base-run",
                             "ablation", "--quiet"], cwd=root, capture_output=True, text=True,
                            env={**os.environ, "ALOE_ROOT": str(root)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    page = root / "outputs" / "compare" / "base-run-vs-ablation.html"
    assert result.stdout.strip() == "comparison: outputs/compare/base-run-vs-ablation.html"
    text = page.read_text()
    assert param_diff_rows(text) == ["dpo.start_from"]
    assert "dpo: ablation − base-run" in text and "higher in ablation" in text
    assert str(root) not in text and str(tmp_path) not in text
    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shown = inspect_page(page)
    assert shown.console_errors == [] and shown.failed_loads == []
    assert len(shown.images) == 1 and shown.images[0]["width"] > 0
    assert "What differs: the parameters" in shown.text and "Cost and time" in shown.text
