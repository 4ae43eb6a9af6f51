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
from aloe.errors import DiskFullError
from aloe.records import append_records, read_records, write_json

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

    from aloe.records import follow_umask

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


# ------------------------------------------------------------------------------------------
# One schema per run file, held by its writer and every reader (issue 27)
# ------------------------------------------------------------------------------------------
def _schemas() -> dict[str, tuple]:
    """Per run file: its schema, a good record, and bad ones with what the refusal says."""
    from aloe import protocols, records

    probe = {"model": "base", "persona_id": "b0", "profile_id": "p0", "turn": 1,
             "statement": "You cook.", "truncated": False, "accuracy": 0.7,
             "raw_judgement": "7", "judge_attempts": 1, "shifted": False}
    measured = {"model": "base", "persona_id": "b0", "turn": 1, "revealed": 0.3,
                "revealed_raw": "3", "contradiction": False, "contradiction_raw": "No",
                "shifted": False}
    judged = {"model": "base", "persona_id": "b0", "turn": 1, "main_score": 4,
              "second_score": 3, "second_raw": "3", "second_attempts": 1}
    rating = {"kit": "k1", "rater": "ann", "item": "i1", "rating": 4, "model": "base",
              "persona_id": "b0", "profile_id": "p0", "turn": 1, "judge_score": 5}
    item = {"id": "profile-0001", "text": "He is a cook.", "source": "seed"}
    logged = {"pool": "profiles", "round": 0, "calls": 1, "samples": [0], "unusable": 0,
              "dropped_fragments": 0, "candidates": 4, "admitted": 2, "rejected": 2,
              "surplus": 0, "pool_size": 22, "admission_rate": 0.5, "unusable_replies": [],
              "dropped": []}
    candidate = {"pool": "profiles", "round": 0, "call": 0, "text": "He is a cook.",
                 "max_similarity": 0.4, "nearest_id": "profile-0003", "status": "admitted",
                 "id": "profile-0021"}
    nearest = {"benchmark_id": "bench-001", "nearest_train_id": "persona-01",
               "similarity": 0.61}
    tree = {"id": "conv-00000", "index": 0, "turns": [], "persona": {"id": "p0"}}
    aloe = protocols.get("aloe")
    return {
        "probes": (lambda: records.probe_check("base"), probe, [
            ({**probe, "turn": 2, "accuracy": 7},
             "accuracy 7 is not a number from 0 to 1 (or none)"),
            ({**probe, "turn": 2, "accuracy": float("nan")},
             "accuracy nan is not a number from 0 to 1 (or none)"),
            ({**probe, "turn": 2, "statement": ["You", "cook."]}, "statement is list, not text"),
            ({**probe, "model": "dpo"}, "model 'dpo' in the file of model 'base'"),
            ({**probe, "turn": 10**9}, "turn 1000000000 is not a turn number (1-1000)"),
            (probe, "the probe of persona 'b0' at turn 1 is written twice (first on line 1)")]),
        "simulator": (lambda: records.simulator_measure_check("base"), measured, [
            ({**measured, "turn": 2, "contradiction": "no"},
             "contradiction 'no' is not true or false (or none)"),
            ({**measured, "turn": 2, "revealed": -0.5},
             "revealed -0.5 is not a number from 0 to 1 (or none)"),
            ({k: v for k, v in measured.items() if k != "persona_id"},
             "persona_id None is not an id"),
            (measured, "the check of persona 'b0' at turn 1 is written twice (first on line "
                       "1)")]),
        "judge_check": (lambda: records.second_judge_check(aloe), judged, [
            ({**judged, "turn": 2, "second_score": 99},
             "second_score 99 is not on the aloe protocol's 1-5 scale"),
            ({**judged, "turn": 2, "main_score": "4"},
             "main_score '4' is not on the aloe protocol's 1-5 scale"),
            ({**judged, "turn": 2, "model": None}, "model None is not a model's name"),
            (judged, "the second judgement of model 'base', persona 'b0', turn 1 is written "
                     "twice (first on line 1)")]),
        "human_ratings": (lambda: records.human_rating_check([1, 2, 3, 4, 5]), rating, [
            ({**rating, "item": "i2", "rating": True},
             "rating True is not one of the kit's categories [1, 2, 3, 4, 5]"),
            ({**rating, "item": "i2", "rating": 9},
             "rating 9 is not one of the kit's categories [1, 2, 3, 4, 5]"),
            ({**rating, "item": "i2", "judge_score": 0},
             "judge_score 0 is not one of the kit's categories [1, 2, 3, 4, 5]"),
            ({**rating, "item": "i2", "rater": " "}, "rater ' ' is not text"),
            (rating, "the rating of item 'i1' by 'ann' is written twice (first on line 1)")]),
        "pool": (records.pool_item_check, item, [
            ({**item, "id": "profile-0002", "text": ""}, "pool item 'profile-0002' without a "
                                                         "text"),
            ({**item, "id": "profile-0002", "train_similarity": 3},
             "train_similarity 3 is not a number from -1 to 1 (or none)"),
            ({"text": "x", "source": "seed"}, "pool item without an id (text): id None"),
            (item, "pool item 'profile-0001' is written twice (first on line 1)")]),
        "rounds": (records.round_check, logged, [
            ({**logged, "round": 1, "admitted": "2"},
             "round 1 of pool 'profiles': admitted '2' is not a count"),
            ({**logged, "round": 1, "admitted": 5},
             "round 1 of pool 'profiles': admitted 5 of 4 candidates"),
            ({**logged, "round": -1}, "round -1 of pool 'profiles': round -1 is not a count"),
            (logged, "round 0 of pool 'profiles' is written twice (first on line 1)")]),
        "candidates": (records.candidate_check, candidate, [
            ({**candidate, "status": "maybe"},
             "status 'maybe' is not one of admitted, rejected, surplus"),
            ({**candidate, "max_similarity": "high"},
             "max_similarity 'high' is not a number from -1 to 1 (or none)")]),
        "leakage": (records.leakage_check, nearest, [
            ({**nearest, "benchmark_id": "bench-002", "similarity": None},
             "similarity None is not a number from -1 to 1"),
            (nearest, "benchmark persona 'bench-001' is written twice (first on line 1)")]),
        "conversations": (records.conversation_check, tree, [
            ({**tree, "id": "conv-00001", "index": -1},
             "conversation conv-00001: index -1 is not a position"),
            (tree, "conversation conv-00000 is written twice (first on line 1)")]),
    }


