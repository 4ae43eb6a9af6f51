"""Completion lengths measured in the usage ledgers, for `aloe plan`'s forecast: each role's
mean completion over the finished requests of this run's folder and of the other runs under
`run.output_dir` with the same model. The response cache holds token counts too but not which
role asked; the ledgers, which do, are read, each through its schema, so that a bad line is
named by file and line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aloe.core.config import Params
from aloe.core.records import DataError, read_records
from aloe.core.schemas import usage_entry_check
from aloe.llm.ledger import load_usage_history


@dataclass
class Measured:
    """Finished requests of one role and model in the ledgers, and the runs they are from."""

    requests: int = 0
    completion_tokens: int = 0
    runs: set[str] = field(default_factory=set)

    @property
    def mean(self) -> float:
        return self.completion_tokens / self.requests if self.requests else 0.0


def _ledger_entries(params: Params) -> Iterator[tuple[str, dict[str, Any]]]:
    """(run name, entry) for every stage session in the ledgers under run.output_dir. This
    run's ledger must be sound (its stages read it too); another run's that is not is left out
    of the measure, and said so with its file and line, rather than stop this run's plan."""
    layout = params.layout
    for entry in load_usage_history(layout):
        yield layout.run_dir.name, entry
    parent = layout.run_dir.parent
    for other in sorted(parent.glob("*/usage/history.jsonl")) if parent.is_dir() else []:
        run = other.parent.parent.name
        if run != layout.run_dir.name:
            try:
                entries = read_records(other, check=usage_entry_check())
            except DataError as error:
                print(f"aloe plan: another run's ledger left out of the measured lengths: "
                      f"{error}", file=sys.stderr)
                continue
            yield from ((run, entry) for entry in entries)


def measured_completions(params: Params) -> dict[tuple[str, str], Measured]:
    """Completion tokens per request, by (role, model), over every finished request the
    ledgers under run.output_dir recorded (the preflight's probes left out)."""
    found: dict[tuple[str, str], Measured] = {}
    for run, entry in _ledger_entries(params):
        if entry.get("stage") == "preflight":
            continue
        for role, usage in (entry.get("roles") or {}).items():
            if usage.get("requests", 0) > 0 and usage.get("completion_tokens", 0) > 0:
                item = found.setdefault((role, str(usage.get("model"))), Measured())
                item.requests += int(usage["requests"])
                item.completion_tokens += int(usage["completion_tokens"])
                item.runs.add(run)
    return found


def model_matches(configured: str, recorded: str) -> bool:
    """A ledger names the served model; `local` roles record the served folder's path."""
    return recorded == configured or (configured == "local" and "/" in recorded)


def typical(measured: dict[tuple[str, str], Measured], role: str, model: str,
            max_tokens: int, default: float) -> tuple[float, str]:
    """A role's forecast completion (at most its max_tokens) and where it is from: the mean
    the ledgers measured for its model, else `default`."""
    hits = [m for (r, recorded), m in measured.items() if r == role and
            model_matches(model, recorded)]
    requests = sum(m.requests for m in hits)
    if requests:
        mean = sum(m.completion_tokens for m in hits) / requests
        runs = sorted(set().union(*(m.runs for m in hits)))
        return min(mean, max_tokens), (f"measured: {requests:,} requests of {model} "
                                       f"in run(s) {', '.join(runs)}")
    return min(default, max_tokens), "default (no measured requests)"

