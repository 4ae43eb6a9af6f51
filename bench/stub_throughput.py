"""Requests per second against the OpenAI-protocol stub server, from one async client.

    .venv/bin/python bench/stub_throughput.py [--n 5000] [--concurrency 128] [--json]

Starts `tests/support/stub_server.py` (its own process), then fires N chat requests at the
given concurrency from one `openai.AsyncOpenAI` client (max_retries=0, its default connection
pool, as the project's LLM client builds it) and from one raw `httpx.AsyncClient` (a pool as
large as the concurrency), each after a short warm-up. The requests mix the roles' shapes
(generator, simulator, judge with log-probabilities, assistant) and differ in `seed`.

Besides the rates it reports the CPU seconds each side spent: the stub's CPU time per request
gives the rate the stub could serve on one core (`stub_capacity_rps`), which shows whether the
stub or the client was the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.stub_server import StubServer  # noqa: E402

FILLER = ("She is a 29-year-old night-shift nurse in Leeds who grows tomatoes on her balcony "
          "and runs a half marathon every spring. ")
SHAPES: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "Write 20 new user profiles, each about a "
                   "different person.\n\nExamples:\n" + FILLER * 6 + "\nWrite each profile as "
                   "one paragraph starting with \"He is\" or \"She is\"."}]},
    {"messages": [{"role": "system", "content": "You are role-playing a real person. " + FILLER},
                  {"role": "user", "content": "Write your next message to the assistant, in "
                   "character, one to three short sentences."}]},
    {"messages": [{"role": "system", "content": "You are a careful annotator."},
                  {"role": "user", "content": "About the user: " + FILLER * 3 + "\nReply 1: "
                   "Sounds tiring!\n\nReply 2: Here are tips.\n\nWhich reply would this user "
                   "like better? Answer with 1 or 2 only."}],
     "logprobs": True, "top_logprobs": 5, "max_tokens": 16},
    {"messages": [{"role": "system", "content": "You are a friendly, helpful assistant."},
                  {"role": "user", "content": "long day at the hospital, my feet hurt"}]},
]


def request(i: int) -> dict[str, Any]:
    shape = SHAPES[i % len(SHAPES)]
    return {"model": "stub", "seed": i, "temperature": 0.7, "max_tokens": 256, **shape}


async def run_openai(base_url: str, n: int, concurrency: int, offset: int) -> int:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with gate:
            try:
                completion = await client.chat.completions.create(**request(offset + i))
                assert completion.choices[0].message.content
            except openai.OpenAIError:
                failures += 1

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.close()
    return failures


async def run_httpx(base_url: str, n: int, concurrency: int, offset: int) -> int:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    failures = 0
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) as client:

        async def one(i: int) -> None:
            nonlocal failures
            async with gate:
                try:
                    reply = await client.post("/chat/completions", content=json.dumps(
                        request(offset + i)), headers={"content-type": "application/json"})
                    assert reply.json()["choices"][0]["message"]["content"]
                except (httpx.HTTPError, AssertionError, KeyError):
                    failures += 1

        await asyncio.gather(*(one(i) for i in range(n)))
    return failures


def measure(name: str, runner: Any, stub: StubServer, n: int, concurrency: int,
            offset: int) -> dict[str, Any]:
    asyncio.run(runner(stub.base_url, min(n // 10, 500), concurrency, offset + 10**7))  # warm
    server = psutil.Process(stub.pid)
    server_cpu, client_cpu = sum(server.cpu_times()[:2]), time.process_time()
    started = time.perf_counter()
    failures = asyncio.run(runner(stub.base_url, n, concurrency, offset))
    seconds = time.perf_counter() - started
    server_cpu = sum(server.cpu_times()[:2]) - server_cpu
    client_cpu = time.process_time() - client_cpu
    return {"client": name, "requests": n, "failures": failures, "seconds": round(seconds, 3),
            "rps": round(n / seconds, 1), "client_cpu_s": round(client_cpu, 3),
            "stub_cpu_s": round(server_cpu, 3),
            "stub_capacity_rps": round(n / server_cpu, 1) if server_cpu > 0 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with StubServer(seed=0, latency_s=args.latency_s) as stub:
        results = [measure("httpx", run_httpx, stub, args.n, args.concurrency, 0),
                   measure("openai", run_openai, stub, args.n, args.concurrency, args.n)]
    summary = {"n": args.n, "concurrency": args.concurrency, "latency_s": args.latency_s,
               "cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2),
               "results": {r["client"]: r for r in results}}
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{args.n} requests at concurrency {args.concurrency} against the stub "
          f"(latency {args.latency_s} s; {summary['cpus']} CPUs, load {summary['load_1min']})")
    for r in results:
        print(f"  {r['client']:>6}: {r['rps']:8.1f} req/s  ({r['seconds']:.2f} s, "
              f"{r['failures']} failed; client CPU {r['client_cpu_s']:.2f} s, stub CPU "
              f"{r['stub_cpu_s']:.2f} s = {r['stub_capacity_rps']} req/s per stub core)")


if __name__ == "__main__":
    main()
