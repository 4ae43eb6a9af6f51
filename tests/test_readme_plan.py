"""What a reader of the docs copies: the cost table of docs/cost.md is what `aloe plan
params/paper.yaml --json` says (scripts/readme_plan_table.py writes it), and the comparison
example's commands in docs/running.md name parameter files, options and runs that exist."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from aloe.core.config import load_params
from tests.conftest import ROOT
from tests.support.scripts import load_script

COST, RUNNING = ROOT / "docs" / "cost.md", ROOT / "docs" / "running.md"


@pytest.fixture(scope="module")
def table_script() -> ModuleType:
    return load_script("readme_plan_table")


def test_the_cost_table_is_aloe_plans(table_script: ModuleType) -> None:
    shown = table_script.readme_table(COST.read_text())
    made = table_script.table()
    assert shown == made, ("docs/cost.md's cost table is not `aloe plan params/paper.yaml`'s: "
                           "python scripts/readme_plan_table.py --write\n" + made)
    plan = table_script.plan_json()
    total = plan["total"]
    assert f"**{total['requests']:,}**" in shown
    assert f"**${total['forecast']['cost_usd']:,.2f}**" in shown
    assert f"**${total['ceiling']['cost_usd']:,.2f}**" in shown


def section(title: str) -> str:
    text = RUNNING.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def example_commands(text: str) -> list[list[str]]:
    """The commands of the section's first bash block, comments left out."""
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#", 1)[0]) for line in block.splitlines()
            if line.split("#", 1)[0].strip()]


def _option(words: list[str], name: str) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == name]


def test_the_comparison_example_names_what_exists(tmp_path: Path) -> None:
    """Each `aloe run` of the example names a parameter file that exists and options that
    `aloe plan` (which reads them the same way, offline) accepts; each run `aloe compare`
    names is one the example made."""
    commands = example_commands(section("Comparing runs"))
    runs, made = [c for c in commands if c[:2] == ["aloe", "run"]], set()
    assert len(runs) >= 2 and any(c[:2] == ["aloe", "compare"] for c in commands)
    for command in runs:
        params_file = command[2]
        assert (ROOT / params_file).is_file(), f"docs/running.md runs {params_file}: no such file"
        options = [w for name in ("--run-name", "--set") for value in _option(command, name)
                   for w in (name, value)]
        done = subprocess.run([sys.executable, "-m", "aloe", "plan", params_file, "--json",
                               *options, "--set", f"run.output_dir={tmp_path}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "ALOE_ROOT": str(ROOT)})
        assert done.returncode == 0, (command, done.stderr)
        name = _option(command, "--run-name") or [load_params(ROOT / params_file).run.name]
        made.add(name[0])
    for command in commands:
        if command[:2] != ["aloe", "compare"]:
            continue
        named = [w for w in command[2:] if not w.startswith("--")
                 and w not in _option(command, "--name") + _option(command, "--output-dir")]
        assert len(named) >= 2
        for run in named:
            assert Path(run).name in made and (run == Path(run).name
                                               or run == f"outputs/{run.split('/')[-1]}"), \
                f"aloe compare {run}: the example made no such run"
