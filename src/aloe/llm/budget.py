"""A budget that holds: `run.budget_usd` (the whole run) and `run.stage_budget_usd` (per stage).

Before a request goes to a backend (a cache hit costs nothing and is never stopped), its cost
at most is added to what the run has spent so far: its prompt at 3 characters a token (the
ceiling rule of `aloe plan`) at the role's input price, plus `max_tokens` of completion at
its output price. If that would pass a ceiling, the request is not sent: the stage raises
`BudgetExceededError`, which `aloe` reports as one line with exit 1. Everything already
answered is in the response cache, so raising the ceiling and running again resumes without
paying twice.

What "spent so far" counts: every stage session of the run in its usage ledger
(`usage/history.jsonl`, and the running totals of sessions killed before they saved), re-read
whenever the history file changes, plus the sessions open in this process (a model under test
behind an endpoint keeps its own ledger, `evaluate-NAME`, counted toward `evaluate`), plus the
most that the requests in flight may still cost: each request reserves its cost at most
before it is sent and releases it once the ledger holds what it really cost, so that many
concurrent requests cannot together pass the ceiling. (A prompt is counted at 3 characters a
token, the ceiling rule of `aloe plan`; text that tokenises much finer, such as long numbers,
can cost a little more than reserved.) Two processes spending on the same run at once (which `aloe
run` refuses) would each see only what the other has saved.

`aloe.operations.spend` puts the estimate per stage beside the actual spend, for the report.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aloe.core.errors import AloeError

if TYPE_CHECKING:
    from aloe.core.config import Params
    from aloe.core.layout import RunLayout
    from aloe.llm.ledger import Ledger

# Characters a token at most for prompt text: `aloe plan`'s ceiling rule, checked against a
# real tokenizer in tests/test_plan.py.
CHARS_PER_TOKEN_AT_MOST = 3.0


class BudgetExceededError(AloeError):
    """A request would push the run's (or a stage's) LLM spend past its ceiling."""


def stage_of(session: str) -> str:
    """The budget stage of a ledger session: `evaluate-served` counts toward `evaluate`."""
    return session.split("-", 1)[0]


def request_cost(messages: list[dict[str, Any]], max_tokens: int, price_in_per_1m: float,
                 price_out_per_1m: float) -> float:
    """The most a request can cost: its prompt at 3 characters a token, and every one of its
    `max_tokens` as completion."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return (chars / CHARS_PER_TOKEN_AT_MOST * price_in_per_1m + max_tokens * price_out_per_1m) / 1e6


# The ledgers open in this process, per run folder: their spend is not in the history yet.
_OPEN: dict[str, weakref.WeakValueDictionary[int, Ledger]] = {}
_OPEN_LOCK = threading.Lock()
# The cost at most of the requests in flight, per run folder and stage.
_PENDING: dict[str, dict[str, float]] = {}


def register(layout: RunLayout, ledger: Ledger) -> None:
    with _OPEN_LOCK:
        _OPEN.setdefault(str(layout.run_dir), weakref.WeakValueDictionary())[id(ledger)] = ledger


def unregister(layout: RunLayout, ledger: Ledger) -> None:
    with _OPEN_LOCK:
        _OPEN.get(str(layout.run_dir), {}).pop(id(ledger), None)


class Budget:
    """The ceilings of one run and the spend they are held against."""

    def __init__(self, layout: RunLayout, run_limit: float | None,
                 stage_limits: dict[str, float]):
        self.layout = layout
        self.run_limit = run_limit
        self.stage_limits = dict(stage_limits)
        self._seen: tuple[float, int] | None = None  # the history file's (mtime, size)
        self._saved: dict[str, float] = {}  # stage -> cost of the saved sessions
        self._lock = threading.Lock()

    @classmethod
    def for_run(cls, params: Params) -> Budget | None:
        """The run's budget; None when it sets no ceiling (then nothing is checked)."""
        run = params.run
        if run.budget_usd is None and not run.stage_budget_usd:
            return None
        return cls(params.layout, run.budget_usd, dict(run.stage_budget_usd))

    def _saved_spend(self) -> dict[str, float]:
        """Cost per stage of the sessions in the usage history (re-read when it changed)."""
        from aloe.llm.ledger import load_usage_history

        path = Path(self.layout.usage_history)
        stat = path.stat() if path.exists() else None
        seen = (stat.st_mtime, stat.st_size) if stat else (0.0, 0)
        if seen != self._seen:
            spend: dict[str, float] = {}
            for entry in load_usage_history(self.layout):
                stage = stage_of(str(entry.get("stage", "")))
                spend[stage] = spend.get(stage, 0.0) + float(
                    entry.get("totals", {}).get("cost_usd", 0.0))
            self._saved, self._seen = spend, seen
        return self._saved

    def spent(self) -> dict[str, float]:
        """Cost per stage so far: saved sessions and the ledgers open in this process."""
        with self._lock:
            spend = dict(self._saved_spend())
        with _OPEN_LOCK:
            ledgers = list(_OPEN.get(str(self.layout.run_dir), {}).values())
        for ledger in ledgers:
            stage = stage_of(ledger.stage)
            spend[stage] = spend.get(stage, 0.0) + ledger.totals().cost_usd
        with _OPEN_LOCK:
            for stage, reserved in _PENDING.get(str(self.layout.run_dir), {}).items():
                spend[stage] = spend.get(stage, 0.0) + reserved
        return spend

    def reserve(self, stage: str, cost: float, role: str, model: str) -> Reservation:
        """Reserve `cost` for a request about to be sent, or raise BudgetExceededError when it
        would pass the run's or `stage`'s ceiling. Release the reservation (`release()`) once
        the request is answered (its real cost is then in the ledger) or has failed."""
        with _RESERVE_LOCK:  # check and reserve as one step: concurrent requests queue here
            self.check(stage, cost, role, model)
            return Reservation(str(self.layout.run_dir), stage_of(stage), cost)

    def check(self, stage: str, cost: float, role: str, model: str) -> None:
        """Raise BudgetExceededError when a request costing up to `cost` would pass the run's
        or `stage`'s ceiling."""
        spend = self.spent()
        stage = stage_of(stage)
        total = sum(spend.values())
        if self.run_limit is not None and total + cost > self.run_limit:
            raise BudgetExceededError(
                f"budget: run.budget_usd ${self.run_limit:.4f} reached: ${total:.4f} spent, and "
                f"the next request (stage {stage}, role {role}, model {model}) may cost up to "
                f"${cost:.4f}; finished work is kept: raise run.budget_usd and run again to "
                "continue")
        limit = self.stage_limits.get(stage)
        if limit is not None and spend.get(stage, 0.0) + cost > limit:
            raise BudgetExceededError(
                f"budget: run.stage_budget_usd.{stage} ${limit:.4f} reached: "
                f"${spend.get(stage, 0.0):.4f} spent in {stage}, and the next request (role "
                f"{role}, model {model}) may cost up to ${cost:.4f}; finished work is kept: "
                f"raise it and run again to continue")


_RESERVE_LOCK = threading.Lock()


class Reservation:
    """The most a request in flight may cost, counted as spent until it is released."""

    def __init__(self, run: str, stage: str, cost: float):
        self.run, self.stage, self.cost = run, stage, cost
        with _OPEN_LOCK:
            pending = _PENDING.setdefault(run, {})
            pending[stage] = pending.get(stage, 0.0) + cost
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        with _OPEN_LOCK:
            pending = _PENDING.get(self.run, {})
            pending[self.stage] = max(pending.get(self.stage, 0.0) - self.cost, 0.0)
