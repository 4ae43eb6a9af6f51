"""The response cache when its file is damaged: one line that names the file and says the run's
products are intact, and `aloe cache check [--repair]` that verifies, repairs and compacts it
(real SQLite files, the real command in a subprocess)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aloe.core.config import RoleConfig
from aloe.core.layout import RunLayout
from aloe.llm import LLM
from aloe.llm.cache import CacheError, ResponseCache, check_cache, repair_cache
from tests.conftest import ROOT, tiny_dict

ANSWER = {"text": "hello", "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 1,
          "logprobs": None}


def _filled(path: Path, n: int, text: str = "hello") -> None:
    cache = ResponseCache(path)
    for i in range(n):
        cache.put(f"key-{i:05d}", {**ANSWER, "text": f"{text} {i}"})
    cache.close()


def _aloe_cache(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump(tiny_dict(tmp_path)))
    return subprocess.run([sys.executable, "-m", "aloe", "cache", "check", str(params),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ALOE_ROOT": str(ROOT)})


def test_a_cache_of_garbage_bytes_is_named_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "llm.sqlite"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CacheError) as error:
        ResponseCache(path)
    assert str(error.value) == (
        f"{path}: the response cache is damaged (file is not a database); the run's products "
        "are intact (the cache only saves requests): move it aside with `aloe cache check "
        "--repair PARAMS` (or mv it away) and run again")
    layout = RunLayout(run_dir=tmp_path / "run", cache_path=path)
    with pytest.raises(CacheError, match="the response cache is damaged"):  # what a stage meets
        LLM({"judge": RoleConfig()}, stage="test", layout=layout)


def test_cache_check_finds_a_damaged_file_and_repair_moves_it_aside(tmp_path: Path) -> None:
    path = tmp_path / "outputs" / "cache" / "llm.sqlite"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a database, just some bytes\n" * 200)
    checked = _aloe_cache(tmp_path)
    assert checked.returncode == 1 and checked.stderr == ""
    assert checked.stdout == (f"{path}: damaged: file is not a database; the run's products "
                              "are intact: run `aloe cache check --repair` to move it aside "
                              "(answers that can still be read are kept)\n")
    repaired = _aloe_cache(tmp_path, "--repair")
    assert repaired.returncode == 0, repaired.stderr
    aside = [p for p in path.parent.iterdir() if p.name.startswith("llm.sqlite.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a database")
    assert "moved it to llm.sqlite.damaged-" in repaired.stdout and "0 answers" in repaired.stdout
    again = _aloe_cache(tmp_path)
    assert again.returncode == 0 and again.stdout.startswith(f"{path}: sound: 0 answers")


def test_unreadable_answers_are_asked_again_found_and_deleted(tmp_path: Path, capsys) -> None:
    path = tmp_path / "llm.sqlite"
    _filled(path, 3)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE responses SET response = '{\"text\": \"cut' WHERE key = 'key-00001'")
    cache = ResponseCache(path)
    assert cache.get("key-00000")["text"] == "hello 0"
    assert cache.get("key-00001") is None  # a miss: the request is sent again and replaces it
    assert "the cached answer key-00001 is unusable (not valid JSON)" in capsys.readouterr().err
    cache.close()
    found = check_cache(path)
    assert (found.answers, found.bad_rows, found.ok) == (2, ["key-00001"], False)
    repaired = repair_cache(path)
    assert repaired.actions[0] == "deleted 1 unreadable answers" and repaired.answers == 2
    assert check_cache(path).ok


def test_repair_keeps_what_a_file_damaged_in_the_middle_still_holds(tmp_path: Path) -> None:
    path = tmp_path / "llm.sqlite"
    _filled(path, 2000, text="a longer answer " * 20)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with open(path, "r+b") as handle:  # overwrite a stretch of pages past the header
        handle.seek(size // 2)
        handle.write(os.urandom(16384))
    found = check_cache(path)
    assert not found.ok and found.problem
    repaired = repair_cache(path)
    assert "moved it to llm.sqlite.damaged-" in repaired.actions[0]
    assert check_cache(path).ok and 0 < check_cache(path).answers < 2000


# ------------------------------------------------------------------------------------------
# A repair never loses a sound cache; what is not damage is not treated as damage (issue 27)
# ------------------------------------------------------------------------------------------
def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_repair_that_cannot_write_leaves_the_damaged_cache_where_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new file is written first: if that fails (here sqlite reports a full disk part way,
    as it does on a full disk), nothing was moved and no empty cache took its place."""
    from aloe.llm import cache as cache_module
    from aloe.llm.cache import CacheUnavailable

    path = tmp_path / "llm.sqlite"
    _filled(path, 50)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = path.read_bytes()
    damaged = bytearray(before)
    damaged[100:116] = b"\xff" * 16  # the header's page count area: a damaged file
    path.write_bytes(bytes(damaged))
    assert check_cache(path).problem or check_cache(path).bad_rows
    real = cache_module._salvage

    def full_disk(old: Path, new: Path) -> int:
        real(old, new)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(cache_module, "_salvage", full_disk)
    with pytest.raises(CacheUnavailable) as error:
        repair_cache(path)
    assert "nothing was changed" in str(error.value) and "\n" not in str(error.value)
    assert path.read_bytes() == bytes(damaged)  # in place, untouched
    left = {p.name for p in tmp_path.iterdir()} - {"llm.sqlite-wal", "llm.sqlite-shm"}
    assert left == {"llm.sqlite"}  # no half-written new cache, nothing moved aside


def test_an_unreadable_file_is_not_called_damaged(tmp_path: Path) -> None:
    """A cache that cannot be opened just now (here: no permission to read) is reported as
    such and left alone: a repair must not move a sound cache aside."""
    import os

    from aloe.llm.cache import CacheUnavailable

    path = tmp_path / "llm.sqlite"
    _filled(path, 5)
    digest = _digest(path)
    if os.geteuid() == 0:  # root reads anything: take the folder away instead
        folder = tmp_path / "folder"
        folder.mkdir()
        with pytest.raises(CacheUnavailable, match="is a folder, not the response cache file"):
            repair_cache(folder)
        with pytest.raises(CacheError, match="is a folder, not the response cache file"):
            ResponseCache(folder)
    else:
        path.chmod(0)
        with pytest.raises(CacheUnavailable, match="nothing was changed"):
            repair_cache(path)
        path.chmod(0o644)
    assert _digest(path) == digest and check_cache(path).ok


def test_another_programs_database_is_neither_called_sound_nor_altered(tmp_path: Path) -> None:
    from aloe.llm.cache import CacheUnavailable

    path = tmp_path / "llm.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('mine')")
    digest = _digest(path)
    for action in (check_cache, repair_cache, ResponseCache):
        with pytest.raises(CacheUnavailable, match="not a response cache \\(tables: notes\\)"):
            action(path)
    assert _digest(path) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llm.sqlite"]
