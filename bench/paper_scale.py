"""The orchestration at paper scale, by simulation: the REAL stage-2 and stage-5 code against the
OpenAI-protocol stub server, at concurrency 128.

    .venv/bin/python bench/paper_scale.py [--conversations N] [--turns K] [--json]

Every role (and the model under test, an endpoint) points at `tests/support/stub_server.py`
(its own process, loopback), which answers each role validly, so every code path runs:
simulated users, the inducer, hinted and plain replies, the judge in both orders, the score
judge. Each stage runs in a child process (`conversations.run_stage`, then
`evaluation.run_stage`) with its own response cache, and the bench reports:

- requests/s through the whole stage loop: requests sent (the usage ledger's count, checked
  against the stub's) over the stage's wall time, stages 2 and 5 together; and, because a
  shared machine's load moves the wall time, the requests per CPU second of the stages'
  process (what the workbook itself costs a request);
- the child's peak RSS, and its RSS after imports (what the stage itself added is the rest);
- the response cache's size;
- a second stage 2 of the same size, SIGKILLed once half of its conversations are written,
  then run again: the seconds until the rerun is back at work (its first new conversation
  written), the rerun's whole time, and the conversations written twice (must be 0).

`--json` prints `{"requests_per_s", "peak_rss_mb", "resume_s", "duplicates", ...}`. The paper
sends about 180,000 conversation requests (3,000 conversations x 10 turns) and 6,000
evaluation requests; the default here is the paper's size.

`--baseline SRC` also measures the throughput of another copy of the package (e.g. the
previous commit's `src/`, from `git archive COMMIT src | tar -x -C DIR`) in the same run,
before this one, against the same stub, so that a before/after comparison is made under the
same load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONCURRENCY = 128
EVAL_MODEL = "served"


# ------------------------------------------------------------------------------------------
# The child: one stage, timed
# ------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(params_file: str, stage: str) -> None:
    """Run one stage and print what it took (one JSON line)."""
    from aloe.core.config import load_params
    from aloe.stages import conversations, evaluation

    params = load_params(params_file)
    base_rss = _rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    if stage == "conversations":
        conversations.run_stage(params)
    else:
        evaluation.run_stage(params)
    seconds = time.perf_counter() - started
    print(json.dumps({"stage": stage, "seconds": seconds, "base_rss_mb": base_rss,
                      "peak_rss_mb": _rss_mb(), "cpu_s": time.process_time() - cpu}),
          flush=True)


def _child_command(params_file: Path, stage: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", stage,
            "--params", str(params_file)]


def run_child(params_file: Path, stage: str, src: Path | None = None) -> dict[str, Any]:
    done = subprocess.run(_child_command(params_file, stage), cwd=ROOT, capture_output=True,
                          text=True, env=_env(src))
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} failed (exit {done.returncode}): "
                         f"{done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _env(src: Path | None = None) -> dict[str, str]:
    """The children's environment: this checkout's package first (or `src`), quiet bars."""
    package = str(src or ROOT / "src")
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "ALOE_ROOT": str(ROOT), "TQDM_DISABLE": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (package, str(ROOT), path) if p)}


# ------------------------------------------------------------------------------------------
# The run folder
# ------------------------------------------------------------------------------------------
def personas(n: int) -> list[dict[str, Any]]:
    """Synthetic personas (the stub reads none of their content, only the shape)."""
    jobs = ["nurse", "carpenter", "teacher", "chef", "pilot", "farmer", "lawyer", "potter"]
    traits = ["blunt", "curious", "patient", "wry", "anxious", "cheerful", "reserved"]
    return [{"id": f"persona-{i:05d}", "profile_id": f"profile-{i:05d}",
             "personality_id": f"personality-{i % 97:03d}",
             "profile": f"She is a {20 + i % 60}-year-old {jobs[i % len(jobs)]} in town {i} "
                        "who grows tomatoes and runs on Sundays.",
             "personality": f"She is {traits[i % len(traits)]} and likes short answers."}
            for i in range(n)]


def write_params(folder: Path, base_url: str, name: str, args: argparse.Namespace) -> Path:
    import yaml

    from aloe.core.records import write_records

    roles = {role: {"model": "stub", "base_url": base_url, "temperature": 0.7,
                    "max_tokens": 128, "concurrency": CONCURRENCY, "timeout": 120.0}
             for role in ("generator", "user", "inducer", "assistant", "judge")}
    data = {
        "run": {"name": name, "output_dir": str(folder / "outputs"),
                "cache_path": str(folder / "outputs" / name / "cache.sqlite")},
        "roles": roles,
        "conversations": {"n_conversations": args.conversations, "turns": args.turns,
                          "concurrency": CONCURRENCY, "judge_rule": "both_orders"},
        "evaluation": {"turns": args.turns, "batch_size": CONCURRENCY, "bootstrap_samples": 100,
                       "models": [{"name": EVAL_MODEL, "model": "stub", "base_url": base_url}]},
    }
    params_file = folder / f"{name}.yaml"
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    run_dir = folder / "outputs" / name
    write_records(run_dir / "personas.jsonl", personas(min(args.conversations, 3310)))
    write_records(run_dir / "benchmark.jsonl", personas(args.eval_personas))
    return params_file


def requests_sent(run_dir: Path) -> int:
    """Requests that reached the backend and succeeded, from the run's usage ledger."""
    from aloe.core.records import read_records

    return sum(entry["totals"]["requests"] for entry in read_records(run_dir / "usage" /
                                                                     "history.jsonl"))


