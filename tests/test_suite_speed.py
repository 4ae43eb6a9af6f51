"""How the suite is kept fast (docs/development.md, "How the suite is organised for speed"):
scripts/slowest_tests.py writes the page's table of the slowest tests from pytest's own
`--durations` report, slowest first, replacing only what lies between the page's markers; and
under pytest-xdist the conftest hands out the modules with the most slow tests first."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, heaviest_modules_first

SCRIPT = ROOT / "scripts" / "slowest_tests.py"
spec = importlib.util.spec_from_file_location("slowest_tests", SCRIPT)
slowest = importlib.util.module_from_spec(spec)
sys.modules["slowest_tests"] = slowest  # its dataclass looks its module up
spec.loader.exec_module(slowest)

LOG = """\
........ [100%]
============================= slowest 4 durations ==============================
12.50s call     tests/test_b.py::test_two[param-1]
459.70s setup    tests/test_workbook.py::test_every_stage_ran_through_a_faulty_network
0.30s teardown tests/test_a.py::test_one
3.00s call     tests/test_a.py::test_one
=========================== short test summary info ============================
1.00s is not a duration line
"""


def test_durations_are_read_slowest_first_with_phase_and_test() -> None:
    durations = slowest.read_durations(LOG)
    assert [(d.seconds, d.phase) for d in durations] == [
        (459.7, "setup"), (12.5, "call"), (3.0, "call"), (0.3, "teardown")]
    assert durations[1].test == "tests/test_b.py::test_two[param-1]"


def test_the_table_holds_the_top_n_and_their_total() -> None:
    text = slowest.table(slowest.read_durations(LOG), top=2, note="measured here")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == [
        "| 1 | 459.7 | setup | `tests/test_workbook.py::test_every_stage_ran_through_a_faulty_"
        "network` |", "| 2 | 12.5 | call | `tests/test_b.py::test_two[param-1]` |"]
    assert text.startswith("measured here") and "These 2 take 472 s together." in text


def test_write_replaces_only_between_the_markers(tmp_path: Path) -> None:
    log, page = tmp_path / "pytest.log", tmp_path / "page.md"
    log.write_text(LOG)
    page.write_text(f"before\n{slowest.SLOWEST_BEGIN}\nold table\n{slowest.SLOWEST_END}\nafter\n")
    assert slowest.main([str(log), "--top", "1", "--write", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("before\n") and text.endswith(f"{slowest.SLOWEST_END}\nafter\n")
    assert "old table" not in text and "459.7" in text and "12.5" not in text
    other = tmp_path / "other.log"  # a suite run in two parts: one table of both
    other.write_text("600.00s call     tests/test_c.py::test_three\n")
    assert slowest.main([str(log), str(other), "--top", "2", "--write", str(page)]) == 0
    rows = [line for line in page.read_text().splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[2].strip() for row in rows] == ["600.0", "459.7"]


def test_a_log_without_durations_or_a_page_without_markers_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, page = tmp_path / "pytest.log", tmp_path / "page.md"
    log.write_text("no durations here\n")
    assert slowest.main([str(log)]) == 1
    assert "no `--durations` lines" in capsys.readouterr().err
    log.write_text(LOG)
    page.write_text("no markers\n")
    assert slowest.main([str(log), "--write", str(page)]) == 1
    assert "add the two markers" in capsys.readouterr().err and page.read_text() == "no markers\n"


def test_the_development_guide_holds_a_table_written_by_the_script() -> None:
    page = (ROOT / "docs" / "development.md").read_text()
    start, end = page.find(slowest.SLOWEST_BEGIN), page.find(slowest.SLOWEST_END)
    assert 0 <= start < end, "docs/development.md lost the slowest-tests markers"
    rows = [line for line in page[start:end].splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 15
    seconds = [float(row.split("|")[2]) for row in rows]
    assert seconds == sorted(seconds, reverse=True)


class _Item:
    """What heaviest_modules_first reads of a pytest item: its node id and its slow mark."""

    def __init__(self, nodeid: str, slow: bool = False) -> None:
        self.nodeid, self.slow = nodeid, slow

    def get_closest_marker(self, name: str) -> object | None:
        return object() if name == "slow" and self.slow else None


def test_modules_with_the_most_slow_tests_come_first_each_kept_whole() -> None:
    items = [_Item("tests/test_a.py::one"), _Item("tests/test_a.py::two"),
             _Item("tests/test_b.py::one", slow=True), _Item("tests/test_b.py::two"),
             _Item("tests/test_c.py::one"),
             _Item("tests/test_workbook.py::one", slow=True),
             _Item("tests/test_workbook.py::two", slow=True)]
    ordered = [item.nodeid for item in heaviest_modules_first(items)]
    assert ordered == ["tests/test_workbook.py::one", "tests/test_workbook.py::two",
                       "tests/test_b.py::one", "tests/test_b.py::two",
                       "tests/test_a.py::one", "tests/test_a.py::two", "tests/test_c.py::one"]
