"""Training exports with known content (data/sft and data/dpo as aloe.stages.datasets.export writes
them), for tests of the training stages."""

from __future__ import annotations

from typing import Any

from aloe.core.layout import RunLayout

# Short, well-formed multi-turn conversations: a prompt ends with the user's message.
TOPICS = ["hiking in the Alps", "learning the cello", "baking sourdough bread",
          "a first trip to Kyoto", "training for a marathon", "growing tomatoes"]


GOOD = "Start small: one clear goal this week about {topic}, and short notes after each try."


BAD = "{topic} is a topic. Many things matter and opinions differ."


def conversation_examples(index: int, turns: int) -> list[dict[str, Any]]:
    topic = TOPICS[index % len(TOPICS)]
    history: list[dict[str, str]] = []
    examples = []
    for turn in range(1, turns + 1):
        history.append({"role": "user", "content": f"Turn {turn}: any advice on {topic}? "
                                                    "I am a beginner with little time."})
        good, bad = GOOD.format(topic=topic), BAD.format(topic=topic.capitalize())
        ids = {"persona_id": f"p{index}", "conversation_id": f"c{index}", "turn": turn}
        examples.append({"prompt": [dict(m) for m in history], "good": good, "bad": bad, **ids})
        history.append({"role": "assistant", "content": good})
    return examples


def make_exports(layout: RunLayout, n_train: int = 6, n_val: int = 2) -> None:
    """`data/sft` and `data/dpo` as `aloe.stages.datasets.export` writes them."""
    from datasets import Dataset, DatasetDict

    rows = [e for i in range(4) for e in conversation_examples(i, turns=2)]
    splits = {"train": rows[:n_train], "validation": rows[n_train:n_train + n_val]}
    ids = ("persona_id", "conversation_id", "turn")

    def sft(r: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["good"]}],
                **{k: r[k] for k in ids}}

    def dpo(r: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["good"]}],
                "rejected": [{"role": "assistant", "content": r["bad"]}], **{k: r[k] for k in ids}}

    for kind, convert in (("sft", sft), ("dpo", dpo)):
        DatasetDict({name: Dataset.from_list([convert(r) for r in split])
                     for name, split in splits.items()}).save_to_disk(str(layout.dataset(kind)))
