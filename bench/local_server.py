"""Throughput of the local server (`transformers serve`) in several configurations, on the
tiny profile's real request shapes, at several client concurrencies.

    .venv/bin/python bench/local_server.py [--configs plain cb ...] [--concurrency 1 2 4 8]
                                           [--batch 8] [--reps 1] [--llama-cpp-python PY]

Every configuration's server is started first and kept up (an idle one costs no CPU); then,
for each repetition and concurrency, the same batch of requests goes to each configuration in
turn (A, B, A, B ...), so that load from elsewhere on the machine falls on all of them alike.
A batch cycles through the shapes of the tiny profile's requests, built from the real prompt
templates: a persona-generation call (generator, max 160 tokens, temperature 0.8), a user
simulator's first message (user, 40, 0.8), an assistant reply (assistant, 48, 0.7) and a
preference judge (judge, 8, greedy).

Prints, per configuration and concurrency, requests/s and completion tokens/s, the ratio of
its requests/s to plain's at concurrency 2 (the tiny profile's; else at the lowest measured),
and its answers' validity: every answer non-empty; the share of judge answers `parse_choice`
reads; `same as c1`, how many of a batch's answers (same requests, same seeds) are the ones the
same configuration gave at concurrency 1 (fewer: the concurrency changes what is generated for
a request, i.e. for its cache key); and whether a greedy request (the assistant's shape at
temperature 0, asked twice with two seeds after the server's first request was a sampled one)
gets the same answer both times and the answer plain gives (a server that does not honour each
request's temperature fails this: a cache key that says "greedy" would hold a sampled answer);
and whether the judge's request, asked first of all and once more after the measurements,
gets the same answer (a server whose answer depends on the requests it served before breaks
the cache's premise that an answer is a function of its request).

`llama-cpp` and `llama-cpp-2servers` serve the embedded GGUF file itself (4-bit weights, as
shipped) with llama.cpp's OpenAI-compatible server from `llama-cpp-python[server]`, which is
not a dependency of the project: PyPI has it only as source, so installing it compiles
llama.cpp (2 to 4 minutes on 2 cores; `python -m venv V && V/bin/pip install
'llama-cpp-python[server]'`), and `--llama-cpp-python V/bin/python` names that interpreter.
Its `same as plain` says whether its greedy answer is the served float32 model's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from aloe.core.config import load_params, project_root
from aloe.core.local_model import embedded_gguf, local_model_path
from aloe.llm.server import LocalServer, _free_port, start_servers
from aloe.prompts import render
from aloe.roles.conversation_prompts import workbook_reply_messages
from aloe.roles.judges import parse_choice, preference_messages
from aloe.roles.simulator import simulator_messages
from aloe.stages.pools import builtin_seeds

# name: (continuous batching, more `transformers serve` flags, torch threads or None, servers)
# With more than one server each gets one request at a time, as `base_url: local` sends them
# (`local_model.servers`); one server gets as many at once as the concurrency.
CONFIGS: dict[str, tuple[bool, list[str], int | None, int]] = {
    "plain": (False, [], None, 1),
    "plain-2threads": (False, [], 2, 1),
    "plain-2servers": (False, [], None, 2),
    "plain-eager": (False, ["--attn-implementation", "eager"], None, 1),
    "plain-bf16": (False, ["--dtype", "bfloat16"], None, 1),
    "2servers-bf16": (False, ["--dtype", "bfloat16"], None, 2),
    "cb": (True, [], None, 1),
    "cb-2threads": (True, [], 2, 1),
    "cb-small-batch": (True, ["--cb-max-batch-tokens", "256"], None, 1),
    "compile": (False, ["--compile"], None, 1),
}
# name: servers; llama.cpp's own server on the GGUF file, the cores split among the servers
LLAMA_CPP: dict[str, int] = {"llama-cpp": 1, "llama-cpp-2servers": 2}


def request_shapes() -> list[dict[str, Any]]:
    """One request body per role of the tiny profile, from the real templates."""
    params = load_params(project_root() / "params" / "tiny.yaml")
    profiles, personalities = (builtin_seeds("profile")[:5],
                                     builtin_seeds("personality")[:2])
    persona = {"profile": profiles[0], "personality": personalities[0]}
    user = "Hi! I just finished a night shift. Any ideas for a quick dinner before I sleep?"
    history = [{"role": "user", "content": user}]
    first = "Try scrambled eggs on toast with some spinach: ten minutes and light enough."
    second = "You could order a pizza."
    roles = params.roles
    return [
        {"role": "generator", "max_tokens": roles.generator.max_tokens,
         "temperature": roles.generator.temperature,
         "messages": [{"role": "user", "content": render(
             "generate_profiles", n=params.personas.generate_n, examples="\n".join(profiles))}]},
        {"role": "user", "max_tokens": roles.user.max_tokens,
         "temperature": roles.user.temperature, "messages": simulator_messages(persona, [])},
        {"role": "assistant", "max_tokens": roles.assistant.max_tokens,
         "temperature": roles.assistant.temperature,
         "messages": workbook_reply_messages([], user, None)},
        {"role": "judge", "max_tokens": roles.judge.max_tokens,
         "temperature": roles.judge.temperature,
         "messages": preference_messages(persona, history, first, second)},
    ]


@dataclass
class Result:
    seconds: float
    requests: int
    tokens: int
    empty: int
    judge_read: int
    judge_total: int
    answers: list[str]  # in request order: the same seeds at every concurrency


async def _one(client: httpx.AsyncClient, server: LocalServer, shape: dict[str, Any],
               seed: int, url: str | None = None) -> tuple[str, int]:
    body = {"model": server.model, "messages": shape["messages"], "seed": seed,
            "max_tokens": shape["max_tokens"], "temperature": shape["temperature"]}
    response = await client.post(f"{url or server.base_url}/chat/completions", json=body)
    response.raise_for_status()
    data = response.json()
    return (data["choices"][0]["message"]["content"] or "",
            int(data["usage"]["completion_tokens"]))


async def batch(server: LocalServer, shapes: list[dict[str, Any]], n: int,
                concurrency: int) -> Result:
    """n requests cycling through the shapes, `concurrency` of them in flight at once."""
    gate = asyncio.Semaphore(concurrency)
    todo = [(shapes[i % len(shapes)], 1000 + i) for i in range(n)]
    free: asyncio.Queue[str] = asyncio.Queue()  # several servers: each one request at a time
    for url in server.base_urls:
        free.put_nowait(url)

    async def limited(client: httpx.AsyncClient, shape: dict[str, Any],
                      seed: int) -> tuple[str, int]:
        async with gate:
            if not server.replicas:
                return await _one(client, server, shape, seed)
            url = await free.get()
            try:
                return await _one(client, server, shape, seed, url)
            finally:
                free.put_nowait(url)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.perf_counter()
        answers = await asyncio.gather(*(limited(client, s, seed) for s, seed in todo))
        seconds = time.perf_counter() - started
    judged = [text for (shape, _), (text, _) in zip(todo, answers, strict=True)
              if shape["role"] == "judge"]
    return Result(seconds=seconds, requests=n, tokens=sum(t for _, t in answers),
                  empty=sum(1 for text, _ in answers if not text.strip()),
                  judge_read=sum(1 for text in judged if parse_choice(text) is not None),
                  judge_total=len(judged),
                  answers=[text for text, _ in answers])


def answers(server: LocalServer, shape: dict[str, Any], seeds: Sequence[int]) -> list[str]:
    """One request of `shape` per seed, one at a time."""
    async def ask() -> list[str]:
        async with httpx.AsyncClient(timeout=600) as client:
            return [(await _one(client, server, shape, seed))[0] for seed in seeds]

    return asyncio.run(ask())


def greedy_answers(server: LocalServer, shapes: list[dict[str, Any]]) -> list[str]:
    """The assistant's request at temperature 0, with two seeds, one at a time."""
    return answers(server, {**shapes[2], "temperature": 0.0}, (1, 2))


