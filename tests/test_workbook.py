"""The whole workbook, end to end, as a user runs it (`aloe run`), and the failure drills.

One real run of every notebook against the real local model is shared by the tests of this
module. It goes through a fault-injecting proxy that fails 30% of the LLM requests (429, 500,
dropped connections), so the run itself is the drill "a whole tiny run through a faulty
network". The other drills (kill during stage 2 and stage 5, a truncated JSONL line, two runs
at once) work on copies of its run folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from aloe.records import read_records
from aloe.report import product_counts
from tests.conftest import ROOT, tiny_dict
from tests.support.browser import chromium_path, inspect_page
from tests.support.fault_proxy import FaultProxy

pytestmark = [pytest.mark.slow, pytest.mark.workbook]


@dataclass
class FinishedRun:
    root: Path  # a project folder of its own: params/, notebooks/ (linked), outputs/
    params_file: Path
    data: dict
    proxy: FaultProxy
    first: subprocess.CompletedProcess[str]

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def run_dir(self) -> Path:
        return self.outputs / self.data["run"]["name"]


def aloe_run(root: Path, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALOE_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "aloe.cli", "run", *args, "--quiet"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=timeout)


def start_aloe_run(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "ALOE_ROOT": str(root)}
    return subprocess.Popen([sys.executable, "-m", "aloe.cli", "run", *args, "--quiet"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL the runner and everything it started (kernels), as a crash would."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def usage_entries(run_dir: Path) -> list[dict]:
    return read_records(run_dir / "usage" / "history.jsonl")


def copy_run(run: FinishedRun, name: str, cache: str | None = None, **sections: dict) -> Path:
    """A copy of the finished run folder under another run name, with its own params file."""
    shutil.copytree(run.run_dir, run.outputs / name, ignore=shutil.ignore_patterns(".lock"))
    data = json.loads(json.dumps(run.data))
    data["run"]["name"] = name
    if cache:
        data["run"]["cache_path"] = cache
    for section, values in sections.items():
        data[section].update(values)
    path = run.root / "params" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, local_server) -> Iterator[FinishedRun]:
    root = tmp_path_factory.mktemp("workbook")
    (root / "params").mkdir()
    (root / "notebooks").symlink_to(ROOT / "notebooks")
    with FaultProxy(local_server.base_url, rate=0.3, seed=7) as proxy:
        data = tiny_dict(root)
        data["run"]["cache_path"] = str(root / "outputs" / "cache" / "llm.sqlite")
        for role in data["roles"].values():
            role.update(base_url=proxy.base_url, model=local_server.model, max_retries=10)
        params_file = root / "params" / "tiny.yaml"
        params_file.write_text(yaml.safe_dump(data, sort_keys=False))
        first = aloe_run(root, "params/tiny.yaml")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        yield FinishedRun(root, params_file, data, proxy, first)


# ------------------------------------------------------------------------------------------
# The run and its products
# ------------------------------------------------------------------------------------------
def test_every_stage_ran_through_a_faulty_network(finished: FinishedRun) -> None:
    executed = sorted(p.name for p in (finished.run_dir / "notebooks").glob("*.ipynb"))
    assert executed == sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert "total" in finished.first.stdout and "report.html" in finished.first.stdout
    assert finished.proxy.total_faults > 10  # the proxy really failed requests ...
    retries = sum(role["retries"] for entry in usage_entries(finished.run_dir)
                  for role in entry["roles"].values())
    failures = sum(role["failures"] for entry in usage_entries(finished.run_dir)
                   for role in entry["roles"].values())
    assert retries >= finished.proxy.total_faults and failures == 0  # ... and all were retried


def test_products_are_consistent_with_each_other(finished: FinishedRun) -> None:
    run_dir, data = finished.run_dir, finished.data
    profiles = {r["id"] for r in read_records(run_dir / "profiles.jsonl")}
    personalities = {r["id"] for r in read_records(run_dir / "personalities.jsonl")}
    personas = read_records(run_dir / "personas.jsonl")
    assert personas and all(p["profile_id"] in profiles and p["personality_id"] in personalities
                            for p in personas)
    assert len({p["id"] for p in personas}) == len(personas)

    conversations = read_records(run_dir / "conversations.jsonl")
    assert len(conversations) == data["conversations"]["n_conversations"]
    assert len({c["id"] for c in conversations}) == len(conversations)
    persona_ids = {p["id"] for p in personas}
    assert all(c["persona"]["id"] in persona_ids for c in conversations)
    assert all(len(c["turns"]) == data["conversations"]["turns"] for c in conversations)

    decided = sum(t["verdict"]["preferred"] in ("hinted", "plain")
                  for c in conversations for t in c["turns"])
    counts = product_counts(run_dir)
    sft_rows = counts.get("sft train examples", 0) + counts.get("sft validation examples", 0)
    dpo_rows = counts.get("dpo train examples", 0) + counts.get("dpo validation examples", 0)
    assert sft_rows == dpo_rows == decided > 0
    assert counts["sft adapter"] == counts["dpo adapter"] == 1

    benchmark = read_records(run_dir / "benchmark.jsonl")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for model in ("base", "sft", "dpo"):
        records = read_records(run_dir / "eval" / f"{model}.jsonl")
        assert len(records) == len(benchmark) * data["evaluation"]["turns"]
        assert len({(r["persona_id"], r["turn"]) for r in records}) == len(records)
    assert set(metrics["models"]) >= {"base", "sft", "dpo"}


def test_report_counts_match_the_files(finished: FinishedRun) -> None:
    html = (finished.run_dir / "report.html").read_text()
    counts = product_counts(finished.run_dir)
    assert counts["conversations"] > 0
    for product, count in counts.items():
        cell = re.compile(rf"<th>{re.escape(product)}</th>\s*<td>{count}</td>")
        assert cell.search(html), f"report does not show {product} = {count}"


def test_report_renders_in_headless_chromium(finished: FinishedRun) -> None:
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: `make test` installs it (make browser)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = inspect_page(finished.run_dir / "report.html")
    assert page.console_errors == [] and page.failed_loads == []
    assert page.title == finished.data["report"]["title"]
    assert len(page.images) >= 8  # pool, conversations, training, benchmark, usage figures
    for image in page.images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert "def " not in (finished.run_dir / "report.html").read_text()  # code is hidden


def test_rerun_sends_no_request_and_skips_training(finished: FinishedRun) -> None:
    before = len(usage_entries(finished.run_dir))
    rerun = aloe_run(finished.root, "params/tiny.yaml")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    new_entries = usage_entries(finished.run_dir)[before:]
    assert new_entries and sum(e["totals"]["requests"] for e in new_entries) == 0
    assert sum(e["totals"]["cache_hits"] for e in new_entries) > 0
    for stage in ("sft", "dpo"):
        log = (finished.run_dir / "notebooks" / f"0{3 if stage == 'sft' else 4}_{stage}.ipynb")
        assert "found finished" in log.read_text()


# ------------------------------------------------------------------------------------------
# Drills
# ------------------------------------------------------------------------------------------
def _kill_and_rerun(finished: FinishedRun, name: str, stages: str, progress_file: str,
                    remove: list[str], count) -> tuple[int, int]:
    """Run `stages` on a copy of the run with those products removed and a fresh cache; kill
    it once `progress_file` holds some work, rerun, and return (done before kill, after)."""
    cache = str(finished.outputs / f"cache-{name}" / "llm.sqlite")
    params_file = copy_run(finished, name, cache=cache)
    run_dir = finished.outputs / name
    for product in remove:
        target = run_dir / product
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    process = start_aloe_run(finished.root, str(params_file.relative_to(finished.root)),
                             "--stages", stages)
    wait_for(lambda: count(run_dir / progress_file) >= 1 or process.poll() is not None,
             timeout=900, what=f"first results in {progress_file}")
    assert process.poll() is None, "the stage finished before it could be killed"
    kill_group(process)
    done_before = count(run_dir / progress_file)
    rerun = aloe_run(finished.root, str(params_file.relative_to(finished.root)),
                     "--stages", stages)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return done_before, count(run_dir / progress_file)


def _lines(path: Path) -> int:
    return len(read_records(path)) if path.exists() else 0


def test_kill_during_stage_2_then_rerun(finished: FinishedRun) -> None:
    before, after = _kill_and_rerun(finished, "killed2", "2", "conversations.jsonl",
                                    ["conversations.jsonl", "conversations_summary.json",
                                     "data"], _lines)
    run_dir = finished.outputs / "killed2"
    records = read_records(run_dir / "conversations.jsonl")
    assert 1 <= before < after == finished.data["conversations"]["n_conversations"]
    assert len({r["id"] for r in records}) == len(records)  # nothing twice
    # the rerun answered every request of the conversations finished before the kill from
    # the cache: it hit the cache at least once per such conversation and turn
    rerun_usage = usage_entries(run_dir)[-1]
    assert rerun_usage["stage"] == "conversations"


def test_kill_during_stage_5_then_rerun(finished: FinishedRun) -> None:
    before, after = _kill_and_rerun(finished, "killed5", "5", "eval/base.jsonl",
                                    ["eval", "metrics.json"], _lines)
    run_dir = finished.outputs / "killed5"
    benchmark = read_records(run_dir / "benchmark.jsonl")
    turns = finished.data["evaluation"]["turns"]
    assert 1 <= before <= after == len(benchmark) * turns
    for model in ("base", "sft", "dpo"):
        records = read_records(run_dir / "eval" / f"{model}.jsonl")
        keys = [(r["persona_id"], r["turn"]) for r in records]
        assert len(keys) == len(set(keys)) == len(benchmark) * turns  # nothing lost or twice


def test_truncated_and_corrupt_jsonl_are_caught(finished: FinishedRun) -> None:
    params_file = copy_run(finished, "damaged")
    path = finished.outputs / "damaged" / "conversations.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 40])  # a crash in the middle of the last append
    rerun = aloe_run(finished.root, str(params_file.relative_to(finished.root)), "--stages", "2")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    records = read_records(path)
    assert len(records) == finished.data["conversations"]["n_conversations"]  # redone, once
    assert len({r["id"] for r in records}) == len(records)

    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"  # damage in the middle is never data
    path.write_text("".join(lines))
    broken = aloe_run(finished.root, str(params_file.relative_to(finished.root)), "--stages", "2")
    assert broken.returncode == 1
    assert "02_conversations" in broken.stderr and "conversations.jsonl:2" in broken.stderr


def test_two_runs_at_once(finished: FinishedRun) -> None:
    """Two different run names at the same time do not interfere; the same name is refused
    while the first run holds its folder."""
    names = ["left", "right"]
    files = [copy_run(finished, name) for name in names]
    for name in names:
        for product in ("personas.jsonl", "profiles.jsonl", "personalities.jsonl",
                        "benchmark.jsonl"):
            (finished.outputs / name / product).unlink()
    runs = [start_aloe_run(finished.root, str(f.relative_to(finished.root)), "--stages", "1")
            for f in files]
    lock = finished.outputs / "left" / ".lock"
    wait_for(lambda: lock.exists() and "pid" in lock.read_text(), 120, "the first run's lock")
    same = aloe_run(finished.root, str(files[0].relative_to(finished.root)), "--stages", "1")
    assert same.returncode == 2 and "is in use by pid" in same.stderr
    for process in runs:
        assert process.wait(timeout=900) == 0, process.stderr.read()[-3000:]
    original = read_records(finished.run_dir / "personas.jsonl")
    for name in names:
        assert read_records(finished.outputs / name / "personas.jsonl") == original
