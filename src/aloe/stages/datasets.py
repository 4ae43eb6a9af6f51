"""Stage 2 exports: the conversation trees as Hugging Face datasets in TRL's conversational
formats, split by persona.

One example per decided turn. The prompt is the chat along the branch that was continued, up
to and including that turn's user message (no system message: the policy must learn to tailor
its replies without being told who the user is); with `sft.history: preferred` (the released
SFT) an SFT prompt holds the preferred reply of every earlier turn instead (the continued one
where a turn has no preferred reply). `sft` completes the prompt with the preferred reply;
`dpo` pairs the preferred reply (chosen) with the other one (rejected).

Left out and counted: inconsistent and unparseable verdicts; turns whose preferred reply is
empty or the same text as the other; turns whose "hinted" reply had no hint because the
inducer's answer stayed unreadable (`no_hint`: the pair would not contrast a hint with none);
and conversations the reference protocol dropped. No persona is in both train and validation.
"""

from __future__ import annotations

import functools
import math
import os
import random
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from aloe.core.config import Params
from aloe.core.errors import writing
from aloe.core.records import write_json
from aloe.roles.judges import BRANCHES
from aloe.stages.conversations import load_conversations


def _features(kind: str) -> Any:
    from datasets import Features, List, Value

    chat = List({"role": Value("string"), "content": Value("string")})
    ids = {"persona_id": Value("string"), "conversation_id": Value("string"),
           "turn": Value("int32")}
    if kind == "sft":
        return Features({"prompt": chat, "completion": chat, **ids})
    return Features({"prompt": chat, "chosen": chat, "rejected": chat, **ids})


