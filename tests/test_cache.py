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

from aloe.config import RoleConfig
from aloe.layout import RunLayout
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
    return subprocess.run([sys.executable, "-m", "aloe.cli", "cache", "check", str(params),
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