# ------------------------------------------------------------------------------------------
# The measurements
# ------------------------------------------------------------------------------------------
def throughput(folder: Path, stub: Any, args: argparse.Namespace, src: Path | None = None,
               name: str = "throughput") -> dict[str, Any]:
    params_file = write_params(folder, stub.base_url, name, args)
    run_dir = folder / "outputs" / name
    before = stub.stats()["requests"]
    stages = [run_child(params_file, "conversations", src),
              run_child(params_file, "evaluate", src)]
    sent = requests_sent(run_dir)
    seconds = sum(s["seconds"] for s in stages)
    cache = run_dir / "cache.sqlite"
    cache_bytes = sum(f.stat().st_size for f in run_dir.glob("cache.sqlite*"))
    cpu = sum(s["cpu_s"] for s in stages)
    return {"requests": sent, "stub_requests": stub.stats()["requests"] - before,
            "client_cpu_s": round(cpu, 2), "requests_per_client_cpu_s": round(sent / cpu, 1),
            "seconds": round(seconds, 2), "requests_per_s": round(sent / seconds, 1),
            "stage_seconds": {s["stage"]: round(s["seconds"], 2) for s in stages},
            "peak_rss_mb": round(max(s["peak_rss_mb"] for s in stages), 1),
            "base_rss_mb": round(max(s["base_rss_mb"] for s in stages), 1),
            "cache_mb": round(cache_bytes / 1e6, 2), "cache_file": str(cache)}


def _written(file: Path) -> int:
    try:
        with open(file, "rb") as handle:
            return sum(1 for line in handle if line.endswith(b"\n"))
    except FileNotFoundError:
        return 0


