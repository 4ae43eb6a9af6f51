"""Stage 2 exports: SFT and DPO datasets from the conversation trees, split by persona, in the
shape TRL's trainers take, with prompts that are exactly the conversation that led to a turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aloe.core.config import params_from_dict
from aloe.core.records import write_records
from aloe.stages.conversations import load_conversations, run_stage
from aloe.stages.datasets import examples, export, split_personas
from tests.support.conversation_runs import hand_tree, persona_records, small_dict, with_personas


def test_examples_follow_the_continued_branch() -> None:
    persona = persona_records(1)[0]
    tree = hand_tree("c0", persona, ["hinted", "inconsistent", "plain"],
                     ["plain", "hinted", "plain"])
    kept, left_out = examples(tree)
    assert left_out == {"inconsistent": 1}
    assert [e["turn"] for e in kept] == [1, 3]
    assert kept[0]["prompt"] == [{"role": "user", "content": "c0 user 1"}]
    assert kept[0]["preferred"] == "c0 hinted 1" and kept[0]["other"] == "c0 plain 1"
    assert kept[1]["prompt"] == [
        {"role": "user", "content": "c0 user 1"}, {"role": "assistant", "content": "c0 plain 1"},
        {"role": "user", "content": "c0 user 2"}, {"role": "assistant", "content": "c0 hinted 2"},
        {"role": "user", "content": "c0 user 3"}]
    assert kept[1]["preferred"] == "c0 plain 3" and kept[1]["other"] == "c0 hinted 3"


def test_a_turn_without_a_hint_is_no_preference_pair() -> None:
    """When the inducer's answer stayed unreadable, the "hinted" reply got no hint: the turn
    contrasts nothing and is left out (`no_hint`), though the conversation goes on."""
    tree = hand_tree("c0", persona_records(1)[0], ["hinted", "plain"], ["plain", "hinted"])
    tree["turns"][0]["inferred"] = {"profile": None, "personality": None, "parsed": False,
                                    "asked": 2, "raw": "I cannot tell."}
    kept, left_out = examples(tree)
    assert left_out == {"no_hint": 1} and [e["turn"] for e in kept] == [2]


def test_dropped_conversations_give_no_example() -> None:
    tree = hand_tree("c0", persona_records(1)[0], ["hinted"], ["plain"])
    tree["dropped"] = "turn 2: the inducer's answer could not be read (asked 2 times)"
    assert examples(tree) == ([], {"dropped_conversation_turns": 1})


def test_sft_history_can_hold_the_preferred_replies(tmp_path: Path) -> None:
    """`sft.history: preferred` (the released SFT): the prompt holds each earlier turn's
    preferred reply; DPO keeps the continued branch."""
    from datasets import load_from_disk

    data = small_dict(tmp_path, validation_fraction=0.0)
    data["sft"] = {**data["sft"], "history": "preferred"}
    params = params_from_dict(data)
    tree = hand_tree("c0", persona_records(1)[0], ["hinted", "inconsistent", "plain"],
                     ["plain", "hinted", "plain"])
    write_records(params.layout.conversations, [tree])
    export(params)
    sft = load_from_disk(str(params.layout.dataset("sft")))["train"].to_list()
    dpo = load_from_disk(str(params.layout.dataset("dpo")))["train"].to_list()
    last_sft = next(r for r in sft if r["turn"] == 3)["prompt"]
    last_dpo = next(r for r in dpo if r["turn"] == 3)["prompt"]
    assert [m["content"] for m in last_sft if m["role"] == "assistant"] == \
        ["c0 hinted 1", "c0 hinted 2"]  # preferred at turn 1; turn 2 undecided: continued
    assert [m["content"] for m in last_dpo if m["role"] == "assistant"] == \
        ["c0 plain 1", "c0 hinted 2"]  # the continued branch


def test_split_personas_never_shares_or_empties_train() -> None:
    ids = [f"p{i}" for i in range(10)]
    train, val = split_personas(ids + ids, 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8 and not train & val
    assert split_personas(ids, 0.2, seed=0) == (train, val)  # deterministic
    assert split_personas(["only"], 0.5, 0) == ({"only"}, set())
    assert split_personas(["a", "b"], 0.9, 0)[0]  # train keeps one
    assert split_personas(ids, 0.0, 0) == (set(ids), set())
    assert split_personas([], 0.2, 0) == (set(), set())


def test_export_of_hand_trees(tmp_path: Path) -> None:
    from datasets import load_from_disk

    params = params_from_dict(small_dict(tmp_path, validation_fraction=0.5))
    personas = persona_records(2)
    trees = [hand_tree("c0", personas[0], ["hinted", "unparseable"], ["plain", "hinted"]),
             hand_tree("c1", personas[1], ["plain", "inconsistent"], ["hinted", "hinted"]),
             hand_tree("c2", personas[0], ["inconsistent", "hinted"], ["plain", "plain"])]
    write_records(params.layout.conversations, trees)
    summary = export(params)
    assert summary.examples == 3
    assert summary.left_out == {"inconsistent": 2, "unparseable": 1}
    sft = load_from_disk(str(params.layout.dataset("sft")))
    dpo = load_from_disk(str(params.layout.dataset("dpo")))
    assert set(sft) == set(dpo) == {"train", "validation"}
    assert sft["train"].num_rows + sft["validation"].num_rows == 3
    assert not set(sft["train"]["persona_id"]) & set(sft["validation"]["persona_id"])
    assert set(dpo["train"].column_names) == {"prompt", "chosen", "rejected", "persona_id",
                                              "conversation_id", "turn"}
    row = next(r for r in dpo["train"].to_list() + dpo["validation"].to_list()
               if r["conversation_id"] == "c2")
    assert row["chosen"] == [{"role": "assistant", "content": "c2 hinted 2"}]
    assert row["rejected"] == [{"role": "assistant", "content": "c2 plain 2"}]
    assert row["prompt"][-1] == {"role": "user", "content": "c2 user 2"}
    again = export(params)  # re-export replaces the folders
    assert again.examples == 3
    assert load_from_disk(str(params.layout.dataset("sft")))["train"].num_rows
    assert params.layout.export_summary.exists()


def test_export_with_no_decided_turn_is_valid_and_empty(tmp_path: Path) -> None:
    from datasets import load_from_disk

    params = params_from_dict(small_dict(tmp_path))
    tree = hand_tree("c0", persona_records(1)[0], ["inconsistent"], ["plain"])
    write_records(params.layout.conversations, [tree])
    summary = export(params)
    assert summary.examples == 0
    sft = load_from_disk(str(params.layout.dataset("sft")))
    assert sft["train"].num_rows == 0 and "prompt" in sft["train"].column_names


# ------------------------------------------------------------------------------------------
# With a real stage run (the real embedded model)
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_run(local_server, tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Any:
    """The same small stage as tests/test_conversations.py (same requests: served from the
    shared cache when that test ran first), then exported."""
    tmp_path = tmp_path_factory.mktemp("datasets_run")
    params = with_personas(small_dict(tmp_path, n=3, turns=2, cache=shared_cache,
                                      validation_fraction=0.34))
    summary = run_stage(params)
    assert summary.failed == 0
    return params, export(params)


@pytest.mark.slow
def test_prompts_render_exactly_the_conversation_so_far(real_run: Any) -> None:
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from aloe.core.local_model import local_model_path

    params, summary = real_run
    assert summary.examples > 0 and summary.train["examples"] > 0
    tokenizer = AutoTokenizer.from_pretrained(local_model_path(params))
    trees = {r["id"]: r for r in load_conversations(params)}
    for kind in ("sft", "dpo"):
        data = load_from_disk(str(params.layout.dataset(kind)))
        rows = data["train"].to_list() + data["validation"].to_list()
        assert len(rows) == summary.examples
        for row in rows:
            tree = trees[row["conversation_id"]]
            led_here = []
            for turn in tree["turns"][:row["turn"] - 1]:
                led_here += [{"role": "user", "content": turn["user"]},
                             {"role": "assistant", "content": turn[turn["continued_with"]]}]
            led_here.append({"role": "user", "content": tree["turns"][row["turn"] - 1]["user"]})
            rendered = tokenizer.apply_chat_template(row["prompt"], tokenize=False,
                                                     add_generation_prompt=True)
            assert rendered == tokenizer.apply_chat_template(led_here, tokenize=False,
                                                             add_generation_prompt=True)
            turn = tree["turns"][row["turn"] - 1]
            preferred = turn["verdict"]["preferred"]
            answer = row["completion"] if kind == "sft" else row["chosen"]
            assert answer == [{"role": "assistant", "content": turn[preferred]}]
            if kind == "dpo":
                other = "plain" if preferred == "hinted" else "hinted"
                assert row["rejected"] == [{"role": "assistant", "content": turn[other]}]
            assert row["persona_id"] == tree["persona"]["id"]


@pytest.mark.slow
def test_trl_trainers_take_the_exports(real_run: Any, tmp_path: Path) -> None:
    import torch
    from datasets import load_from_disk
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from aloe.core.local_model import local_model_path

    params, summary = real_run
    path = str(local_model_path(params))
    tokenizer = AutoTokenizer.from_pretrained(path)

    def model() -> Any:
        # The converted embedded model's config still names its GGUF source as a quantization
        # method, which Trainer refuses to train; the weights themselves are plain float32.
        config = AutoConfig.from_pretrained(path)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        return AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float32)

    common = dict(per_device_train_batch_size=2, max_steps=1, report_to=[], use_cpu=True,
                  max_length=256, dataloader_num_workers=0, save_strategy="no")

    sft_data = load_from_disk(str(params.layout.dataset("sft")))["train"]
    sft = SFTTrainer(model=model(), args=SFTConfig(output_dir=str(tmp_path / "sft"), **common),
                     train_dataset=sft_data, processing_class=tokenizer)
    batch = next(iter(sft.get_train_dataloader()))
    rows = min(2, sft_data.num_rows)
    assert batch["input_ids"].shape[0] == rows
    labels = batch["labels"]
    assert (labels == -100).any() and (labels != -100).any()  # only the completion is learned

    dpo_data = load_from_disk(str(params.layout.dataset("dpo")))["train"]
    dpo = DPOTrainer(model=model(), args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common),
                     train_dataset=dpo_data, processing_class=tokenizer)
    batch = next(iter(dpo.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 2 * rows  # chosen and rejected of each pair