def judge_answer(server: LocalServer, shapes: list[dict[str, Any]]) -> str:
    """The judge's request (greedy) with one seed: asked first and after the measurements."""
    return answers(server, shapes[3], (7,))[0]


def start(name: str, model: Path, logs: Path, llama_python: str) -> LocalServer:
    if name in LLAMA_CPP:
        return start_llama_cpp(llama_python, LLAMA_CPP[name], logs / f"{name}.log")
    continuous, options, threads, count = CONFIGS[name]
    return start_servers(model, logs / f"{name}.log", 300, count, continuous, options, threads)


def llama_cpp_command(python: str, gguf: Path, port: int, threads: int) -> list[str]:
    """llama-cpp-python's server on the GGUF file: its chat template comes from the file."""
    return [python, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
            "--port", str(port), "--n_threads", str(threads), "--n_threads_batch",
            str(threads), "--n_ctx", "4096", "--logits_all", "false"]


def start_llama_cpp(python: str, count: int, log: Path, timeout: float = 120) -> LocalServer:
    """`count` llama.cpp servers of the embedded GGUF, the machine's cores split among them,
    once each lists its model; the first, with the others as its replicas."""
    if subprocess.run([python, "-c", "import llama_cpp.server"], capture_output=True).returncode:
        raise SystemExit(f"bench/local_server.py: {python} has no llama-cpp-python[server]: "
                         "install it in a venv of its own (see this file's docstring) and "
                         "pass --llama-cpp-python V/bin/python")
    gguf, threads = embedded_gguf(), max(1, (os.cpu_count() or 2) // count)
    servers = []
    with log.open("ab") as sink:
        for _ in range(count):
            port = _free_port()
            process = subprocess.Popen(llama_cpp_command(python, gguf, port, threads),
                                       stdout=sink, stderr=subprocess.STDOUT)
            servers.append(LocalServer(f"http://127.0.0.1:{port}/v1", str(gguf), process))
    deadline = time.monotonic() + timeout
    for server in servers:
        while not _lists_models(server.base_url):
            if time.monotonic() > deadline or server.process.poll() is not None:
                for started in servers:
                    started.stop()
                said = [line for line in log.read_text(errors="replace").splitlines()
                        if line.strip()] or ["nothing"]
                raise SystemExit(f"bench/local_server.py: llama.cpp's server did not come up "
                                 f"within {timeout:.0f} s; the last line of its log: "
                                 f"{said[-1][:200]}")
            time.sleep(0.5)
    servers[0].replicas = servers[1:]
    return servers[0]


def _lists_models(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/models", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["plain", "cb"],
                        choices=[*CONFIGS, *LLAMA_CPP])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--batch", type=int, default=8, help="requests per measurement")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--llama-cpp-python", default=sys.executable, metavar="PY",
                        help="an interpreter with llama-cpp-python[server], for llama-cpp*")
    args = parser.parse_args()
    params = load_params(project_root() / "params" / "tiny.yaml")
    params.local_model.cache_dir = str(project_root() / "outputs" / "models")
    model = local_model_path(params)
    shapes = request_shapes()
    configs = ["plain", *[c for c in args.configs if c != "plain"]]
    results: dict[tuple[str, int], list[Result]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {name: start(name, model, Path(tmp), args.llama_cpp_python)
                   for name in configs}
        try:
            judged = {name: [judge_answer(servers[name], shapes)] for name in configs}
            for name in configs:  # warm-up: a first request (sampled) loads and initialises
                asyncio.run(batch(servers[name], shapes[1:2], 1, 1))
            greedy = {name: greedy_answers(servers[name], shapes) for name in configs}
            for _ in range(args.reps):
                for concurrency in args.concurrency:
                    for name in configs:  # A, B, A, B: load falls on each alike
                        done = asyncio.run(batch(servers[name], shapes, args.batch,
                                                 concurrency))
                        results.setdefault((name, concurrency), []).append(done)
                        print(f"{name} at concurrency {concurrency}: {done.requests} requests "
                              f"in {done.seconds:.1f} s", flush=True)
            for name in configs:
                judged[name].append(judge_answer(servers[name], shapes))
        finally:
            for server in servers.values():
                server.stop()
    print(report(results, configs, args.concurrency, greedy, judged))


def report(results: dict[tuple[str, int], list[Result]], configs: list[str],
           levels: list[int], greedy: dict[str, list[str]],
           judged: dict[str, list[str]]) -> str:
    """One line per configuration and concurrency (medians over the repetitions)."""
    def rate(name: str, c: int) -> float:
        return statistics.median(r.requests / r.seconds for r in results[(name, c)])

    level = 2 if ("plain", 2) in results else levels[0]  # 2: the tiny profile's
    base = rate("plain", level)
    lines = [f"{'config':<16} {'conc':>4} {'req/s':>7} {'tok/s':>7} {f'x plain@{level}':>9} "
             f"{'empty':>5} {'judge read':>10} {'same as c1':>10}"]
    for name in configs:
        for c in levels:
            runs = results[(name, c)]
            tokens = statistics.median(r.tokens / r.seconds for r in runs)
            read = sum(r.judge_read for r in runs), sum(r.judge_total for r in runs)
            alone = results.get((name, 1))
            same = (f"{sum(a == b for a, b in zip(runs[0].answers, alone[0].answers)):>3}/"
                    f"{len(runs[0].answers):<3}" if alone else "-")
            lines.append(f"{name:<16} {c:>4} {rate(name, c):>7.3f} {tokens:>7.1f} "
                         f"{rate(name, c) / base:>9.2f} {sum(r.empty for r in runs):>5} "
                         f"{read[0]:>5}/{read[1]:<4} {same:>10}")
    for name in configs:
        first, second = greedy[name]
        lines.append(f"{name}: greedy request repeatable: {'yes' if first == second else 'NO'}"
                     f", same as plain: {'yes' if first == greedy['plain'][0] else 'NO'}; "
                     f"judge's answer the same first and after the measurements: "
                     f"{'yes' if judged[name][0] == judged[name][1] else 'NO'} "
                     f"({' / '.join(repr(a[:24]) for a in judged[name])})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
