"""Text pools and the official ALOE files: reading real, slightly messy files (and URLs)
without losing a record, and the benchmark cross."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from aloe.core.records import DataError
from aloe.stages.pools import load_aloe_benchmark, read_text_pool


def test_read_text_pool_recovers_every_official_record(reference_dir: Path) -> None:
    profiles = read_text_pool(reference_dir / "profile.jsonl")
    assert len(profiles) == 331  # 330 lines: line 6 holds two strings run together
    assert profiles[5].startswith("He is a 37-year-old") and profiles[6].startswith("He is a 46")
    assert len(read_text_pool(reference_dir / "personality.jsonl")) == 71
    assert len(read_text_pool(reference_dir / "profile_eval.jsonl")) == 20  # no final newline
    assert len(read_text_pool(reference_dir / "personality_eval.jsonl")) == 7


def test_read_text_pool_is_robust_and_names_bad_lines(tmp_path: Path) -> None:
    good = tmp_path / "pool.jsonl"
    good.write_text('"one"\n\n"two"  "three"\n{"id": "x", "text": "four"}\n"five"')
    assert read_text_pool(good) == ["one", "two", "three", "four", "five"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n"broken\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        read_text_pool(bad)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('"fine"\n"fine" 42\n')
    with pytest.raises(DataError, match=r"wrong\.jsonl:2: expected a JSON string"):
        read_text_pool(wrong)
    with pytest.raises(DataError, match="file not found"):
        read_text_pool(tmp_path / "missing.jsonl")


def test_read_text_pool_fetches_a_url(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('"a profile"\n"another one"\n')
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert read_text_pool(f"{base}/p.jsonl") == ["a profile", "another one"]
        with pytest.raises(DataError, match="could not fetch"):
            read_text_pool(f"{base}/missing.jsonl")
    finally:
        server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_load_aloe_benchmark_gives_100_personas_in_aloe_order(reference_dir: Path) -> None:
    bench = load_aloe_benchmark(reference_dir / "profile_eval.jsonl",
                                reference_dir / "personality_eval.jsonl")
    assert len(bench) == 100
    profiles = read_text_pool(reference_dir / "profile_eval.jsonl")
    traits = read_text_pool(reference_dir / "personality_eval.jsonl")
    assert [(b["profile"], b["personality"]) for b in bench] == [
        (p, q) for p in profiles for q in traits[:5]]
    assert len({b["id"] for b in bench}) == 100
    assert set(bench[0]) == {"id", "profile_id", "personality_id", "profile", "personality"}
    assert len(load_aloe_benchmark(["p1", "p2"], ["a", "b", "c"], m=2)) == 4
