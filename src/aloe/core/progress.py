"""Live progress of a long stage, shown in the terminal of `aloe run` as one updating line.

A stage reports how far it is with a `Reporter`: the latest state goes to the run's progress
file (`layout.progress`), atomically and at most every `INTERVAL` seconds. `aloe run` executes
the notebook with papermill, which shows nothing until a cell ends; a `Monitor` thread polls
the file meanwhile and prints one line, rewritten in place on a terminal (`\\r`), as plain
lines every `PLAIN_INTERVAL` seconds otherwise (a log file, CI):

    02_conversations 1,240/3,000 conversations · 7,800 requests · $12.40 · ETA 38 min · 14:02

A file rather than a pipe, because the stage runs in a notebook kernel that papermill starts:
the file needs no channel between the two processes, and a notebook run by hand in JupyterLab
writes it just the same, harmlessly.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aloe.core.records import write_json

INTERVAL = 2.0  # seconds between two writes of the progress file
POLL = 0.5  # seconds between two reads by the monitor
PLAIN_INTERVAL = 10.0  # seconds between two plain lines when the output is not a terminal


# ------------------------------------------------------------------------------------------
# The stage's side
# ------------------------------------------------------------------------------------------
@dataclass
class Reporter:
    """Writes a stage's progress: `update(done, details)`, throttled; `total` None means the
    stage cannot say how much is left (no ETA then)."""

    path: Path
    unit: str
    total: int | None = None
    interval: float = INTERVAL
    _first: tuple[int, float] | None = field(default=None, init=False)
    _written: float = field(default=0.0, init=False)

    def update(self, done: int, details: Sequence[str] = (), *, force: bool = False) -> None:
        now = time.monotonic()
        if self._first is None or done < self._first[0]:
            self._first = (done, now)
            force = True
        if not force and now - self._written < self.interval:
            return
        self._written = now
        state = {"done": done, "total": self.total, "unit": self.unit,
                 "details": list(details), "eta_s": self._eta(done, now),
                 "updated": time.time(), "pid": os.getpid()}
        try:
            write_json(self.path, state)
        except OSError:  # progress is a courtesy: never the reason a stage fails
            pass

    def _eta(self, done: int, now: float) -> float | None:
        if self.total is None or self._first is None:
            return None
        first_done, first_time = self._first
        if done <= first_done or now <= first_time:
            return None
        rate = (done - first_done) / (now - first_time)
        return max(self.total - done, 0) / rate


def reporter(path: Path, unit: str, total: int | None = None) -> Reporter:
    return Reporter(Path(path), unit, total)


def count(n: float, unit: str) -> str:
    return f"{n:,.0f} {unit}"


def money(usd: float) -> str:
    return f"${usd:,.2f}"


# ------------------------------------------------------------------------------------------
# The runner's side
# ------------------------------------------------------------------------------------------
def read_state(path: Path, since: float = 0.0) -> dict[str, Any] | None:
    """The progress written since `since` (a wall-clock time), or None."""
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("updated", 0) >= since else None


def duration(seconds: float) -> str:
    """38 min, 45 s, 2.3 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_line(label: str, state: dict[str, Any] | None, elapsed: float) -> str:
    """`label done/total unit · details · ETA · elapsed`; only the label and the elapsed time
    before the stage's first report."""
    parts = [label]
    if state:
        done, total, unit = state.get("done", 0), state.get("total"), state.get("unit", "")
        if total is not None:
            parts[0] += f" {done:,}/{total:,} {unit}"
        else:
            parts[0] += f" {done:,} {unit[:-1] if done == 1 and unit.endswith('s') else unit}"
        parts += [str(d) for d in state.get("details") or []]
        if state.get("eta_s") is not None and (total is None or done < total):
            parts.append(f"ETA {duration(state['eta_s'])}")
    parts.append(clock(elapsed))
    return " · ".join(parts)


class Monitor:
    """Shows a running stage's progress file as one live line until `stop()` (a thread)."""

    def __init__(self, path: Path, label: str, stream: IO[str], *, poll: float = POLL,
                 plain_interval: float = PLAIN_INTERVAL):
        self.path, self.label, self.stream = Path(path), label, stream
        self.poll, self.plain_interval = poll, plain_interval
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aloe-progress", daemon=True)
        self._printed: tuple[float, float] = (-1.0, 0.0)  # (state updated, when printed)
        self._width = 0

    def __enter__(self) -> Monitor:
        self.path.unlink(missing_ok=True)  # a previous stage's state is not this one's
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._show(final=True)
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
        self.path.unlink(missing_ok=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            self._show()

    def _show(self, final: bool = False) -> None:
        state = read_state(self.path, since=self._started)
        line = format_line(self.label, state, time.time() - self._started)
        if self.tty:
            self._rewrite(line)
            return
        updated = state["updated"] if state else -1.0
        last_updated, last_time = self._printed
        due = time.monotonic() - last_time >= self.plain_interval
        if state and updated != last_updated and (due or final):
            self._printed = (updated, time.monotonic())
            self.stream.write(line + "\n")
            self.stream.flush()

    def _rewrite(self, line: str) -> None:
        width = shutil.get_terminal_size((120, 20)).columns - 1
        line = line if len(line) <= width else line[: width - 1] + "…"
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)
