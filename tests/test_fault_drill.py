"""The stages' fault drill (bench/fault_drill.py, issue 27) kept from rotting: one stage, two
kinds of bad answer, one rate, through the script as a person runs it. The stage runs against
the stub server (tests/support/stub_server.py) behind the fault proxy, because no real server
can be told to answer badly; what is checked is the harness and the stage's refusal."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

from aloe.core.errors import IncompleteStageError
from tests.conftest import ROOT
from tests.support.faults import FAULTS

SCRIPT = ROOT / "bench" / "fault_drill.py"


def _drill() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fault_drill", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fault_drill", module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_the_drill_runs_a_stage_and_names_every_refusal() -> None:
    kinds = "a 401,a body cut short"
    done = subprocess.run([sys.executable, str(SCRIPT), "--stages", "conversations",
                           "--kinds", kinds, "--rates", "1.0", "--messages"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("conversations ")]
    assert len(rows) == 2 and all("refused, named" in row for row in rows), done.stdout
    assert FAULTS["a 401"].cause in done.stdout and FAULTS["a body cut short"].cause in \
        done.stdout
    assert "2 runs (seed 0): 2 refused, named" in done.stdout


def test_a_refusal_short_of_role_server_or_cause_is_a_defect() -> None:
    drill = _drill()
    url = "http://127.0.0.1:9/v1"
    named = (f"1 of 4 conversations could not finish; first: conv-00000: role 'user' (model stub"
             f" at {url}): HTTP 401: Error code: 401 - Incorrect API key")
    assert drill.classify(IncompleteStageError(named), "a 401", url, {}, {})[0] == \
        "refused, named"
    for short in (named.replace(url, "a server"), named.replace("role 'user'", "the user"),
                  named.replace("Incorrect API key", "refused"), named + "\nTraceback"):
        assert drill.classify(IncompleteStageError(short), "a 401", url, {}, {})[0] == "DEFECT"
    assert drill.classify(KeyError("choices"), "a 401", url, {}, {})[0] == "DEFECT"
    lost = drill.classify(None, "a 401", url, {"x.jsonl": "3 records, 1"},
                          {"x.jsonl": "4 records, 2"})
    assert lost[0] == "DEFECT" and "without faults" in lost[1]
