"""JSONL records: a crash mid-write is repaired, a bad line elsewhere names file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from aloe.core.records import DataError, append_records, read_records, write_records


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


def test_a_live_append_seen_half_way_is_not_cut(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that catches a writer mid-append must not mistake the half line for a crash's
    leftover: it re-reads under the writers' lock and gets the whole record."""
    path = tmp_path / "r.jsonl"
    write_records(path, [{"id": 1}])
    whole = path.read_bytes()
    append_records(path, [{"id": 2, "text": "finished meanwhile"}])
    snapshots = iter([whole + b'{"id": 2, "te'])  # what the first read saw, mid-append
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes",
                        lambda self: next(snapshots, None) or real_read_bytes(self))
    assert [r["id"] for r in read_records(path)] == [1, 2]
    monkeypatch.undo()
    assert [r["id"] for r in read_records(path)] == [1, 2]  # nothing was cut from the file


FULL_DISK = """
import json, subprocess, sys
from pathlib import Path
from aloe.core.errors import DiskFullError
from aloe.core.records import append_records, read_records, write_json

disk = Path(sys.argv[1])
disk.mkdir(exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], check=True)
result = {}
records, kept = disk / "r.jsonl", 0
try:
    while True:
        append_records(records, [{"n": kept, "text": "x" * 700}])
        kept += 1
except DiskFullError as error:
    result["append"] = str(error)
result["records"] = [r["n"] for r in read_records(records, repair=False)]
result["kept"] = kept
(disk / "r.jsonl").unlink()
write_json(disk / "doc.json", {"small": True})
try:
    write_json(disk / "doc.json", {"big": "y" * 40000})
except DiskFullError as error:
    result["json"] = str(error)
result["doc"] = json.loads((disk / "doc.json").read_text())
result["files"] = sorted(p.name for p in disk.iterdir())
print(json.dumps(result))
"""


def test_a_full_disk_leaves_files_as_they_were_and_names_them(tmp_path: Path) -> None:
    """On a real 16 KiB tmpfs (a private mount namespace: nothing to mount on the host): an
    append that does not fit is cut back, a rewrite keeps the old file and no temporary one."""
    import json
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    disk = tmp_path / "disk"
    run = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c",
                          FULL_DISK, str(disk)], capture_output=True, text=True, timeout=120)
    if run.returncode != 0 and "mount" in run.stderr and "Traceback" not in run.stderr:
        pytest.skip(f"no private mount namespace here: {run.stderr.strip()[:200]}")
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    suffix = "; free some space and run again (finished work is kept)"
    assert result["append"] == f"no space left on device while writing {disk}/r.jsonl{suffix}"
    assert result["records"] == list(range(result["kept"])) and result["kept"] > 5
    assert result["json"] == f"no space left on device while writing {disk}/doc.json{suffix}"
    assert result["doc"] == {"small": True} and result["files"] == ["doc.json"]


def test_files_a_library_wrote_0600_follow_the_umask(tmp_path: Path) -> None:
    """safetensors writes 0600: an adapter folder copied to a shared place had one file its
    readers could not open (issue 27)."""
    import os

    from aloe.core.records import follow_umask

    (tmp_path / "sub").mkdir()
    for name in ("adapter_model.safetensors", "sub/tokenizer.json"):
        (tmp_path / name).write_text("x")
        (tmp_path / name).chmod(0o600)
    mask = os.umask(0o022)
    try:
        follow_umask(tmp_path)
    finally:
        os.umask(mask)
    assert {(p.stat().st_mode & 0o777) for p in tmp_path.rglob("*") if p.is_file()} == {0o644}


def test_a_live_append_seen_half_way_is_checked_once(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-read after a writer's half line must not show a schema that remembers ids the
    records it already saw: they are not written twice."""
    from aloe.core.schemas import conversation_check

    path = tmp_path / "conversations.jsonl"
    tree = {"id": "conv-00000", "index": 0, "turns": []}
    write_records(path, [tree])
    whole = path.read_bytes()
    append_records(path, [{**tree, "id": "conv-00001", "index": 1}])
    snapshots = iter([whole + b'{"id": "conv-00001", "ind'])
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes",
                        lambda self: next(snapshots, None) or real_read_bytes(self))
    assert [r["id"] for r in read_records(path, check=conversation_check())] == \
        ["conv-00000", "conv-00001"]


def test_a_line_nested_too_deeply_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DataError, match=r"r\.jsonl:2: not a JSON record \(nested too deeply\)"):
        read_records(path)
