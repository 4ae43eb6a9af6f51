"""Live progress: a stage's reports are throttled and atomic, the runner's line is rewritten in
place on a terminal and printed as plain lines elsewhere, and `aloe run` shows a real
notebook's progress while papermill executes it (`--quiet` shows none)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from aloe.core.progress import Monitor, Reporter, format_line, read_state
from tests.conftest import tiny_dict


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reports_are_throttled_but_the_first_and_forced_ones_are_written(tmp_path: Path
                                                                        ) -> None:
    path = tmp_path / "progress.json"
    live = Reporter(path, "conversations", total=100, interval=60)
    live.update(10, ["5 requests"])
    assert read_state(path)["done"] == 10  # the first report is always written
    live.update(11, ["6 requests"])
    assert read_state(path)["done"] == 10  # within the interval: not written
    live.update(12, ["7 requests"], force=True)
    state = read_state(path)
    assert state["done"] == 12 and state["details"] == ["7 requests"] and state["total"] == 100
    assert not [p for p in tmp_path.iterdir() if p.name != "progress.json"]  # no temp left


def test_the_eta_comes_from_this_sessions_rate(tmp_path: Path) -> None:
    live = Reporter(tmp_path / "p.json", "turns", total=40, interval=0)
    live.update(10)  # found done: not part of the rate
    time.sleep(0.2)
    live.update(20)
    eta = read_state(tmp_path / "p.json")["eta_s"]
    assert 0.1 < eta < 1.0  # 10 turns in ~0.2 s, 20 left: ~0.4 s


def test_the_line_reads_like_the_issue_asks() -> None:
    state = {"done": 1240, "total": 3000, "unit": "conversations", "eta_s": 38 * 60,
             "details": ["7,800 requests", "$12.40"]}
    line = format_line("02_conversations", state, elapsed=75)
    assert line == ("02_conversations 1,240/3,000 conversations · 7,800 requests · $12.40 · "
                    "ETA 38 min · 1:15")
    assert format_line("00_preflight", None, elapsed=3) == "00_preflight · 0:03"


def test_a_terminal_gets_one_line_rewritten_in_place(tmp_path: Path) -> None:
    path, out = tmp_path / "progress.json", Terminal()
    with Monitor(path, "05_evaluate", out, poll=0.05):
        live = Reporter(path, "turns", total=8, interval=0)
        for done in range(1, 5):
            live.update(done, [f"turn {done}/8"])
            time.sleep(0.15)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, ended once
    assert text.count("\r") >= 4 and "05_evaluate 4/8 turns · turn 4/8" in text
    assert not path.exists()  # the next stage starts from nothing


def test_a_log_gets_plain_lines_no_more_often_than_asked(tmp_path: Path) -> None:
    path, out = tmp_path / "progress.json", io.StringIO()
    with Monitor(path, "03_sft", out, poll=0.05, plain_interval=0.3):
        live = Reporter(path, "steps", total=20, interval=0)
        for step in range(1, 21):
            live.update(step, ["loss 1.000"])
            time.sleep(0.05)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert 2 <= len(lines) <= 6, lines  # ~1 s of updates, one line per 0.3 s, and the last
    assert lines[-1].startswith("03_sft 20/20 steps · loss 1.000")


def test_a_stale_report_from_before_the_stage_is_not_shown(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    path.write_text(json.dumps({"done": 3, "total": 9, "unit": "x", "updated": 1.0}))
    assert read_state(path, since=time.time()) is None


def _project(tmp_path: Path) -> tuple[Path, Path]:
    """A project whose only notebook reports progress the way the stages do."""
    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    (root / "notebooks").mkdir()
    parameters = nbformat.v4.new_code_cell("params_file = None\nrun = None")
    parameters.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(textwrap.dedent("""
        import time
        from aloe.core.config import load_params
        from aloe.core.progress import reporter
        params = load_params(params_file)
        live = reporter(params.layout.progress, "items", 6)
        for done in range(1, 7):
            time.sleep(0.6)
            live.update(done, [f"{done * 10} requests"], force=True)
    """))
    notebook = nbformat.v4.new_notebook(cells=[parameters, body], metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    nbformat.write(notebook, root / "notebooks" / "01_fake.ipynb")
    data = tiny_dict(tmp_path)
    for role in data["roles"].values():  # no local server: nothing here asks a role
        role["base_url"] = "http://127.0.0.1:9/v1"
    params = root / "params" / "p.yaml"
    params.write_text(yaml.safe_dump(data))
    return root, params


@pytest.mark.slow
def test_aloe_run_shows_a_notebooks_progress_while_it_runs(tmp_path: Path) -> None:
    root, params = _project(tmp_path)
    env = {**os.environ, "ALOE_ROOT": str(root)}
    run = [sys.executable, "-m", "aloe", "run", str(params), "--stages", "1"]
    shown = subprocess.run(run, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    lines = [line for line in shown.stdout.splitlines()
             if line.startswith("01_fake ") and "items" in line]
    assert lines and lines[-1].startswith("01_fake 6/6 items · 60 requests"), shown.stdout
    assert any("/6 items" in line and not line.startswith("01_fake 6/6")
               for line in lines)  # while running
    quiet = subprocess.run([*run, "--quiet"], cwd=root, env=env, capture_output=True,
                           text=True, timeout=300)
    assert quiet.returncode == 0 and "01_fake 6/6" not in quiet.stdout
