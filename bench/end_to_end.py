"""Wall time of the tiny run from scratch and of its rerun, per stage, as a table.

    .venv/bin/python bench/end_to_end.py [--params params/tiny.yaml] [--keep DIR]
                                         [--set KEY=VALUE ...] [--before REV]

The first run starts from an empty output folder and an empty response cache (the converted
embedded model is reused from outputs/models; `--keep DIR` keeps that folder, e.g. to look at
the report); the rerun uses the same parameters, so it finds every stage unchanged (its
stamp matches: `aloe.operations.stage_stamp`), starts no kernel and sends no LLM request.
`--set` changes a key of the profile for both runs (a YAML value, as `aloe run --set`).

`--before REV` first makes the first run of another revision of the code (e.g. the one issue
24 measured), on its own copy of the profile, from its own empty folder: its files come from
`git archive REV`, its Python from this environment. Then the figures of both first runs are
measured one right after the other on the same machine.

It prints the seconds of each stage in both runs, the wall time of each `aloe run`, their
ratio, and whether the rerun met its target: at most 10% of the first run and under 30 s; with
`--before`, the first run's share of the earlier revision's (target: at most half). Then, for
the first run of this code, how many of the machine's cores were busy on average in each stage
(from /proc/stat, sampled every half second; a stage's span is the run's start plus the
seconds of the stages before it): on an otherwise idle machine, a stage near all cores can
only get faster by doing less work, one far below them by doing its work side by side.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from aloe.core.config import parse_set, project_root
from aloe.core.config.loading import Override, apply_overrides
from aloe.core.errors import ParamsError

RERUN_SHARE, RERUN_SECONDS = 0.10, 30.0  # issue 24: a rerun with nothing to do
FIRST_RUN_SHARE = 0.5  # issue 24: the first run at most half of the code it measured


class MachineLoad:
    """The machine's busy CPU time, sampled every `every` s on a thread (Linux /proc/stat;
    elsewhere nothing is sampled and `cores_busy` is None)."""

    def __init__(self, every: float = 0.5) -> None:
        self.every, self.samples = every, []  # (time.time(), busy seconds of all cores)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __enter__(self) -> MachineLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _busy(self) -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        idle = int(fields[3]) + int(fields[4])  # idle and iowait
        return (sum(int(f) for f in fields[:8]) - idle) / self.ticks

    def _sample(self) -> None:
        while True:
            busy = self._busy()
            if busy is not None:
                self.samples.append((time.time(), busy))
            if self.stop.wait(self.every):
                return

    def cores_busy(self, start: float, end: float) -> float | None:
        """The average number of cores busy between `start` and `end` (time.time())."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        (t0, b0), (t1, b1) = inside[0], inside[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None


def run(params_file: Path,
        code: Path | None = None) -> tuple[float, dict[str, float], set[str], float]:
    """One `aloe run` (of the code in `code`, else this checkout's): its wall time, each
    stage's seconds, the stages it skipped, when it started (runner.json's time.time())."""
    root, env, module = project_root(), None, "aloe"
    if code is not None:
        root, env = code, {**os.environ, "PYTHONPATH": str(code / "src"),
                           "ALOE_ROOT": str(code)}
        module = "aloe" if (code / "src" / "aloe" / "__main__.py").exists() else "aloe.cli"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", module, "run", str(params_file), "--quiet"],
                   cwd=root, env=env, check=True)
    wall = time.perf_counter() - started
    data = yaml.safe_load(params_file.read_text())
    timings = json.loads((Path(data["run"]["output_dir"]) / data["run"]["name"] / "runner.json")
                         .read_text())
    return (wall, {s["notebook"]: s["seconds"] for s in timings["stages"]},
            {s["notebook"] for s in timings["stages"] if s.get("skipped")}, timings["started"])


def requests_sent(run_dir: Path, since: int) -> int:
    lines = (run_dir / "usage" / "history.jsonl").read_text().splitlines()[since:]
    return sum(json.loads(line)["totals"]["requests"] for line in lines)


def profile(source: Path, folder: Path, changes: Sequence[Override] = ()) -> tuple[Path, Path]:
    """A copy of the profile writing into `folder`, with `changes` (`aloe run --set`'s); its
    file and the run folder it will write."""
    data = apply_overrides(yaml.safe_load(source.read_text()), changes)
    data.setdefault("run", {})["output_dir"] = str(folder / "outputs")
    data.setdefault("local_model", {})["cache_dir"] = str(project_root() / "outputs" / "models")
    folder.mkdir(parents=True, exist_ok=True)
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(data))
    return params_file, folder / "outputs" / data["run"]["name"]


