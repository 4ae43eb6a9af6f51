"""The usage ledger: requests, cache hits, retries, tokens and estimated cost per stage and role.

Each stage session writes `RUN/usage/STAGE.json` (what that session spent) and appends the same
entry to `RUN/usage/history.jsonl`, so the report can show both the last run and the total.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aloe.records import append_record, read_records, write_json


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


@dataclass
class Ledger:
    stage: str
    roles: dict[str, RoleUsage] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

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

    def record_failure(self, role: str, model: str) -> None:
        with self._lock:
            self._role(role, model).failures += 1

    def record_request(self, role: str, model: str, prompt_tokens: int, completion_tokens: int,
                       price_in_per_1m: float, price_out_per_1m: float) -> None:
        with self._lock:
            usage = self._role(role, model)
            usage.requests += 1
            usage.prompt_tokens += prompt_tokens
            usage.completion_tokens += completion_tokens
            usage.cost_usd += (prompt_tokens * price_in_per_1m
                               + completion_tokens * price_out_per_1m) / 1e6

    def totals(self) -> RoleUsage:
        total = RoleUsage(model="*")
        with self._lock:
            for usage in self.roles.values():
                for name in ("requests", "cache_hits", "retries", "failures", "prompt_tokens",
                             "completion_tokens", "cost_usd"):
                    setattr(total, name, getattr(total, name) + getattr(usage, name))
        return total

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            roles = {name: asdict(usage) for name, usage in self.roles.items()}
        return {"stage": self.stage, "started": self.started, "finished": time.time(),
                "roles": roles, "totals": asdict(self.totals())}

    def save(self, run_dir: str | Path) -> Path:
        """Write this session's usage and append it to the run's history."""
        usage_dir = Path(run_dir) / "usage"
        data = self.as_dict()
        write_json(usage_dir / f"{self.stage}.json", data)
        append_record(usage_dir / "history.jsonl", data)
        return usage_dir / f"{self.stage}.json"


def load_usage_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every stage session's ledger entry of a run, oldest first."""
    return read_records(Path(run_dir) / "usage" / "history.jsonl")
