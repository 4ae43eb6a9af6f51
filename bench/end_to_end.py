"""Wall time of the tiny run from scratch and of its rerun, per stage, as a table.

    .venv/bin/python bench/end_to_end.py [--params params/tiny.yaml] [--keep DIR]

The first run starts from an empty output folder and an empty response cache (the converted
embedded model is reused from outputs/models; `--keep DIR` keeps that folder, e.g. to look at
the report); the rerun uses the same parameters, so it should
send no LLM request and skip finished training.
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

from aloe.config import project_root


def run(params_file: Path) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "aloe.cli", "run", str(params_file), "--quiet"],
                   cwd=project_root(), check=True)
    wall = time.perf_counter() - started
    data = yaml.safe_load(params_file.read_text())
    timings = json.loads((Path(data["run"]["output_dir"]) / data["run"]["name"] / "runner.json")
                         .read_text())
    return wall, {s["notebook"]: s["seconds"] for s in timings["stages"]}


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

        first_wall, first = run(params_file)
        history_len = len((run_dir / "usage" / "history.jsonl").read_text().splitlines())
        first_requests = requests_sent(run_dir, 0)
        second_wall, second = run(params_file)
        second_requests = requests_sent(run_dir, history_len)

    print(f"{'stage':<18} {'first run (s)':>14} {'rerun (s)':>10} {'rerun/first':>12}")
    for stage in first:
        ratio = second.get(stage, float("nan")) / first[stage] if first[stage] else float("nan")
        print(f"{stage:<18} {first[stage]:>14.1f} {second.get(stage, float('nan')):>10.1f} "
              f"{ratio:>12.2f}")
    print(f"{'total (wall)':<18} {first_wall:>14.1f} {second_wall:>10.1f} "
          f"{second_wall / first_wall:>12.2f}")
    print(f"LLM requests sent: first run {first_requests}, rerun {second_requests}")


if __name__ == "__main__":
    main()
