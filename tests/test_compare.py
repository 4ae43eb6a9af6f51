"""`aloe compare`: runs found by path or name, the parameters that differ (and only those), the
paired difference of the same model across runs on the personas they share, and the page,
rendered and opened in headless Chromium. The runs are hand-made run folders: a manifest, a
benchmark, evaluation records and the metrics `aloe.analysis.metrics` computes from them."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aloe.analysis.metrics import summarise
from aloe.core import manifest
from aloe.core.config import deep_merge, params_from_dict
from aloe.core.records import DataError, write_json, write_records
from aloe.presentation import compare
from tests.conftest import ROOT, tiny_dict
from tests.support.browser import chromium_path, inspect_page
from tests.support.pages import param_diff_rows

MODELS = ("base", "dpo")


@functools.cache
def code_state() -> dict:
    return manifest.git_state()


def make_run(root: Path, name: str, bonus: int = 0, changes: dict | None = None,
             renamed: str | None = None, products: dict | None = None,
             usage: dict | None = None) -> Path:
    """A finished run folder under root/outputs: 6 benchmark personas x 3 turns; dpo scores
    `bonus` more than base; `renamed` gives that persona another text (another persona).

    `products` gives the run's other products, each made from a word (the same word, the same
    content): `personas`, `conversations` (written in the order `order` gives, "reversed" or
    not), `sft` and `dpo` (adapter weights), `benchmark` (every benchmark persona's text).
    `usage` is one ledger entry's totals (requests, cache_hits)."""
    data = deep_merge(tiny_dict(root), {"run": {"name": name, "output_dir": str(root / "outputs")},
                                        **(changes or {})})
    params = params_from_dict(data, source=f"params/{name}.yaml")
    layout = params.layout
    products = products or {}
    personas = [{"id": f"bench-{i}", "profile": f"profile {i}{products.get('benchmark', '')}",
                 "personality": "curious" if f"bench-{i}" != renamed else "grumpy"}
                for i in range(6)]
    write_products(layout, products)
    if usage:
        write_records(layout.usage_history, [{"stage": "evaluate", "started": 1.0,
                                              "roles": {}, "totals": usage}])
    write_records(layout.benchmark, personas)
    by_model = {}
    for model in MODELS:
        extra = bonus if model == "dpo" else 0
        by_model[model] = [{"model": model, "persona_id": p["id"], "turn": k,
                            "score": min(5, 1 + (i + k) % 3 + extra)}
                           for i, p in enumerate(personas) for k in (1, 2, 3)]
        write_records(layout.eval_records(model), by_model[model])
    write_json(layout.metrics, summarise(by_model, n_boot=100, models=list(MODELS)))
    found = manifest.build(params, f"params/{name}.yaml", ["05_evaluate"])
    found["git"] = code_state()  # one state for every run of a test, however the tree changes
    write_json(layout.manifest, found)
    write_json(layout.timings, {"stages": [{"notebook": "05_evaluate", "seconds": 12.5}]})
    return layout.run_dir


def write_products(layout, data: dict) -> None:
    """The training products `make_run`'s `products` names (see there)."""
    if "personas" in data:
        write_records(layout.personas, [{"id": f"persona-{i}", "profile": f"{data['personas']} "
                                         f"{i}", "personality": "calm"} for i in range(4)])
    if "conversations" in data:
        records = [{"id": f"conv-{i}", "turns": [{"turn": 1, "user": f"{data['conversations']} "
                                                  f"{i}"}]} for i in range(4)]
        write_records(layout.conversations, records[::-1] if data.get("order") == "reversed"
                      else records)
    for stage in ("sft", "dpo"):
        if stage in data:
            folder = layout.adapter(stage)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "adapter_config.json").write_text("{}")
            (folder / "adapter_model.safetensors").write_bytes(data[stage].encode())


def warning_about(lines: list[str], *words: str) -> list[str]:
    return [line for line in lines if all(word in line for word in words)]


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
    assert costs.loc["a", "wall time (s)"] == 12.5 and costs.loc["b", "requests sent"] == 0