def examples(record: dict[str, Any]) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The judged turns of one conversation tree as examples, and what was left out and why.

    Each example: `prompt` (the continued branch up to this turn's user message),
    `preferred_prompt` (the same with every earlier turn's preferred reply), `preferred` and
    `other` replies, and the ids.
    """
    if record.get("dropped"):
        return [], Counter(dropped_conversation_turns=len(record["turns"]))
    continued: list[dict[str, str]] = []
    preferred_chat: list[dict[str, str]] = []
    kept: list[dict[str, Any]] = []
    left_out: Counter[str] = Counter()
    for turn in record["turns"]:
        user = {"role": "user", "content": turn["user"]}
        continued.append(user)
        preferred_chat.append(user)
        preferred = turn["verdict"]["preferred"]
        other = BRANCHES[1 - BRANCHES.index(preferred)] if preferred in BRANCHES else None
        if other is None:
            left_out[preferred] += 1
        elif not turn["inferred"].get("parsed", True):
            left_out["no_hint"] += 1  # the hinted reply was written without a hint
        elif not turn[preferred].strip():
            left_out["empty_reply"] += 1
        elif turn[preferred].strip() == turn[other].strip():
            left_out["identical_replies"] += 1  # nothing to prefer
        else:
            kept.append({"prompt": [dict(m) for m in continued],
                         "preferred_prompt": [dict(m) for m in preferred_chat],
                         "preferred": turn[preferred], "other": turn[other],
                         "persona_id": str(record["persona"]["id"]),
                         "conversation_id": record["id"], "turn": int(turn["turn"])})
        reply = turn[turn["continued_with"]]
        continued.append({"role": "assistant", "content": reply})
        preferred_chat.append({"role": "assistant", "content": turn[preferred]
                               if preferred in BRANCHES else reply})
    return kept, left_out


def split_personas(persona_ids: list[str], fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """Train and validation personas: a seeded shuffle, ceil(fraction x n) to validation, but
    never all of them (train keeps at least one) and none when there is only one persona."""
    ids = sorted(set(persona_ids))
    random.Random(f"{seed}:split").shuffle(ids)
    n_val = min(math.ceil(fraction * len(ids)), len(ids) - 1) if fraction > 0 else 0
    n_val = max(n_val, 0)
    return set(ids[n_val:]), set(ids[:n_val])


def _as_sft(example: dict[str, Any], history: str = "continued") -> dict[str, Any]:
    return {"prompt": example["preferred_prompt" if history == "preferred" else "prompt"],
            "completion": [{"role": "assistant", "content": example["preferred"]}],
            **{k: example[k] for k in ("persona_id", "conversation_id", "turn")}}


def _as_dpo(example: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": example["prompt"],
            "chosen": [{"role": "assistant", "content": example["preferred"]}],
            "rejected": [{"role": "assistant", "content": example["other"]}],
            **{k: example[k] for k in ("persona_id", "conversation_id", "turn")}}


def _dataset(rows: list[dict[str, Any]], features: Any) -> Any:
    """A Dataset with these columns even when there are no rows (from_list would drop them)."""
    from datasets import Dataset

    return Dataset.from_dict({name: [row[name] for row in rows] for name in features},
                             features=features)


def _save(dataset_dict: Any, target: Path) -> None:
    """Save a DatasetDict so that `target` is always either the old or the new export."""
    staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    shutil.rmtree(staging, ignore_errors=True)
    # An empty split would be saved without any data file and then fail to load: give it one.
    shards = {name: 1 for name, split in dataset_dict.items() if split.num_rows == 0}
    import datasets as hf_datasets

    was_disabled = hf_datasets.are_progress_bars_disabled()
    hf_datasets.disable_progress_bars()  # a bar per split and kind says nothing here
    try:
        with writing(target):
            dataset_dict.save_to_disk(str(staging), num_shards=shards)
    except BaseException:  # a full disk included: no half-written export is left behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if not was_disabled:
            hf_datasets.enable_progress_bars()
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


@dataclass
class ExportSummary:
    """What the exports hold; saved as data/export_summary.json."""

    conversations: int
    turns: int
    examples: int
    left_out: dict[str, int]  # turns that gave no example, by reason
    train: dict[str, int]  # examples, personas
    validation: dict[str, int]

    def table(self) -> pd.DataFrame:
        """Examples and personas per split."""
        return pd.DataFrame({"train": self.train, "validation": self.validation})

    def left_out_table(self) -> pd.DataFrame:
        return pd.Series({"examples": self.examples,
                          **{f"left out: {k}": v for k, v in self.left_out.items()}},
                         name="count").to_frame()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def export(params: Params) -> ExportSummary:
    """Write `data/sft` and `data/dpo` (DatasetDicts with train and validation) and
    `data/export_summary.json`; return the summary (counts kept and left out, per split)."""
    from datasets import DatasetDict

    records = load_conversations(params)
    kept: list[dict[str, Any]] = []
    left_out: Counter[str] = Counter()
    for record in records:
        record_kept, record_left = examples(record)
        kept += record_kept
        left_out += record_left
    train_ids, val_ids = split_personas([e["persona_id"] for e in kept],
                                        params.conversations.validation_fraction, params.run.seed)
    splits = {"train": [e for e in kept if e["persona_id"] in train_ids],
              "validation": [e for e in kept if e["persona_id"] in val_ids]}
    layout = params.layout
    layout.data.mkdir(parents=True, exist_ok=True)
    as_sft = functools.partial(_as_sft, history=params.sft.history)
    for kind, convert in (("sft", as_sft), ("dpo", _as_dpo)):
        features = _features(kind)
        dataset = DatasetDict({name: _dataset([convert(e) for e in rows], features)
                               for name, rows in splits.items()})
        _save(dataset, layout.dataset(kind))
    summary = ExportSummary(
        conversations=len(records),
        turns=sum(len(r["turns"]) for r in records),
        examples=len(kept),
        left_out={"inconsistent": left_out.get("inconsistent", 0),
                  "unparseable": left_out.get("unparseable", 0),
                  **{k: v for k, v in left_out.items()
                     if k not in ("inconsistent", "unparseable")}},
        train={"examples": len(splits["train"]), "personas": len(train_ids)},
        validation={"examples": len(splits["validation"]), "personas": len(val_ids)},
    )
    write_json(layout.export_summary, summary.to_json())
    return summary
