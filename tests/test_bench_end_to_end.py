"""bench/end_to_end.py's reading of the machine's load (the run itself is measured by hand:
it takes minutes, docs/development.md has its figures)."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("end_to_end", ROOT / "bench" / "end_to_end.py")
end_to_end = importlib.util.module_from_spec(spec)
spec.loader.exec_module(end_to_end)

needs_proc = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat")


def spin(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


@needs_proc
def test_a_spinning_core_is_counted() -> None:
    """A core spun for a second reads as at least about one core busy (what else the machine
    runs can only add to it) and never more than the machine has."""
    with end_to_end.MachineLoad(every=0.05) as load:
        start = time.time()
        spin(1.0)
        end = time.time()
    busy = load.cores_busy(start, end)
    assert busy is not None and 0.8 < busy <= (os.cpu_count() or 1) + 0.2, busy
    assert [b for _, b in load.samples] == sorted(b for _, b in load.samples)


def test_the_load_table_lays_the_stages_end_to_end() -> None:
    """Each stage's span starts where the one before ended: a sampler that saw two cores busy
    in the first 10 s and none after gives the first stage 2.00 and the second 0.00."""
    load = end_to_end.MachineLoad()
    load.samples = [(100.0 + t, 2.0 * min(t, 10.0)) for t in range(0, 31)]
    table = end_to_end.load_table(load, 100.0, {"01_personas": 10.0, "02_conversations": 20.0})
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:]}
    assert rows["01_personas"] == ["10.0", "2.00", "20.0"]
    assert rows["02_conversations"] == ["20.0", "0.00", "0.0"]
    assert rows["all"] == ["stages", "30.0", "0.67", "20.0"]
