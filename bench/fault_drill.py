"""The stages' fault drill (issue 27): every stage against a server that gives one kind of bad
answer to a share of its requests must either complete with nothing lost or refuse in one line
that names the role, the server and the cause.

    .venv/bin/python bench/fault_drill.py [--kinds "a 500,a hang"] [--rates 0.1,0.5,1.0]
        [--stages personas,conversations,evaluation] [--seed 0]

For each stage x kind x rate: a fresh temporary run folder on the tiny profile, small sizes,
every role (and every model under test) pointed at a FaultProxy (tests/support/fault_proxy.py)
in front of the stub server (tests/support/stub_server.py: fast, deterministic), each role with
a 1 s timeout and one retry; the stage runs in this process through its `run_stage`. Outcomes:

- completed: the stage returned and its products hold what a run without faults wrote
  (the same records, in any order);
- refused, named: an AloeError whose message is one line naming role '...', the proxy's URL
  and the cause's words (tests/support/faults.py);
- DEFECT: anything else (another exception, a message short of those, items lost, a hang).

Prints a table and the totals; exits 1 when any run is a DEFECT. The stubbed stages measure
the machinery's handling of bad answers, not any model.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")  # the stages' bars would bury the table

from aloe.core.config import Params, params_from_dict  # noqa: E402
from aloe.core.errors import AloeError  # noqa: E402
from aloe.stages import conversations, evaluation, personas  # noqa: E402
from tests.conftest import tiny_dict  # noqa: E402
from tests.support.fault_proxy import FaultProxy  # noqa: E402
from tests.support.faults import FAULTS  # noqa: E402
from tests.support.stub_server import StubServer  # noqa: E402

STAGES = ("personas", "conversations", "evaluation")
TIMEOUT_S = 1.0  # each role's, per request
LIMIT_S = 120.0  # a stage still running after this long is a hang
ROLES = ("generator", "user", "inducer", "assistant", "judge")


@dataclass
class Outcome:
    stage: str
    kind: str
    rate: float
    outcome: str  # "completed", "refused, named", "DEFECT"
    seconds: float
    faults: int
    detail: str = ""


def stage_dict(folder: Path, base_url: str) -> dict[str, Any]:
    """The tiny profile in `folder`, small, with every role and model under test at
    `base_url`: a 1 s timeout and one retry each."""
    limits = {"timeout": TIMEOUT_S, "max_retries": 1}
    roles = {name: {"model": "stub", "base_url": base_url, "temperature": 0.7,
                    "max_tokens": 64, "concurrency": 4, **limits} for name in ROLES}
    models = [{"name": name, "model": f"stub-{name}", "base_url": base_url, **limits}
              for name in ("a", "b")]
    return tiny_dict(folder, roles=roles, personas={"calls_per_round": 2},
                     conversations={"n_conversations": 4, "turns": 2, "concurrency": 4},
                     evaluation={"turns": 2, "bootstrap_samples": 50, "models": models})


def products(stage: str, params: Params, url: str) -> dict[str, str]:
    """What a stage wrote, per file: its records' count and a digest of them in any order (the
    stub answers a request the same each time, so a retried request changes nothing), the
    server's URL, which records name, left out."""
    layout = params.layout
    files = {"personas": [layout.pool("profiles"), layout.pool("personalities"),
                          layout.personas, layout.benchmark],
             "conversations": [layout.conversations],
             "evaluation": [layout.eval_records(m.name) for m in params.evaluation.models]
             + [layout.metrics]}[stage]
    return {f.name: _digest(f, url) for f in files}


def _digest(path: Path, url: str) -> str:
    if not path.exists():
        return "missing"
    lines = sorted(path.read_text().replace(url, "URL").splitlines())
    return f"{len(lines)} records, {hashlib.sha256(chr(10).join(lines).encode()).hexdigest()[:8]}"


def run_stage(stage: str, params: Params) -> None:
    """The stage's public entry point."""
    {"personas": personas.run_stage, "conversations": conversations.run_stage,
     "evaluation": evaluation.run_stage}[stage](params)


def write_inputs(folder: Path, seed: int) -> Path:
    """The personas and benchmark that stages 2 and 5 read, paired from the built-in seed
    pools (no stage 1 to wait for); returns their folder."""
    from aloe.core.records import write_records
    from aloe.core.schemas import persona_check
    from aloe.stages.pools import builtin_seeds, cross_benchmark

    profiles, personalities = ([{"id": f"{kind}-{i:04d}", "text": text, "source": "seed"}
                                for i, text in enumerate(builtin_seeds(kind)[:6], start=1)]
                               for kind in ("profile", "personality"))
    folder.mkdir(parents=True, exist_ok=True)
    write_records(folder / "personas.jsonl",
                  personas.pair_personas(profiles[:4], personalities[:4], 2, seed),
                  check=persona_check())
    write_records(folder / "benchmark.jsonl", cross_benchmark(profiles[4:], personalities[4:], 2),
                  check=persona_check())
    return folder


def seed_folder(folder: Path, inputs: Path | None) -> None:
    """Give a run folder the personas and benchmark that stages 2 and 5 read."""
    if inputs is None:
        return
    run_dir = folder / "outputs" / "tiny"
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("personas.jsonl", "benchmark.jsonl"):
        shutil.copy(inputs / name, run_dir / name)