@pytest.mark.parametrize("name", ["probes", "simulator", "judge_check", "human_ratings", "pool",
                                  "rounds", "candidates", "leakage", "conversations"])
def test_a_run_files_schema_refuses_a_bad_value_when_written_and_when_read(
        tmp_path: Path, name: str) -> None:
    import json

    from aloe.records import SchemaError

    schema, good, bad_ones = _schemas()[name]
    path = tmp_path / f"{name}.jsonl"
    write_records(path, [good], check=schema())
    assert read_records(path, check=schema()) == [good]
    for bad, said in bad_ones:
        writer = schema()  # a writer's schema has seen the file it appends to
        read_records(path, check=writer)
        with pytest.raises(SchemaError) as refused:
            append_records(path, [bad], check=writer)
        assert str(refused.value) == (f"{path}: refusing to write a record that breaks its "
                                      f"schema ({said}); nothing was written")
        with pytest.raises(SchemaError):
            write_records(path, [good, bad], check=schema())
        assert read_records(path) == [good]  # neither write left anything
        path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(DataError) as error:
            read_records(path, check=schema())
        assert str(error.value) == (f"{path}:2: {said}; correct or remove the line (a rerun "
                                    "redoes what is removed)")
        write_records(path, [good])


def test_a_live_append_seen_half_way_is_checked_once(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-read after a writer's half line must not show a schema that remembers ids the
    records it already saw: they are not written twice."""
    from aloe.records import conversation_check

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
