"""Processes the workbook starts and must not leave behind: is a pid alive (and still the same
process), die with the parent, stop a process group.

Shared by the local server (`aloe.llm.server`), the usage ledger (whose live totals belong to a
process that may be gone) and the test stub server.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        return True
    return _state(pid) != "Z"


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces); None off Linux."""
    try:
        text = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks after boot): with the pid, it names one process,
    even after the pid is reused. None where /proc cannot tell."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_process(pid: int | None, started: int | None) -> bool:
    """Whether `pid` is alive and still the process that started at `started` (when known)."""
    if not pid or not alive(pid):
        return False
    return started is None or start_time(pid) in (None, started)


def ask_for_parent_death_signal(sig: int) -> bool:
    """In a child process: ask Linux to send `sig` when the parent (the thread that forked it)
    dies. False where that cannot be asked (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig) == 0
    except OSError:
        return False


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A `preexec_fn` that makes the child get `sig` when this process dies.

    Linux sends it when the THREAD that forked the child ends, so it is asked only from a
    thread that lives as long as the process (the main thread); elsewhere it is a no-op. The
    child exits at once if the parent is already gone (the race before prctl took effect)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    parent = os.getpid()

    def in_child() -> None:
        if ask_for_parent_death_signal(sig) and os.getppid() != parent:
            os._exit(1)

    return in_child


def stop_group(pid: int, grace: float = 10.0) -> None:
    """SIGTERM to the process group `pid` leads (a process started in its own session), then
    SIGKILL after `grace` seconds if it is still there."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not alive(pid):
            return
