"""verl's training rows for a run's personas (stage 1's `personas.jsonl`): one row per
persona and seed, whose `prompt` is the simulated user's first message and whose
`extra_info.interaction_kwargs` are what `verl.AloeInteraction.start_interaction` reads.

The first message is drawn here, through the environment, and written into the row twice
(the prompt the policy sees, and `first_message` for the interaction), so the dialogue the
interaction plays always starts from what the policy was shown, whatever the cache holds.
Rows go to parquet (what verl's `data.train_files` reads) or, for a `.jsonl` path, JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aloe.core.records import read_records
from aloe.core.schemas import persona_check
from aloe.stages.environment import UserEnvironment

ABILITY = "personalization"


def verl_row(persona: dict[str, Any], seed: int, first: str, *, name: str, protocol: str,
             index: int, split: str) -> dict[str, Any]:
    """One row in verl's RL dataset shape; the persona is JSON text so that parquet keeps
    personas with different fields in one column."""
    return {
        "data_source": f"aloe/{protocol}",
        "prompt": [{"role": "user", "content": first}],
        "ability": ABILITY,
        "reward_model": {"style": "interaction", "ground_truth": ""},
        "extra_info": {"index": index, "split": split, "interaction_kwargs": {
            "name": name, "persona": json.dumps(persona, ensure_ascii=False), "seed": seed,
            "first_message": first}},
    }


async def verl_rows(env: UserEnvironment, personas: Sequence[dict[str, Any]], *,
                    seeds: Sequence[int] = (0,), name: str = "aloe",
                    split: str = "train") -> list[dict[str, Any]]:
    """Every persona under every seed, with its first user message drawn by `env`."""
    pairs = [(p, s) for p in personas for s in seeds]
    dialogues = await env.reset_many([p for p, _ in pairs], [s for _, s in pairs])
    return [verl_row(p, s, str(d.history[0]["content"]), name=name, protocol=env.protocol.name,
                     index=i, split=split)
            for i, ((p, s), d) in enumerate(zip(pairs, dialogues))]


def read_personas(path: str | Path) -> list[dict[str, Any]]:
    """A run's training personas (`RunLayout.personas`), checked like stage 2 checks them."""
    return read_records(path, check=persona_check())


def write_rows(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Parquet, or JSON lines when `path` ends in .jsonl."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return path
    import pandas as pd  # only here: the JSON lines path needs neither

    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def write_verl_dataset(params_path: str | Path, out: str | Path, *, seeds: Sequence[int] = (0,),
                       protocol: str | None = None, name: str = "aloe") -> Path:
    """The rows of a run's training personas (its `personas.jsonl`), drawn with the same
    environment the interaction `name` builds from `params_path`, written to `out`."""
    from aloe.core.config import load_params
    from aloe.stages.rl_adapters.verl import AloeInteraction

    interaction = AloeInteraction({"params": str(params_path), "protocol": protocol,
                                   "name": name})
    personas = read_personas(load_params(params_path).layout.personas)
    try:
        rows = asyncio.run(verl_rows(interaction.env, personas, seeds=seeds, name=name))
    finally:
        interaction.close()
    return write_rows(rows, out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="verl training rows for a run's personas.")
    parser.add_argument("params", help="the run's parameter file")
    parser.add_argument("out", help="a .parquet (verl's data.train_files) or .jsonl path")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--protocol", default=None, help="default: evaluation.protocol")
    parser.add_argument("--name", default="aloe", help="the interaction's name in verl's YAML")
    args = parser.parse_args(argv)
    path = write_verl_dataset(args.params, args.out, seeds=args.seeds, protocol=args.protocol,
                              name=args.name)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