def kill_and_resume(folder: Path, stub: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Stage 2 SIGKILLed with half its conversations written, then run again."""
    from aloe.core.records import read_records

    params_file = write_params(folder, stub.base_url, "resume", args)
    records = folder / "outputs" / "resume" / "conversations.jsonl"
    half = max(1, args.conversations // 2)
    killed = subprocess.Popen(_child_command(params_file, "conversations"), cwd=ROOT, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while _written(records) < half and killed.poll() is None:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    at_kill = _written(records)

    started = time.perf_counter()
    rerun = subprocess.Popen(_child_command(params_file, "conversations"), cwd=ROOT, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    back_at_work = None
    while rerun.poll() is None:
        if back_at_work is None and _written(records) > at_kill:
            back_at_work = time.perf_counter() - started
        time.sleep(0.01)
    total = time.perf_counter() - started
    if rerun.returncode != 0:
        raise SystemExit(f"the resumed stage 2 failed (exit {rerun.returncode})")
    ids = [r["id"] for r in read_records(records)]
    return {"written_at_kill": at_kill, "resume_s": round(back_at_work or total, 2),
            "rerun_s": round(total, 2), "conversations": len(set(ids)),
            "duplicates": len(ids) - len(set(ids))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=3000)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--eval-personas", type=int, default=100,
                        help="benchmark users of stage 5 (the paper: 100)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, help="write the runs here instead of a temporary "
                        "folder")
    parser.add_argument("--baseline", type=Path, help="another copy of the package's src/ to "
                        "measure first, in the same run")
    parser.add_argument("--child", choices=["conversations", "evaluate"], help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.params, args.child)
        return

    from tests.support.stub_server import StubServer

    with tempfile.TemporaryDirectory() as scratch, StubServer(seed=0) as stub:
        folder = args.keep.resolve() if args.keep else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        baseline = (throughput(folder, stub, args, args.baseline.resolve(), "baseline")
                    if args.baseline else None)
        measured = throughput(folder, stub, args)
        resumed = kill_and_resume(folder, stub, args)
    summary = {"requests_per_s": measured["requests_per_s"],
               "peak_rss_mb": measured["peak_rss_mb"], "resume_s": resumed["resume_s"],
               "duplicates": resumed["duplicates"], "conversations": args.conversations,
               "turns": args.turns, "eval_personas": args.eval_personas,
               "concurrency": CONCURRENCY, "cpus": os.cpu_count(),
               "load_1min": round(os.getloadavg()[0], 2), **{
                   k: measured[k] for k in ("requests", "stub_requests", "seconds",
                                            "stage_seconds", "base_rss_mb", "cache_mb")},
               **{k: resumed[k] for k in ("written_at_kill", "rerun_s")},
               "conversations_after_resume": resumed["conversations"],
               "client_cpu_s": measured["client_cpu_s"],
               "requests_per_client_cpu_s": measured["requests_per_client_cpu_s"]}
    if baseline:
        summary["baseline"] = {k: baseline[k] for k in (
            "requests_per_s", "requests", "seconds", "stage_seconds", "peak_rss_mb",
            "client_cpu_s", "requests_per_client_cpu_s")}
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{args.conversations} conversations x {args.turns} turns, {args.eval_personas} "
          f"benchmark users, concurrency {CONCURRENCY} ({summary['cpus']} CPUs, load "
          f"{summary['load_1min']})")
    print(f"  stages 2+5: {summary['requests']:,} requests in {summary['seconds']:.1f} s = "
          f"{summary['requests_per_s']:.0f} req/s ({summary['stage_seconds']}); the stages' "
          f"process spent {summary['client_cpu_s']:.1f} CPU s = "
          f"{summary['requests_per_client_cpu_s']:.0f} requests per CPU second")
    if baseline:
        print(f"  baseline ({args.baseline}): {baseline['requests']:,} requests in "
              f"{baseline['seconds']:.1f} s = {baseline['requests_per_s']:.0f} req/s "
              f"({baseline['stage_seconds']}), {baseline['requests_per_client_cpu_s']:.0f} "
              f"requests per CPU second; this one is "
              f"{summary['requests_per_s'] / baseline['requests_per_s']:.1f}x in wall time, "
              f"{summary['requests_per_client_cpu_s'] / baseline['requests_per_client_cpu_s']:.1f}"
              "x in CPU")
    print(f"  peak RSS {summary['peak_rss_mb']:.0f} MB (after imports "
          f"{summary['base_rss_mb']:.0f} MB); cache {summary['cache_mb']:.1f} MB")
    print(f"  killed with {summary['written_at_kill']} conversations written: back at work in "
          f"{summary['resume_s']:.1f} s, finished in {summary['rerun_s']:.1f} s, "
          f"{summary['duplicates']} written twice")


if __name__ == "__main__":
    main()
