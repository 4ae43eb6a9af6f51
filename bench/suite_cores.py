"""How much CPU work a command is, and the least wall time it could take on this machine: the
test suite's floor, for issue 24's target of `make test` in 12 minutes on 2 cores.

    .venv/bin/python bench/suite_cores.py [--target 720] -- make test

Runs the command (its output passes through), samples the machine's busy CPU time from
/proc/stat meanwhile (bench/end_to_end.py's `MachineLoad`), and prints the wall time, the
core-seconds the machine was busy, the cores busy on average, and the floor: those
core-seconds spread over every core. Run it on an otherwise idle machine (after `make install`,
so that only the tests are measured). A floor above the target says that no ordering or
parallelism reaches the target: only less work does. Exits with the command's status.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from end_to_end import MachineLoad


@dataclass(frozen=True)
class CoreUse:
    wall: float
    core_seconds: float | None  # None where /proc/stat cannot be read
    cores: int

    @property
    def floor(self) -> float | None:
        return None if self.core_seconds is None else self.core_seconds / self.cores


def measure(command: list[str], every: float = 0.5) -> tuple[int, CoreUse]:
    """The command's exit status and what it used of the machine."""
    with MachineLoad(every=every) as load:
        start = time.time()
        code = subprocess.run(command).returncode
        end = time.time()
        time.sleep(every * 2)  # one more sample after the end
    inside = [busy for at, busy in load.samples if start - every <= at <= end + every * 2]
    core_seconds = inside[-1] - inside[0] if len(inside) >= 2 else None
    return code, CoreUse(end - start, core_seconds, os.cpu_count() or 1)


def report(use: CoreUse, target: float) -> str:
    if use.core_seconds is None or use.floor is None:
        return f"wall {use.wall:.1f} s; /proc/stat could not be read: no core-seconds"
    verdict = "within reach" if use.floor <= target else "NOT within reach without less work"
    average = use.core_seconds / max(use.wall, 1e-9)
    return (f"wall {use.wall:.1f} s; busy {use.core_seconds:.1f} core-seconds, {average:.2f} "
            f"of {use.cores} cores on average; floor on {use.cores} cores {use.floor:.1f} s; "
            f"target {target:.0f} s: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=720.0,
                        help="seconds the command should take (default 720: issue 24's suite)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="after --: the command to measure, e.g. make test")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --, e.g. -- make test")
    try:
        code, use = measure(command)
    except OSError as error:
        print(f"suite_cores: cannot run {command[0]!r}: {error.strerror}; give a command "
              "that exists, e.g. -- make test", file=sys.stderr)
        return 2
    print(report(use, args.target), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
