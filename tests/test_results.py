"""The results at the end of `aloe run` and `aloe evaluate` (issue 23: the run ended with stage
seconds and a path, no results): per model its mean AL, IR and N-IR with their intervals, as
the report's headline shows them, and the count of the report's caveats. Read from a small
metrics.json made by the real `metrics.summarise` over hand-made records; no model runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from aloe.analysis import findings
from aloe.analysis.metrics import summarise
from aloe.core import manifest
from aloe.core.config import params_from_dict
from aloe.core.records import write_json
from aloe.operations import cli
from aloe.presentation import report
from aloe.presentation.results import results_table
from tests.conftest import ROOT, tiny_dict

MODELS = ("base", "sft", "dpo")


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    (root / "notebooks").symlink_to(ROOT / "notebooks")
    (root / "params" / "p.yaml").write_text(yaml.safe_dump(tiny_dict(tmp_path)))
    return root


def _evaluated(tmp_path: Path) -> tuple:
    """The tiny run with stage 5's metrics: 12 benchmark personas x 4 turns; dpo rises."""
    params = params_from_dict(tiny_dict(tmp_path), source="params/p.yaml")
    by_model = {}
    for j, model in enumerate(MODELS):
        by_model[model] = [{"model": model, "persona_id": f"bench-{i}", "turn": k,
                            "score": min(5, 1 + (i + k) % 3 + (k // 2) * j)}
                           for i in range(12) for k in (1, 2, 3, 4)]
    metrics = summarise(by_model, n_boot=200, models=list(MODELS))
    write_json(params.layout.metrics, metrics)
    write_json(params.layout.manifest, manifest.build(params, "params/p.yaml", ["05_evaluate"]))
    return params, metrics


def test_the_table_is_the_reports_headline_and_counts_its_caveats(tmp_path: Path) -> None:
    params = params_from_dict(tiny_dict(tmp_path), source="params/p.yaml")
    assert results_table(params) is None  # stage 5 has not run: nothing to show
    params, metrics = _evaluated(tmp_path)
    text = results_table(params)
    assert text is not None
    lines = text.splitlines()
    assert lines[0] == "results (95% bootstrap intervals over personas; from …/metrics.json)"
    assert re.split(r"\s{2,}", lines[1].strip()) == ["model", "mean AL (1-5)", "IR (per turn)",
                                         "N-IR (per turn)", "n"]
    assert set(lines[2]) <= {"-", " "}
    rows = {line.split()[0]: line for line in lines[3:3 + len(MODELS)]}
    assert list(rows) == list(MODELS)
    for model in MODELS:  # the one interval formatter, the report's own
        m = metrics["models"][model]
        for est, spec in ((m["mean_al"], ".3f"), (m["ir"], "+.3f"), (m["n_ir"], "+.3f")):
            assert findings.interval_text(est, spec) in rows[model], model
        assert "12 personas" in rows[model]
    assert any(line.startswith("dpo − base") for line in lines)  # the paired difference
    caveats = [f for f in report.run_findings(params, manifest.read(params.layout))
               if f.caveat]
    assert caveats  # the tiny profile's embedded models, at least
    count = len(caveats)
    assert lines[-1] == (f"{count} caveat{'s' if count > 1 else ''}: read "
                         f"{'them' if count > 1 else 'it'} first in the report, which stage 6 "
                         "writes")
    params.layout.report.write_text("<html></html>")  # outside the project: its name alone
    assert results_table(params).splitlines()[-1].endswith(" first in …/report.html")


@pytest.mark.parametrize("stages, shown", [("5-6", True), ("6", True), ("1-2", False),
                                           ("0", False)])
def test_aloe_run_ends_with_the_results_when_it_evaluated(tmp_path: Path, capsys, monkeypatch,
                                                          stages: str, shown: bool) -> None:
    from aloe.operations import runner

    root = _project(tmp_path)
    _evaluated(tmp_path)
    monkeypatch.setenv("ALOE_ROOT", str(root))

    def ran(params, params_file, stages=None, progress=True, force=False):
        selected = runner.parse_stages(stages, runner.notebooks())
        return runner.RunResult(params.layout, [runner.StageResult(nb.stem, 1.0, nb)
                                                for nb in selected], params_file)

    monkeypatch.setattr(runner, "run_workbook", ran)
    assert cli.main(["run", str(root / "params" / "p.yaml"), "--stages", stages]) == 0
    out = capsys.readouterr().out
    assert ("results (95% bootstrap intervals" in out) is shown
    assert ("caveat" in out) is shown
    assert out.rstrip().splitlines()[-1].startswith("run folder: ")
    if shown:  # after the stage times, before the run folder
        assert out.index("total") < out.index("results (") < out.index("run folder: ")
        assert "dpo − base" in out


def test_aloe_evaluate_ends_with_the_same_results(tmp_path: Path, capsys, monkeypatch) -> None:
    from aloe.stages import evaluation

    root = _project(tmp_path)
    params, _ = _evaluated(tmp_path)
    monkeypatch.setenv("ALOE_ROOT", str(root))
    monkeypatch.setattr(evaluation, "run_stage", lambda params: None)  # its metrics are there
    assert cli.main(["evaluate", str(root / "params" / "p.yaml")]) == 0
    out = capsys.readouterr().out
    assert results_table(params) in out
    assert out.rstrip().splitlines()[-1] == f"metrics: {params.layout.metrics}"
