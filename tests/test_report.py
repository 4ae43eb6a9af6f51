"""The report's summary, facts and tables on a hand-made run folder: the headline numbers with
intervals and the differences over the base, data, cost and time, the caveats, the commit,
the resolved parameters collapsed, human labels, and never a machine path."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from aloe.analysis.metrics import summarise
from aloe.core import manifest
from aloe.core.config import params_from_dict
from aloe.core.records import DataError, append_record, read_json, write_json, write_records
from aloe.llm import load_usage_history
from aloe.operations import spend
from aloe.presentation import report, tables
from tests.conftest import ROOT, tiny_dict
from tests.support.run_folders import hand_made_run, persona


def test_the_summary_states_question_numbers_data_cost_and_caveats(tmp_path: Path) -> None:
    params, found = hand_made_run(tmp_path)
    found_findings = report.run_findings(params, found)
    page = report.summary_html(params, found, report.load_optional(params.layout.metrics),
                               found_findings)
    assert "<b>Question.</b> Does fine-tuning <code>SmolLM2-135M-Instruct</code>" in page
    assert "Measured on 3 benchmark personas over" in page
    assert "by the judge <code>judge-model</code>" in page
    rows = re.findall(r"<th>([^<]+)</th>\s*<td>([^<]+)</td>", page)
    assert ("base", "1.000 [1.000, 1.000]") in rows and ("dpo − base", "+0.000 [+0.000, +0.000]") \
        in rows
    assert "7 training personas and 3 benchmark personas" in page
    assert "40 LLM requests sent and 2 answered from the cache, 1,234 tokens, $0.01" in page
    assert "wall time 2 min 05 s (stages 00-05, one aloe run)" in page  # the report left out
    assert f"<code>{manifest.commit_label(found)}</code>" in page
    caveats = page[page.index("class='caveats'"):]
    assert "every one of the 18 scored replies a 1" in caveats
    assert "Only 3 benchmark personas" in caveats


def test_no_machine_path_and_the_parameters_collapsed(tmp_path: Path) -> None:
    params, found = hand_made_run(tmp_path)
    shown = (report.run_facts_html(params, found) + report.parameters_html(found)
             + report.summary_html(params, found, None, []))
    assert str(tmp_path) not in shown and "/tmp/" not in shown
    assert "…/mine.yaml" in shown and "judge-model via http://127.0.0.1:8000/v1" in shown
    details = shown[shown.index("<details><summary>Parameters as resolved"):]
    row = r"<th[^>]*>{}</th><td[^>]*>{}</td>"
    assert re.search(row.format("dpo.trainer.beta", "0.1"), details)  # a default, as resolved
    assert re.search(row.format("run.output_dir", "…/outputs"), details)
    models = re.search(row.format("evaluation.models", "(.*?)"), details)[1]
    assert "None" not in models and '"adapter": null' in html.unescape(models)


def test_tables_speak_in_units() -> None:
    assert report.duration(45) == "45 s" and report.duration(3725) == "1 h 02 min"
    metrics = summarise({"base": [{"model": "base", "persona_id": "p", "turn": 1,
                                   "score": None}, {"model": "base", "persona_id": "p",
                                                    "turn": 2, "score": 4}]}, n_boot=20)
    table = tables.metrics_table(metrics)
    assert list(table.columns) == ["personas", "turns", "mean AL (1-5)", "IR (per turn)",
                                   "N-IR (per turn)", "N-R²", "no score",
                                   "cut at the token limit", "bootstrap units"]
    assert table.loc["base", "no score"] == "50%"


def test_wall_time_adds_up_every_aloe_run_as_the_request_counts_do(tmp_path: Path) -> None:
    """The request counts add up every session of the run; the wall time does too, and says
    so (the report's own stage left out)."""
    params, found = hand_made_run(tmp_path)
    timings = read_json(params.layout.timings)
    timings["earlier"] = [{"stages": [{"notebook": "01_personas", "seconds": 300},
                                      {"notebook": "06_report", "seconds": 50}]}]
    write_json(params.layout.timings, timings)
    page = report.summary_html(params, found, None, [])
    assert "estimated, over every invocation of the run; wall time 7 min 05 s (stages 00-05, " \
           "summed over 2 aloe runs; the last took 2 min 05 s)" in page


def test_runner_json_keeps_every_aloe_runs_stage_times(tmp_path: Path) -> None:
    """Each `aloe run` rewrites runner.json after every stage; an earlier invocation's stage
    times move under `earlier` (once), so that the report can add them all up."""
    from aloe.operations.runner import RunResult, StageResult, _save_timings

    params, _ = hand_made_run(tmp_path)
    layout = params.layout
    layout.timings.unlink()
    first = RunResult(layout, [StageResult("01_personas", 300.0, tmp_path / "1.ipynb")],
                      started=1.0)
    _save_timings(first)
    first.stages.append(StageResult("02_conversations", 20.0, tmp_path / "2.ipynb"))
    _save_timings(first)  # the same invocation again: nothing moves
    _save_timings(RunResult(layout, [StageResult("01_personas", 5.0, tmp_path / "1.ipynb")],
                            started=2.0))
    assert report.stage_times(layout) == {"wall_s": 325.0, "invocations": 2, "last_s": 5.0,
                                          "stages": ["01", "02"]}
    assert len(read_json(layout.timings)["earlier"]) == 1


def test_the_budget_table_has_words_not_none_or_snake_case(tmp_path: Path) -> None:
    params, _ = hand_made_run(tmp_path)
    for file, prefix in ((params.layout.personas, "t"), (params.layout.benchmark, "p")):
        write_records(file, [{"id": f"{prefix}{i}", "profile": "a nurse", "personality": "calm"}
                             for i in range(3)])
    table = spend.spend_table(params)
    assert list(table.columns) == ["estimated (USD)", "spent (USD)", "requests sent",
                                   "budget (USD)"]
    shown = table.to_html()
    assert "None" not in shown and "NaN" not in shown and "_usd" not in shown
    assert table.loc["total", "budget (USD)"] == "none set"
    assert table.loc["evaluate", "requests sent"] == 40


def test_what_the_run_holds_has_one_header_row(tmp_path: Path) -> None:
    params, _ = hand_made_run(tmp_path)
    head = report.counts_table(params.layout).to_html().split("<tbody>")[0]
    assert head.count("<tr") == 1 and "<th>product</th>" in head and "<th>count</th>" in head


def test_the_verdict_legend_explains_only_verdicts_the_run_can_give() -> None:
    """A judge asked once never gives `inconsistent`: neither the legend nor the title
    speaks of it; a run whose two orders disagreed explains it."""
    import pandas as pd

    from aloe.presentation import plots

    once = pd.DataFrame({"conversation_id": ["c1", "c2", "c1", "c2"], "turn": [1, 1, 2, 2],
                         "preferred": ["hinted", "plain", "hinted", "hinted"]})
    figure = plots.plot_verdicts(once)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == ["hinted", "plain"] and "orders" not in figure.axes[0].get_title()
    twice = once.assign(preferred=["hinted", "inconsistent", "plain", "hinted"])
    figure = plots.plot_verdicts(twice)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == ["hinted", "plain", "inconsistent"]
    assert "inconsistent: the two orders disagreed" in figure.axes[0].get_title()


def test_the_title_comes_from_the_runs_name(tmp_path: Path) -> None:
    """`aloe run params/tiny.yaml --run-name beta05` is no "tiny run"."""
    data = tiny_dict(tmp_path)
    data["run"]["name"] = "beta05"
    params = params_from_dict(data)
    page = report.summary_html(params, {}, None, [])
    heading = re.search(r"<h1>(.*?)</h1>", page)[1]
    assert "beta05" in heading and "tiny run" not in heading
    assert heading == params.report.heading(params.run.name)
    data["report"] = {"title": "Ablation {run}: beta 0.5"}
    assert params_from_dict(data).report.heading("beta05") == "Ablation beta05: beta 0.5"


def test_a_tree_turn_continued_by_the_reply_the_judge_did_not_prefer_says_why() -> None:
    from aloe.presentation.conversation_views import render_tree_html

    def turn(number: int, preferred: str, continued: str) -> dict:
        return {"turn": number, "user": "hi", "inferred": {"profile": "p", "personality": "q"},
                "hinted": "a", "plain": "b", "continued_with": continued,
                "verdict": {"preferred": preferred, "rule": "single_random"}}

    record = {"id": "conv-1", "persona": {"id": "x", "profile": "p", "personality": "q"},
              "turns": [turn(1, "hinted", "hinted"), turn(2, "hinted", "plain")]}
    page = render_tree_html(record)
    assert page.count("drawn at random") == 1
    assert page.index("drawn at random") > page.index("Turn 2")


def test_notebooks_print_no_machine_path(tmp_path: Path) -> None:
    """Each stage notebook's first line names the parameter file and the run folder as the
    report does (relative to the project, `…/name` outside it), never as a machine path."""
    import nbformat

    params = params_from_dict(tiny_dict(tmp_path), source=str(tmp_path / "params" / "x.yaml"))
    line = manifest.stage_line(params)
    assert str(tmp_path) not in line and line.startswith("profile: …/x.yaml")
    assert line.endswith("run folder: …/tiny")
    inside = params_from_dict({**tiny_dict(tmp_path), "run": {"name": "r", "output_dir":
                                                              str(ROOT / "outputs")}},
                              source=str(ROOT / "params" / "tiny.yaml"))
    assert manifest.stage_line(inside) == "profile: params/tiny.yaml  ->  run folder: outputs/r"
    policy = f"{ROOT}/outputs/models/SmolLM2-135M-Instruct (0.13B parameters); 12 tokens/s"
    assert manifest.shown_text(policy) == ("outputs/models/SmolLM2-135M-Instruct (0.13B "
                                           "parameters); 12 tokens/s")
    assert manifest.shown_text(f"see {tmp_path}/x.yaml or https://example.org/a/b") == \
        "see …/x.yaml or https://example.org/a/b"
    raw = re.compile(r"print\(f[\"'][^\n]*\{(params\.(source|layout\.[^}]*)|base_model)\}"
                     r"|str\(result\.adapter_dir\)|print\(plan\.gpu\[\"policy\"\]\)")
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(notebook, as_version=4).cells:
            assert not raw.search(cell.source), f"{notebook.name} prints a machine path"


def test_a_bad_run_file_is_named_by_file_and_line_not_counted(tmp_path: Path) -> None:
    """The report reads every run file with its schema: a score off the protocol's scale, a
    persona without a profile, or a ledger entry with a negative count is refused with the
    file and line, never counted or averaged."""
    params, _ = hand_made_run(tmp_path)
    layout = params.layout
    write_records(layout.eval_records("base"), [{"model": "base", "persona_id": "p0", "turn": k,
                                                 "score": 1} for k in (1, 2)])
    assert [r["score"] for r in report.evaluation_records(layout, ["base"])] == [1, 1]
    good = layout.eval_records("base").read_text()
    layout.eval_records("base").write_text(good.replace('"score": 1}', '"score": 99}', 1))
    with pytest.raises(DataError, match=rf"{re.escape(str(layout.eval_records('base')))}:1: .*99"):
        report.evaluation_records(layout, ["base"])
    with pytest.raises(DataError, match="base.jsonl:1:"):
        report.product_counts(layout)
    layout.eval_records("base").write_text(good)
    write_records(layout.benchmark, [persona("p0"), {"id": "p1", "personality": "calm"}])
    with pytest.raises(DataError, match=r"benchmark.jsonl:2: .*without a profile"):
        report.product_counts(layout)


def test_a_bad_ledger_entry_is_named_by_file_and_line(tmp_path: Path) -> None:
    params, _ = hand_made_run(tmp_path)
    append_record(params.layout.usage_history, {"stage": "sft", "started": 2.0, "roles": {},
                                                "totals": {"requests": -3}})
    with pytest.raises(DataError, match=r"history.jsonl:2: totals: requests -3 is not a count"):
        load_usage_history(params.layout)
