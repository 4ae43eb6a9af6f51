"""A budget that holds (run.budget_usd, run.stage_budget_usd): the stage stops before a request
would push the ledger past a ceiling, with exit 1 and one line; raising it resumes from the
cache; estimated and actual spend per stage side by side.

The stub server stands in for every model (a real process speaking the OpenAI protocol, with
the usage figures a hosted API returns), priced like a hosted API so that money is spent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aloe.core.config import params_from_dict
from aloe.core.records import read_records
from aloe.llm import budget, load_usage_history
from aloe.llm.budget import BudgetExceededError
from aloe.operations import spend
from aloe.stages import evaluation
from tests.conftest import ROOT
from tests.support.benchmarks import stub_dict, with_benchmark
from tests.support.stub_server import StubServer

PRICE = {"price_input_per_1m": 100.0, "price_output_per_1m": 400.0}  # dear, so that it adds up



def priced(tmp_path: Path, stub: StubServer, run: dict, **evaluation_keys) -> dict:
    data = stub_dict(tmp_path, stub, **evaluation_keys)
    for role in data["roles"].values():
        role.update(PRICE)
    data["run"].update(run)
    return data


def spent(params) -> float:
    return sum(e["totals"]["cost_usd"] for e in load_usage_history(params.layout))


def test_request_cost_is_an_upper_bound() -> None:
    messages = [{"role": "user", "content": "x" * 300}]  # 100 tokens at 3 characters a token
    assert budget.request_cost(messages, 50, 100.0, 400.0) == pytest.approx(
        (100 * 100.0 + 50 * 400.0) / 1e6)
    assert budget.stage_of("evaluate-served") == "evaluate"


def test_the_run_stops_before_passing_its_budget_and_resumes_when_raised(
        tmp_path, stub, reference_dir) -> None:
    free, _ = with_benchmark(priced(tmp_path / "free", stub, {}), reference_dir)
    evaluation.run_stage(free)
    full_cost = spent(free)
    assert full_cost > 0.02

    limit = round(full_cost / 3, 4)
    params, _ = with_benchmark(priced(tmp_path / "capped", stub, {"budget_usd": limit}),
                               reference_dir)
    with pytest.raises(BudgetExceededError) as stopped:
        evaluation.run_stage(params)
    message = str(stopped.value)
    assert "\n" not in message and message.startswith(f"budget: run.budget_usd ${limit:.4f}")
    assert spent(params) <= limit  # the ledger never passed the ceiling
    assert spent(params) > 0  # it stopped part way, not before starting
    done_before = len(read_records(params.layout.eval_records("a")))

    params.run.budget_usd = full_cost * 2
    summary = evaluation.run_stage(params)
    assert sum(p.turns_run for p in summary.progress.values()) == 24 - done_before
    assert spent(params) == pytest.approx(full_cost, rel=1e-6)  # nothing paid twice


def test_a_stage_budget_holds_and_the_model_under_test_counts_toward_it(
        tmp_path, stub, reference_dir) -> None:
    data = priced(tmp_path, stub, {"stage_budget_usd": {"evaluate": 0.3}})
    params, _ = with_benchmark(data, reference_dir)
    with pytest.raises(BudgetExceededError, match=r"run.stage_budget_usd.evaluate \$0.3000"):
        evaluation.run_stage(params)
    by_stage: dict[str, float] = {}
    for entry in load_usage_history(params.layout):
        stage = budget.stage_of(entry["stage"])
        by_stage[stage] = by_stage.get(stage, 0.0) + entry["totals"]["cost_usd"]
    assert 0 < by_stage["evaluate"] <= 0.3
    assert any(e["stage"] == "evaluate-a" for e in load_usage_history(params.layout))


def test_spend_table_puts_estimate_and_actual_side_by_side(tmp_path, stub,
                                                           reference_dir) -> None:
    params, _ = with_benchmark(priced(tmp_path, stub, {"budget_usd": 100.0}), reference_dir)
    evaluation.run_stage(params)
    table = spend.spend_table(params)
    assert list(table.columns) == ["estimated (USD)", "spent (USD)", "requests sent",
                                   "budget (USD)"]
    assert table.loc["evaluate", "spent (USD)"] == pytest.approx(spent(params), rel=1e-4)
    assert table.loc["evaluate", "estimated (USD)"] >= table.loc["evaluate", "spent (USD)"]
    assert table.loc["total", "budget (USD)"] == 100.0
    assert table.loc["evaluate", "budget (USD)"] == "none set"


def test_aloe_evaluate_over_budget_exits_1_with_one_line(tmp_path, stub,
                                                         reference_dir) -> None:
    data = priced(tmp_path, stub, {"budget_usd": 0.1})
    params, _ = with_benchmark(data, reference_dir)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "aloe", "evaluate", str(params_file)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "ALOE_ROOT": str(ROOT)})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("aloe:")]
    assert len(lines) == 1 and lines[0].startswith("aloe: budget: run.budget_usd $0.1000")
    assert "Traceback" not in result.stderr
    assert 0 < spent(params_from_dict(data)) <= 0.1


def test_aloe_run_reports_a_budget_stop_as_one_line(tmp_path) -> None:
    """Inside `aloe run` a stage runs in a notebook kernel; papermill hands back the kernel's
    error by name and value (as it does: `ename`, `evalue`), and the run says it in one line."""
    from aloe.operations.runner import _failure_message

    class KernelError(Exception):
        ename = "BudgetExceededError"
        evalue = "budget: run.budget_usd $1.0000 reached: $0.9990 spent, and the next request"
        exec_count = 7

    message = _failure_message(Path("notebooks/05_evaluate.ipynb"), tmp_path / "05.ipynb",
                               KernelError())
    assert message == ("stage 05_evaluate stopped: budget: run.budget_usd $1.0000 reached: "
                       "$0.9990 spent, and the next request")