def checkout(rev: str, folder: Path) -> Path:
    """The files of revision `rev` in `folder` (`git archive`: no worktree, nothing to undo)."""
    archive = subprocess.run(["git", "archive", rev], cwd=project_root(), check=True,
                             capture_output=True).stdout
    folder.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/tiny.yaml")
    parser.add_argument("--keep", type=Path, help="write the run here and keep it (must not "
                        "exist yet) instead of a temporary folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a key of the profile (repeatable)")
    parser.add_argument("--before", metavar="REV", help="first measure the first run of this "
                        "git revision's code on its own copy of the profile")
    args = parser.parse_args()
    root = project_root()
    if args.keep and args.keep.exists():
        raise SystemExit(f"--keep {args.keep}: exists already; the first run must start empty")
    try:
        changes = [parse_set(pair) for pair in args.set]
    except ParamsError as error:
        raise SystemExit(str(error)) from None
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep.resolve() if args.keep else scratch)
        before = None
        if args.before:
            code = checkout(args.before, tmp / "before-code")
            before_params, _ = profile(code / args.params, tmp / "before")
            before = run(before_params, code)
            print(f"before ({args.before}): first run {before[0]:.1f} s", flush=True)
        params_file, run_dir = profile(root / args.params, tmp / "now", changes)
        with MachineLoad() as load:
            first_wall, first, _, started = run(params_file)
        history_len = len((run_dir / "usage" / "history.jsonl").read_text().splitlines())
        first_requests = requests_sent(run_dir, 0)
        second_wall, second, skipped, _ = run(params_file)
        second_requests = requests_sent(run_dir, history_len)
    if before is not None:
        print(before_table(args.before, before[1], first, before[0], first_wall))
    print(table(first, second, skipped, first_wall, second_wall))
    print(f"LLM requests sent: first run {first_requests}, rerun {second_requests}")
    print(verdict(first_wall, second_wall))
    print(load_table(load, started, first))
    if before is not None:
        share = first_wall / before[0]
        print(f"first run {first_wall:.1f} s against {before[0]:.1f} s before: {share:.2f} "
              f"(target: at most {FIRST_RUN_SHARE:.0%}): "
              f"{'met' if share <= FIRST_RUN_SHARE else 'NOT met'}")


def before_table(rev: str, before: dict[str, float], now: dict[str, float], before_wall: float,
                 now_wall: float) -> str:
    """Per stage: the first run's seconds with the earlier code and with this one."""
    lines = [f"{'stage':<18} {f'before {rev[:9]} (s)':>20} {'now (s)':>9} {'now/before':>11}"]
    for stage in [*before, *(s for s in now if s not in before)]:
        old, new = before.get(stage, float("nan")), now.get(stage, float("nan"))
        lines.append(f"{stage:<18} {old:>20.1f} {new:>9.1f} {new / old:>11.3f}")
    lines.append(f"{'total (wall)':<18} {before_wall:>20.1f} {now_wall:>9.1f} "
                 f"{now_wall / before_wall:>11.3f}")
    return "\n".join(lines)


def table(first: dict[str, float], second: dict[str, float], skipped: set[str],
          first_wall: float, second_wall: float) -> str:
    """Per stage: seconds in the first run and in the rerun (a skipped stage's is its check),
    and the ratio; then the wall time of each `aloe run`, process start included."""
    lines = [f"{'stage':<18} {'first run (s)':>14} {'rerun (s)':>10} {'rerun/first':>12}"]
    for stage, seconds in first.items():
        again = second.get(stage, float("nan"))
        ratio = again / seconds if seconds else float("nan")
        note = "  skipped (unchanged)" if stage in skipped else ""
        lines.append(f"{stage:<18} {seconds:>14.1f} {again:>10.1f} {ratio:>12.3f}{note}")
    lines.append(f"{'total (wall)':<18} {first_wall:>14.1f} {second_wall:>10.1f} "
                 f"{second_wall / first_wall:>12.3f}")
    return "\n".join(lines)


def load_table(load: MachineLoad, started: float, stages: dict[str, float]) -> str:
    """Per stage of the first run: its seconds, the cores busy on average, their product."""
    cores = os.cpu_count() or 1
    lines = [f"first run, cores busy of this machine's {cores} (/proc/stat):",
             f"{'stage':<18} {'seconds':>8} {'cores busy':>11} {'core-seconds':>13}"]
    at, used = started, 0.0
    for stage, seconds in stages.items():
        busy = load.cores_busy(at, at + seconds)
        at += seconds
        if busy is None:
            lines.append(f"{stage:<18} {seconds:>8.1f} {'-':>11} {'-':>13}")
            continue
        used += busy * seconds
        lines.append(f"{stage:<18} {seconds:>8.1f} {busy:>11.2f} {busy * seconds:>13.1f}")
    total = sum(stages.values())
    lines.append(f"{'all stages':<18} {total:>8.1f} {used / total if total else 0:>11.2f} "
                 f"{used:>13.1f}")
    return "\n".join(lines)


def verdict(first_wall: float, second_wall: float) -> str:
    ratio = second_wall / first_wall
    met = ratio <= RERUN_SHARE and second_wall < RERUN_SECONDS
    return (f"first run {first_wall:.1f} s, rerun {second_wall:.1f} s, ratio {ratio:.3f} "
            f"(target: at most {RERUN_SHARE:.0%} and under {RERUN_SECONDS:.0f} s): "
            f"{'met' if met else 'NOT met'}")

if __name__ == "__main__":
    main()