def in_thread(work: Callable[[], None], limit: float) -> BaseException | None | str:
    """Run `work` in a daemon thread: its exception, None, or "hang" past `limit` seconds."""
    result: list[BaseException | None] = []

    def target() -> None:
        try:
            work()
            result.append(None)
        except BaseException as error:  # noqa: BLE001 - every outcome is classified
            result.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    return result[0] if result else "hang"


def classify(error: BaseException | None, kind: str, url: str, counted: dict[str, str],
             planned: dict[str, str]) -> tuple[str, str]:
    """(outcome, detail) of one run; see the module's docstring."""
    if error is None:
        if counted != planned:
            return "DEFECT", f"completed, but wrote {counted}; without faults {planned}"
        return "completed", ""
    message = str(error)
    if not isinstance(error, AloeError):
        return "DEFECT", f"{type(error).__name__}: {message}"
    missing = [what for what, words in (("one line", "\n" not in message),
                                        ("role", "role '" in message),
                                        ("server", url in message),
                                        ("cause", FAULTS[kind].cause in message))
               if not words]
    if missing:
        return "DEFECT", f"no {'/'.join(missing)}: {type(error).__name__}: {message}"
    return "refused, named", message


def drill_one(stage: str, kind: str, rate: float, seed: int, upstream: str,
              inputs: Path | None, planned: dict[str, str]) -> Outcome:
    """One stage against one kind of fault at one rate, in a fresh run folder."""
    draws = f"{seed}/{stage}/{kind}/{rate:g}"  # its own RNG: every run sees faults early
    with tempfile.TemporaryDirectory(prefix="fault_drill_") as tmp, \
            FaultProxy(upstream, rate=rate, seed=draws, answer=FAULTS[kind].answer) as proxy:
        folder = Path(tmp)
        seed_folder(folder, inputs)
        params = params_from_dict(stage_dict(folder, proxy.base_url), source="fault drill")
        start = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            error = in_thread(lambda: run_stage(stage, params), LIMIT_S)
        seconds = time.monotonic() - start
        if error == "hang":
            return Outcome(stage, kind, rate, "DEFECT", seconds, proxy.total_faults,
                           f"still running after {LIMIT_S:g} s")
        assert not isinstance(error, str)
        wrote = products(stage, params, proxy.base_url) if error is None else {}
        outcome, detail = classify(error, kind, proxy.base_url, wrote, planned)
        return Outcome(stage, kind, rate, outcome, seconds, proxy.total_faults, detail)


def baseline(stage: str, upstream: str, inputs: Path | None) -> dict[str, str]:
    """The stage's products without faults: what every run under faults must match."""
    with tempfile.TemporaryDirectory(prefix="fault_drill_") as tmp:
        folder = Path(tmp)
        seed_folder(folder, inputs)
        params = params_from_dict(stage_dict(folder, upstream), source="fault drill")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            run_stage(stage, params)
        return products(stage, params, upstream)


def print_table(outcomes: list[Outcome], show: bool = False) -> None:
    """One line per run; under a DEFECT (or every refusal, with `show`) its message."""
    width = max(len(k) for k in FAULTS)
    print(f"{'stage':<14}{'kind':<{width + 2}}{'rate':>5}  {'outcome':<15}{'s':>6}{'faults':>7}")
    for o in outcomes:
        print(f"{o.stage:<14}{o.kind:<{width + 2}}{o.rate:>5g}  {o.outcome:<15}"
              f"{o.seconds:>6.1f}{o.faults:>7}")
        if o.outcome == "DEFECT" or (show and o.detail):
            print(f"    {o.detail[:400]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default=",".join(FAULTS),
                        help="comma-separated kinds of tests/support/faults.py (default: all)")
    parser.add_argument("--rates", default="0.1,0.5,1.0")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--seed", type=int, default=0,
                        help="which requests get the fault: each run draws from its own RNG, "
                             "seeded with this, the stage, the kind and the rate")
    parser.add_argument("--messages", action="store_true",
                        help="print every refusal's message under its line")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    rates = [float(r) for r in args.rates.split(",")]
    unknown = [k for k in kinds if k not in FAULTS] + [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown kind or stage: {', '.join(unknown)}")
    started = time.monotonic()
    outcomes: list[Outcome] = []
    with StubServer(seed=args.seed) as stub, tempfile.TemporaryDirectory() as scratch:
        inputs = write_inputs(Path(scratch) / "inputs", args.seed)
        for stage in stages:
            given = None if stage == "personas" else inputs
            planned = baseline(stage, stub.base_url, given)
            for kind in kinds:
                for rate in rates:
                    outcomes.append(drill_one(stage, kind, rate, args.seed, stub.base_url,
                                              given, planned))
                    print(f"{stage} / {kind} / {rate:g}: {outcomes[-1].outcome}",
                          file=sys.stderr, flush=True)
    print_table(outcomes, args.messages)
    totals = Counter(o.outcome for o in outcomes)
    print(f"\n{len(outcomes)} runs (seed {args.seed}): "
          + ", ".join(f"{n} {name}" for name, n in sorted(totals.items()))
          + f"; {time.monotonic() - started:.0f} s in all")
    return 1 if totals["DEFECT"] else 0


if __name__ == "__main__":
    sys.exit(main())
