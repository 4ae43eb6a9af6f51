"""Dialogue turns per second through the simulated-user environment (`aloe.stages.environment`)
against the stub server: the environment must not be what holds an RL trainer back.

    .venv/bin/python bench/environment_throughput.py [--dialogues 256] [--turns 4]
                                                      [--concurrency 64] [--protocol aloe]

Each turn is a user message and a judge score (two requests); the policy's reply is a fixed
text, so what is measured is the environment and the LLM layer, not a policy. The first pass
goes to the stub; the second replays the same dialogues from the response cache.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from aloe.core import protocols
from aloe.core.config import RoleConfig
from aloe.core.layout import RunLayout
from aloe.llm import LLM, run_sync
from aloe.stages.environment import UserEnvironment

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.stub_server import StubServer  # noqa: E402

REPLY = "Happy to help. Tell me a little more about what you need."


def personas(n: int) -> list[dict[str, str]]:
    return [{"id": f"p{i}", "profile": f"He is a {20 + i % 50}-year-old baker in town {i}.",
             "personality": "He is warm, talkative and easily distracted."} for i in range(n)]


def play(env: UserEnvironment, users: list[dict[str, str]]) -> tuple[int, float]:
    """Every dialogue to its end, all at once; (turns played, seconds)."""
    async def run() -> int:
        dialogues = await env.reset_many(users, list(range(len(users))))
        turns = 0
        while not all(d.done for d in dialogues):
            live = [d for d in dialogues if not d.done]
            await env.step_many(live, [REPLY] * len(live))
            turns += len(live)
        return turns
    started = time.perf_counter()
    turns = run_sync(run())
    return turns, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=256)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--protocol", default="aloe")
    args = parser.parse_args()
    users = personas(args.dialogues)
    with StubServer(seed=0) as stub, tempfile.TemporaryDirectory() as folder:
        role = RoleConfig(model="stub", base_url=stub.base_url, concurrency=args.concurrency,
                          max_tokens=64)
        layout = RunLayout(Path(folder) / "run", Path(folder) / "cache.sqlite")
        for label in ("to the stub", "from the cache"):
            llm = LLM({"user": role, "judge": role}, stage="bench", layout=layout)
            env = UserEnvironment(llm, protocols.get(args.protocol), turns=args.turns)
            turns, seconds = play(env, users)
            sent = sum(u.requests for u in llm.ledger.roles.values())
            print(f"{label:>15}: {turns:,} turns of {args.dialogues} dialogues in {seconds:.2f} s"
                  f" = {turns / seconds:,.0f} turns/s at concurrency {args.concurrency} "
                  f"({sent:,} requests sent)")


if __name__ == "__main__":
    main()
