"""Wall time of the tiny run from scratch and of its rerun, per stage, as a table.

    .venv/bin/python bench/end_to_end.py [--params params/tiny.yaml] [--keep DIR]

The first run starts from an empty output folder and an empty response cache (the converted
embedded model is reused from outputs/models; `--keep DIR` keeps that folder, e.g. to look at
the report); the rerun uses the same parameters, so it finds every stage unchanged (its
stamp matches: `aloe.operations.stage_stamp`), starts no kernel and sends no LLM request.

It prints the seconds of each stage in both runs, the wall time of each `aloe run`, their
ratio, and whether the rerun met its target: at most 10% of the first run and under 30 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from aloe.core.config import project_root

RERUN_SHARE, RERUN_SECONDS = 0.10, 30.0  # issue 24: a rerun with nothing to do


def run(params_file: Path) -> tuple[float, dict[str, float], set[str]]:
    """One `aloe run`: its wall time, each stage's seconds, the stages it skipped."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "aloe", "run", str(params_file), "--quiet"],
                   cwd=project_root(), check=True)
    wall = time.perf_counter() - started
    data = yaml.safe_load(params_file.read_text())
    timings = json.loads((Path(data["run"]["output_dir"]) / data["run"]["name"] / "runner.json")
                         .read_text())
    return (wall, {s["notebook"]: s["seconds"] for s in timings["stages"]},
            {s["notebook"] for s in timings["stages"] if s.get("skipped")})


def requests_sent(run_dir: Path, since: int) -> int:
    lines = (run_dir / "usage" / "history.jsonl").read_text().splitlines()[since:]
    return sum(json.loads(line)["totals"]["requests"] for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params/tiny.yaml")
    parser.add_argument("--keep", type=Path, help="write the run here and keep it (must not "
                        "exist yet) instead of a temporary folder")
    args = parser.parse_args()
    root = project_root()
    if args.keep and args.keep.exists():
        raise SystemExit(f"--keep {args.keep}: exists already; the first run must start empty")
    with tempfile.TemporaryDirectory() as scratch:
        tmp = str(args.keep.resolve()) if args.keep else scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        data = yaml.safe_load((root / args.params).read_text())
        data["run"]["output_dir"] = str(Path(tmp) / "outputs")
        data.setdefault("local_model", {})["cache_dir"] = str(root / "outputs" / "models")
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump(data))
        run_dir = Path(tmp) / "outputs" / data["run"]["name"]

        first_wall, first, _ = run(params_file)
        history_len = len((run_dir / "usage" / "history.jsonl").read_text().splitlines())
        first_requests = requests_sent(run_dir, 0)
        second_wall, second, skipped = run(params_file)
        second_requests = requests_sent(run_dir, history_len)
    print(table(first, second, skipped, first_wall, second_wall))
    print(f"LLM requests sent: first run {first_requests}, rerun {second_requests}")
    print(verdict(first_wall, second_wall))


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


def verdict(first_wall: float, second_wall: float) -> str:
    ratio = second_wall / first_wall
    met = ratio <= RERUN_SHARE and second_wall < RERUN_SECONDS
    return (f"first run {first_wall:.1f} s, rerun {second_wall:.1f} s, ratio {ratio:.3f} "
            f"(target: at most {RERUN_SHARE:.0%} and under {RERUN_SECONDS:.0f} s): "
            f"{'met' if met else 'NOT met'}")

if __name__ == "__main__":
    main()
