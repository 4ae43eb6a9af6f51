"""Wall time of the same N uncached requests at concurrency 1 and 8 against the local server.

    .venv/bin/python bench/llm_throughput.py [--n 16] [--max-tokens 32]

Each concurrency level gets its own empty cache, so every request reaches the server; the
prompts are identical across levels. Prints both times and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from aloe.core.config import load_params, project_root
from aloe.llm import LLM, ensure_local_server, run_sync


def timed_batch(n: int, concurrency: int, max_tokens: int, workdir: Path) -> float:
    params = load_params(project_root() / "params" / "tiny.yaml")
    params.run.output_dir = str(workdir / f"c{concurrency}")
    params.local_model.cache_dir = str(project_root() / "outputs" / "models")
    params.roles.assistant.concurrency = concurrency
    params.roles.assistant.max_tokens = max_tokens
    params.roles.assistant.temperature = 0.0
    prompts = [[{"role": "user", "content": f"Give one tip for a calm morning (#{i})."}]
               for i in range(n)]
    llm = LLM.for_run(params, "bench")
    started = time.perf_counter()
    replies = run_sync(llm.chat_many("assistant", prompts))
    elapsed = time.perf_counter() - started
    failed = [r for r in replies if isinstance(r, BaseException)]
    if failed:
        raise SystemExit(f"{len(failed)} requests failed: {failed[0]}")
    assert llm.ledger.roles["assistant"].cache_hits == 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        params = load_params(project_root() / "params" / "tiny.yaml")
        params.run.output_dir = tmp
        params.local_model.cache_dir = str(project_root() / "outputs" / "models")
        ensure_local_server(params)  # started (and warmed) before any timing
        timed_batch(2, 2, 4, Path(tmp) / "warm")
        serial = timed_batch(args.n, 1, args.max_tokens, Path(tmp))
        parallel = timed_batch(args.n, 8, args.max_tokens, Path(tmp))
    print(f"{args.n} uncached requests, max_tokens={args.max_tokens}, local server")
    print(f"concurrency 1: {serial:6.1f} s  ({args.n / serial:.2f} req/s)")
    print(f"concurrency 8: {parallel:6.1f} s  ({args.n / parallel:.2f} req/s)")
    print(f"speed-up (c1 time / c8 time): {serial / parallel:.2f}x")


if __name__ == "__main__":
    main()
