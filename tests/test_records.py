"""JSONL records: a crash mid-write is repaired, a bad line elsewhere names file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from aloe.records import DataError, append_records, read_records, write_records


def test_append_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    append_records(path, [{"id": 1}, {"id": 2}])
    append_records(path, [{"id": 3, "text": "naïve"}])
    assert [r["id"] for r in read_records(path)] == [1, 2, 3]


def test_truncated_last_line_is_repaired(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "r.jsonl"
    write_records(path, [{"id": 1}, {"id": 2}])
    with open(path, "a") as handle:
        handle.write('{"id": 3, "te')  # a crash mid-write
    with pytest.raises(DataError, match=r"r\.jsonl:3: truncated last line"):
        read_records(path, repair=False)
    assert [r["id"] for r in read_records(path)] == [1, 2]
    assert "dropped the truncated line 3" in capsys.readouterr().err
    append_records(path, [{"id": 3}])  # appending after the repair gives whole lines again
    assert [r["id"] for r in read_records(path)] == [1, 2, 3]


def test_bad_line_in_the_middle_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1}\nnot json\n{"id": 3}\n')
    with pytest.raises(DataError, match=r"r\.jsonl:2: not a JSON record"):
        read_records(path)
    path.write_text('{"id": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"r\.jsonl:2: expected a JSON object"):
        read_records(path)
