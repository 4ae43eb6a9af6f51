"""The usage ledger: requests, cache hits, retries, tokens and estimated cost per stage and role.

Each stage session writes `RUN/usage/STAGE.json` (what that session spent) and appends the same
entry to `RUN/usage/history.jsonl`, so the report can show both the last run and the total.
While it runs, a session also keeps its running totals in `RUN/usage/live/`: a session killed
before it could save is still counted, as an `interrupted` entry. That file is rewritten in
place after every request (one `pwrite` to an open file, padded with spaces so that a shorter
entry leaves no stale tail), not replaced through a temporary file: at paper scale it is written
hundreds of times a second, and only a dead session's file is ever read.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aloe.core.errors import shown, writing
from aloe.core.layout import RunLayout
from aloe.core.procs import alive
from aloe.core.records import DataError, append_record, read_json, read_records, write_json
from aloe.core.schemas import USAGE_FIELDS, usage_entry_check


@dataclass
class RoleUsage:
    model: str = ""
    requests: int = 0  # requests that reached a backend and succeeded
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0  # requests that still failed after all retries
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """`dataclasses.asdict` without its deep copy (the fields are plain numbers), because
        the live totals are written after every request."""
        return {"model": self.model, **{name: getattr(self, name) for name in USAGE_FIELDS}}


@dataclass
class Ledger:
    stage: str
    roles: dict[str, RoleUsage] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    live_dir: Path | None = None  # where the running totals are kept; None: nowhere
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _live_file: Path | None = field(default=None, repr=False, compare=False)
    _live_fd: int | None = field(default=None, repr=False, compare=False)
    _live_size: int = field(default=0, repr=False, compare=False)

    @property
    def live_path(self) -> Path | None:
        if self.live_dir is None:
            return None
        if self._live_file is None:  # asked for after every request: named once
            name = f"{self.stage}-{os.getpid()}-{self.started:.6f}.json"
            self._live_file = Path(self.live_dir) / name
        return self._live_file

    def _flush_live(self) -> None:
        """Keep the running totals on disk after each thing that costs (caller holds the
        lock): one small atomic write, next to a network request. Cache hits cost nothing and
        are not flushed on their own; the next request or the save carries them."""
        path = self.live_path
        if path is None:
            return
        data = json.dumps({**self._entry(), "pid": os.getpid(), "interrupted": True},
                          default=str).encode("utf-8")
        data += b" " * (self._live_size - len(data))  # JSON reads past trailing spaces
        with writing(path):
            if self._live_fd is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._live_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.pwrite(self._live_fd, data, 0)
        self._live_size = len(data)

    def _entry(self) -> dict[str, Any]:
        """This session's usage as a history entry (caller holds the lock)."""
        return {"stage": self.stage, "started": self.started, "finished": time.time(),
                "roles": {name: usage.as_json() for name, usage in self.roles.items()},
                "totals": _sum(self.roles.values()).as_json()}

    def _role(self, role: str, model: str) -> RoleUsage:
        usage = self.roles.setdefault(role, RoleUsage(model=model))
        usage.model = model
        return usage

    def record_hit(self, role: str, model: str) -> None:
        with self._lock:
            self._role(role, model).cache_hits += 1

    def record_retry(self, role: str, model: str) -> None:
        with self._lock:
            self._role(role, model).retries += 1
            self._flush_live()

    def record_failure(self, role: str, model: str) -> None:
        with self._lock:
            self._role(role, model).failures += 1
            self._flush_live()

    def record_request(self, role: str, model: str, prompt_tokens: int, completion_tokens: int,
                       price_in_per_1m: float, price_out_per_1m: float) -> None:
        with self._lock:
            usage = self._role(role, model)
            usage.requests += 1
            usage.prompt_tokens += prompt_tokens
            usage.completion_tokens += completion_tokens
            usage.cost_usd += (prompt_tokens * price_in_per_1m
                               + completion_tokens * price_out_per_1m) / 1e6
            self._flush_live()

    def totals(self) -> RoleUsage:
        with self._lock:
            return _sum(self.roles.values())

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return self._entry()

    def save(self, layout: RunLayout) -> Path:
        """Write this session's usage and append it to the run's history."""
        data = self.as_dict()
        write_json(layout.usage(self.stage), data)
        append_record(layout.usage_history, data, check=usage_entry_check())
        with self._lock:
            if self._live_fd is not None:
                os.close(self._live_fd)
                self._live_fd = None
            if self.live_path is not None:
                self.live_path.unlink(missing_ok=True)
        return layout.usage(self.stage)




def _sum(usages: Any) -> RoleUsage:
    total = RoleUsage(model="*")
    for usage in usages:
        for name in USAGE_FIELDS:
            setattr(total, name, getattr(total, name) + getattr(usage, name))
    return total






def load_usage_history(layout: RunLayout) -> list[dict[str, Any]]:
    """Every stage session's ledger entry of a run, oldest first, with the running totals of
    sessions that were killed before they could save (`"interrupted": true`)."""
    check = usage_entry_check()
    history = read_records(layout.usage_history, check=check)
    for live in sorted(layout.usage_live.glob("*.json")):
        entry = read_json(live)
        problem = check(entry) if isinstance(entry, dict) else "not a JSON object"
        if problem is None and (not isinstance(entry.get("pid"), int)
                                or isinstance(entry.get("pid"), bool)):
            problem = f"pid {shown(entry.get('pid'))} is not a process id"
        if problem is not None:
            raise DataError(f"{live}: {problem}; delete the file if no stage is running")
        if not alive(int(entry.get("pid", 0))):
            history.append(entry)
    return sorted(history, key=lambda entry: entry.get("started", 0.0))
