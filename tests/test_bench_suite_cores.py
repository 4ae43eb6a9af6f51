"""bench/suite_cores.py: the CPU work of a command and its floor on this machine's cores (the
suite itself is measured by hand: it takes 25 minutes, docs/development.md has its figures)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BENCH = str(ROOT / "bench")
sys.path.insert(0, BENCH)  # bench/ is not a package: suite_cores imports end_to_end beside it
try:
    import suite_cores
finally:
    sys.path.remove(BENCH)

needs_proc = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat")
SPIN = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < {s}: pass\n"


@needs_proc
def test_a_spinning_child_is_counted_and_its_status_passed_on() -> None:
    """A child spinning one core for 1.5 s and exiting 3: at least about 1.2 core-seconds
    (what else the machine runs can only add), the floor those spread over every core."""
    code, use = suite_cores.measure(
        [sys.executable, "-c", SPIN.format(s=1.5) + "raise SystemExit(3)"], every=0.1)
    assert code == 3
    assert use.core_seconds is not None and 1.2 <= use.core_seconds <= use.cores * use.wall + 1
    assert use.floor == pytest.approx(use.core_seconds / use.cores)
    assert "NOT within reach" in suite_cores.report(use, target=0.1)
    assert ": within reach" in suite_cores.report(use, target=1e6)


def test_the_command_is_required_and_a_missing_one_is_named(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        suite_cores.main([])
    assert exit_.value.code == 2 and "-- make test" in capsys.readouterr().err
    assert suite_cores.main(["--", "no-such-command-here"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'no-such-command-here'" in err and len(err.splitlines()) == 1
