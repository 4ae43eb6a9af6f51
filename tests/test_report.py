"""The report's summary, facts and tables on a hand-made run folder: the headline numbers with
intervals and the differences over the base, data, cost and time, the caveats, the commit,
the resolved parameters collapsed, human labels, and never a machine path."""

from __future__ import annotations

import re
from pathlib import Path

from aloe import manifest, report
from aloe.config import params_from_dict
from aloe.metrics import summarise
from aloe.records import write_json, write_records
from tests.conftest import tiny_dict


def hand_made_run(tmp_path: Path):
    data = tiny_dict(tmp_path)
    machine_model = str(tmp_path / "models" / "judge-model")
    data["roles"]["judge"].update(model=machine_model, base_url="http://127.0.0.1:8000/v1")
    params = params_from_dict(data, source=str(tmp_path / "params" / "mine.yaml"))
    layout = params.layout
    by_model = {m: [{"model": m, "persona_id": f"p{i}", "turn": k, "score": 1}
                    for i in range(3) for k in (1, 2)] for m in ("base", "sft", "dpo")}
    write_json(layout.metrics, summarise(by_model, n_boot=50, models=["base", "sft", "dpo"]))
    write_records(layout.personas, [{"id": f"t{i}"} for i in range(7)])
    write_records(layout.benchmark, [{"id": f"p{i}"} for i in range(3)])
    write_json(layout.timings, {"stages": [{"notebook": "00_preflight", "seconds": 30},
                                           {"notebook": "05_evaluate", "seconds": 95},
                                           {"notebook": "06_report", "seconds": 999}]})
    write_records(layout.usage_history, [{"stage": "evaluate", "roles": {}, "totals": {
        "requests": 40, "cache_hits": 2, "prompt_tokens": 1000, "completion_tokens": 234,
        "cost_usd": 0.0123}}])
    manifest.write(params, str(tmp_path / "params" / "mine.yaml"), ["00_preflight"])
    return params, manifest.read(layout)


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
    assert "wall time 2 min 05 s (stages 00-05 of the last aloe run)" in page  # report left out
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


def test_tables_speak_in_units() -> None:
    assert report.duration(45) == "45 s" and report.duration(3725) == "1 h 02 min"
    metrics = summarise({"base": [{"model": "base", "persona_id": "p", "turn": 1,
                                   "score": None}, {"model": "base", "persona_id": "p",
                                                    "turn": 2, "score": 4}]}, n_boot=20)
    table = report.metrics_table(metrics)
    assert list(table.columns) == ["personas", "turns", "mean AL (1-5)", "IR (per turn)",
                                   "N-IR (per turn)", "N-R²", "no score",
                                   "cut at the token limit", "bootstrap units"]
    assert table.loc["base", "no score"] == "50%"
