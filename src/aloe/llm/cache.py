"""A persistent, content-addressed response cache (SQLite), shared by every stage and run.

The key is a hash of everything that decides a reply: model, messages, sampling parameters,
the sample index and, for sampled requests (temperature above 0), the run's seed. A rerun or a
resumed run therefore sends no request it already has an answer to, two samples of the same
prompt stay distinct, and two runs with different seeds draw independent samples (a greedy
request, the same whatever the seed, stays shared).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


def request_key(model: str, messages: list[dict[str, Any]], sampling: dict[str, Any],
                sample: int, seed: int | None = None) -> str:
    payload: dict[str, Any] = {"model": model, "messages": messages, "sampling": sampling,
                               "sample": sample}
    if seed is not None:
        payload["seed"] = seed
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """Thread-safe SQLite key-value store of completed responses (WAL, many processes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL,"
            " created REAL NOT NULL)"
        )

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, response: dict[str, Any]) -> None:
        blob = json.dumps(response, ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                             (key, blob, time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