def test_a_missing_run_exits_2_with_one_line(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    result = subprocess.run([sys.executable, "-m", "aloe", "compare", "a", "missing",
                             "--output-dir", str(tmp_path / "outputs")], capture_output=True,
                            text=True, env={**os.environ, "ALOE_ROOT": str(ROOT)})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("aloe: no run folder 'missing'")




@pytest.mark.slow
def test_aloe_compare_writes_a_page_that_renders(tmp_path: Path) -> None:
    """The command end to end: 07_compare executed by papermill, rendered, opened in Chromium."""
    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    (root / "notebooks").symlink_to(ROOT / "notebooks")
    make_run(root, "base-run")
    make_run(root, "ablation", bonus=1, changes={"dpo": {"start_from": "base"}})
    result = subprocess.run([sys.executable, "-m", "aloe", "compare", "base-run",
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


SAME = {"personas": "nurse", "conversations": "hello", "sft": "weights-1", "dpo": "weights-2"}
BETA = {"dpo": {"trainer": {"beta": 0.5}}}


def test_data_that_no_differing_parameter_explains_are_warned_of(tmp_path: Path) -> None:
    """Each run's data are fingerprinted (personas, benchmark users, conversations, adapter
    weights); a product that differs where no parameter that makes it differs is a warning."""
    make_run(tmp_path, "a", products=SAME)
    # beta explains the DPO weights; the same conversations written in another order are the same
    make_run(tmp_path, "b", changes=BETA, products={**SAME, "order": "reversed", "dpo": "other"})
    runs = compare.load_runs(["a", "b"], tmp_path / "outputs")
    assert compare.warnings(runs) == []
    table = compare.data_table(runs)
    assert table.loc["conversations", "a"] == table.loc["conversations", "b"]
    assert table.loc["DPO adapter weights", "a"] != table.loc["DPO adapter weights", "b"]

    make_run(tmp_path, "c", changes=BETA, products={**SAME, "personas": "astronaut",
                                                 "sft": "other"})
    lines = compare.warnings(compare.load_runs(["a", "c"], tmp_path / "outputs"))
    assert len(lines) == 2, lines
    assert warning_about(lines, "training personas", "not comparable as a test of "
                                                     "dpo.trainer.beta")
    # the same conversations and SFT parameters made other SFT weights: training's own noise
    assert warning_about(lines, "SFT adapter weights", "not bit-for-bit reproducible",
                         "not dpo.trainer.beta")
    # what was made from other personas differs in their wake: one line, not three
    make_run(tmp_path, "f", changes=BETA, products={**SAME, "personas": "astronaut",
                                                     "conversations": "bye", "sft": "other"})
    lines = compare.warnings(compare.load_runs(["a", "f"], tmp_path / "outputs"))
    assert len(lines) == 1 and warning_about(lines, "training personas", "so do what was made "
                                             "from them (conversations, SFT adapter weights)")
    # a persona parameter that differs explains the personas and what was made from them
    make_run(tmp_path, "d", changes={"personas": {"profiles_target": 30}},
             products={**SAME, "personas": "astronaut", "sft": "other"})
    assert compare.warnings(compare.load_runs(["a", "d"], tmp_path / "outputs")) == []
    # no parameter differs at all: the data differ all the same
    make_run(tmp_path, "e", products={**SAME, "conversations": "bye"})
    lines = compare.warnings(compare.load_runs(["a", "e"], tmp_path / "outputs"))
    assert warning_about(lines, "conversations", "no parameter differs")


def test_other_code_and_no_persona_in_common_are_warned_of(tmp_path: Path) -> None:
    make_run(tmp_path, "a")
    other = make_run(tmp_path, "b", changes=BETA, products={"benchmark": " (another user)"})
    found = manifest.read(compare.load_run(other).layout)
    found["git"] = {"commit": "f" * 40, "dirty": False, "changes_sha256": None}
    (other / "manifest.json").write_text(json.dumps(found))
    runs = compare.load_runs(["a", "b"], tmp_path / "outputs")
    lines = compare.warnings(runs)
    assert warning_about(lines, "benchmark users", "dpo.trainer.beta")
    assert warning_about(lines, "0 benchmark personas", "no paired difference")
    assert warning_about(lines, "other code", "ffffffffffff")
    page = compare.warnings_html(runs)
    assert page.count("<li>") == len(lines) == 3 and "aloe-compare-warnings" in page
    assert compare.warnings_html(compare.load_runs(["a", "a"], tmp_path / "outputs")) == ""


def test_a_run_served_from_the_cache_is_not_called_faster(tmp_path: Path) -> None:
    """The wall time says when a run's LLM answers came from the response cache, and adds
    up every `aloe run` of the folder, as the request counts do."""
    fresh = make_run(tmp_path, "fresh", usage={"requests": 90, "cache_hits": 10})
    make_run(tmp_path, "cached", usage={"requests": 0, "cache_hits": 100})
    timings = json.loads((fresh / "runner.json").read_text())
    timings["earlier"] = [{"stages": [{"notebook": "01_personas", "seconds": 100.0}]}]
    (fresh / "runner.json").write_text(json.dumps(timings))
    runs = compare.load_runs(["fresh", "cached"], tmp_path / "outputs")
    costs = compare.cost_table(runs)
    assert costs.loc["fresh", "wall time (s)"] == 112.5
    assert costs.loc["fresh", "aloe runs"] == 2 and costs.loc["cached", "aloe runs"] == 1
    assert costs.loc["fresh", "wall time"] == "1 min 52 s (10% from the cache)"
    assert costs.loc["cached", "wall time"] == "12 s (served from the cache: 100%)"
    assert all(len(text) <= 50 for text in costs["wall time"])  # what a table cell shows
    assert warning_about(compare.warnings(runs), "cached", "served from the response cache",
                         "wall time")


@pytest.mark.slow
def test_the_warning_tops_the_page_in_chromium(tmp_path: Path) -> None:
    """Runs that differ in beta and in their benchmark users: `aloe compare` prints the
    warnings (and no papermill progress bar), and the page opens with them."""
    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    (root / "notebooks").symlink_to(ROOT / "notebooks")
    make_run(root, "beta-0.1", products=SAME)
    make_run(root, "beta-0.5", changes=BETA, products={**SAME, "personas": "astronaut",
                                                   "benchmark": " (another user)"})
    result = subprocess.run([sys.executable, "-m", "aloe", "compare", "beta-0.1",
                             "beta-0.5"], cwd=root, capture_output=True, text=True,
                            env={**os.environ, "ALOE_ROOT": str(root)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Executing" not in result.stderr + result.stdout  # papermill's bar, silenced
    warned = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warned) == 3 and any("training personas" in line for line in warned), warned
    page = root / "outputs" / "compare" / "beta-0.1-vs-beta-0.5.html"
    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shown = inspect_page(page)
    assert shown.console_errors == [] and shown.failed_loads == []
    assert "not comparable as a test of dpo.trainer.beta" in shown.first_screen
    assert shown.text.index("training personas") < shown.text.index("What differs")


def test_a_score_off_the_scale_is_named_by_file_and_line(tmp_path: Path) -> None:
    """Compare reads each run's records with their schema: a score of 99 on ALOE's 1-5 scale
    is refused with file and line, never averaged into a difference."""
    make_run(tmp_path, "a")
    make_run(tmp_path, "b", bonus=1)
    runs = compare.load_runs(["a", "b"], tmp_path / "outputs")
    file = runs[1].layout.eval_records("dpo")
    lines = file.read_text().splitlines()
    lines[2] = lines[2].replace('"score": ', '"score": 99, "was": ')
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(file))}:3: .*99"):
        compare.paired_across_runs(runs)
