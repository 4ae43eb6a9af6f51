"""The training stages' data: the stage-2 export loaded and checked for TRL's conversational
format, each example's earlier turns cut from the oldest so the prompt and reply fit
`max_length` (never the reply), and the rows tokenised as TRL's trainers take them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aloe.core.config import Params
from aloe.core.records import DataError

if TYPE_CHECKING:  # heavy imports stay lazy: validation must not pay for torch
    from datasets import Dataset, DatasetDict

log = logging.getLogger("aloe.stages.training")


COLUMNS = {"sft": ("prompt", "completion"), "dpo": ("prompt", "chosen", "rejected")}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def load_splits(params: Params, stage: str) -> "DatasetDict":
    """The stage-2 export (train and validation), checked for TRL's conversational format.

    Loaded into memory, so that tokenisation leaves no cache files in the export folder."""
    from datasets import DatasetDict, load_from_disk

    folder = params.layout.dataset(stage)
    data = load_from_disk(str(folder), keep_in_memory=True)
    if not isinstance(data, DatasetDict) or "train" not in data:
        raise DataError(f"{folder}: expected a DatasetDict with a 'train' split")
    missing = [c for c in COLUMNS[stage] if c not in data["train"].column_names]
    if missing:
        raise DataError(f"{folder}: the train split lacks column(s) {', '.join(missing)} "
                        f"(has {', '.join(data['train'].column_names)})")
    if len(data["train"]) == 0:
        raise DataError(f"{folder}: the train split is empty: stage 2 kept no example "
                        "(see data/export_summary.json)")
    return data


def render_length(tokenizer: Any, messages: list[dict[str, str]], generation: bool) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=generation)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_history(tokenizer: Any, prompt: list[dict[str, str]],
                completions: Sequence[list[dict[str, str]]],
                max_length: int) -> list[dict[str, str]]:
    """Drop the oldest turns of a conversation until prompt + longest completion fit.

    Truncating tokens would cut the completion (the only thing SFT learns from) or the middle
    of a message; dropping whole turns keeps a well-formed chat that ends with the user's last
    message. A leading system message is kept; the history restarts at a user message.
    """
    def total(messages: list[dict[str, str]]) -> int:
        return max(render_length(tokenizer, messages + list(c), False) for c in completions)

    messages = [dict(m) for m in prompt]
    if total(messages) <= max_length:
        return messages
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system):]
    while len(turns) > 1 and total(system + turns) > max_length:
        turns = turns[1:]
        while len(turns) > 1 and turns[0]["role"] != "user":
            turns = turns[1:]
    return system + turns


def prepare_dataset(dataset: "Dataset", tokenizer: Any, stage: str, max_length: int) -> "Dataset":
    """The columns TRL trains on, each history shortened to fit `max_length`.

    An example whose last user message alone fills `max_length` leaves no room for a reply:
    it is left out and counted (TRL would drop it silently); none left is an error."""
    columns = COLUMNS[stage]
    completions = columns[1:]
    dataset = dataset.select_columns(list(columns))

    def fit(example: dict[str, Any]) -> dict[str, Any]:
        prompt = fit_history(tokenizer, example["prompt"], [example[c] for c in completions],
                             max_length)
        return {"prompt": prompt, "shortened": len(prompt) < len(example["prompt"]),
                "prompt_tokens": render_length(tokenizer, prompt, True)}

    dataset = dataset.map(fit, desc=f"fitting {stage} histories into {max_length} tokens")
    shortened = sum(dataset["shortened"])
    if shortened:
        log.info("%s: %d of %d examples had their oldest turns dropped to fit max_length=%d",
                 stage, shortened, len(dataset), max_length)
    kept = dataset.filter(lambda e: e["prompt_tokens"] < max_length)
    if len(kept) < len(dataset):
        log.warning("%s: %d of %d examples left out: their last user message alone fills "
                    "max_length=%d", stage, len(dataset) - len(kept), len(dataset), max_length)
    if len(kept) == 0:
        raise DataError(f"{stage}: every one of the {len(dataset)} training examples has a "
                        f"prompt of max_length={max_length} tokens or more: raise "
                        f"{stage}.trainer.max_length")
    return kept.remove_columns(["shortened", "prompt_tokens"])
