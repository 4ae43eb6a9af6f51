"""Stages 3-4: QLoRA SFT and DPO on the embedded model, on CPU.

The slow tests train the real SmolLM2-135M in 4-bit for a few steps on small exports built
here (TRL's conversational format, as stage 2 writes them): SFT is killed after its first
checkpoint and resumed, DPO continues from the SFT adapter, each adapter is loaded with
`PeftModel.from_pretrained`, and notebooks 03 and 04 run with papermill on the trained run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from aloe.core.config import load_params, params_from_dict
from aloe.core.errors import ParamsError
from aloe.stages import qlora, training, training_data
from aloe.stages.policy import detect_device, file_sha256
from tests.conftest import ROOT, embedded_model, tiny_dict, write_params
from tests.support.checkpoints import wait_for_checkpoint
from tests.support.training_data import GOOD, conversation_examples, make_exports

TRAINER = {"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 1, "max_length": 256,
           "activation_checkpointing": True}  # the GPU profiles' path
SECTIONS = {"sft": {"lora_r": 4, "lora_alpha": 8, "trainer": {**TRAINER, "learning_rate": 1e-3}},
            "dpo": {"lora_r": 4, "lora_alpha": 8,
                    "trainer": {**TRAINER, "max_steps": 2, "learning_rate": 1e-4}},
            "evaluation": {"max_new_tokens": 12}}


@pytest.fixture(scope="module")
def one_thread_when_busy() -> Any:
    """On a CPU shared with other work, one torch thread trains several times faster than
    threads that keep waiting for each other; an idle machine keeps its default."""
    import torch

    before = torch.get_num_threads()
    busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    if busy:
        torch.set_num_threads(1)
    yield {"OMP_NUM_THREADS": "1"} if busy else {}
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# Bad inputs: one line, before any model is loaded
# --------------------------------------------------------------------------------------------
@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


def test_lora_rank_zero_is_refused_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(ParamsError) as error:
        params_from_dict(tiny_dict(tmp_path, sft={"lora_r": 0}), source="bad.yaml")
    message = str(error.value)
    assert "\n" not in message and "bad.yaml" in message and "sft.lora_r" in message


@pytest.mark.parametrize("stage, overrides, expected", [
    ("sft", {"sft": {"base_model": "./no/such/model"}}, "sft.base_model': model folder not found"),
    ("sft", {"sft": {"base_model": "/no/such/model"}}, "model folder not found: /no/such/model"),
    ("dpo", {"dpo": {"base_model": "nobody/no-such-model-anywhere", "start_from": "base"}},
     "not in the local Hugging Face cache"),
    ("sft", {"sft": {"trainer": {"optim": "adamw_magic"}}}, "unknown optimiser 'adamw_magic'"),
    ("dpo", {}, "no SFT adapter"),
])
def test_bad_inputs_stop_before_any_model_is_loaded(
        tmp_path: Path, no_model_loading: None, monkeypatch: pytest.MonkeyPatch, stage: str,
        overrides: dict, expected: str) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = params_from_dict(tiny_dict(tmp_path, **overrides), source="bad.yaml")
    make_exports(params.layout)
    with pytest.raises(ParamsError) as error:
        training.train_stage(params, stage)
    message = str(error.value)
    assert expected in message and "\n" not in message and message.startswith("bad.yaml: ")


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_missing_dataset_folder_stops_with_one_line(tmp_path: Path, no_model_loading: None,
                                                    stage: str) -> None:
    params = params_from_dict(tiny_dict(tmp_path), source="bad.yaml")
    with pytest.raises(ParamsError) as error:
        training.train_stage(params, stage)
    message = str(error.value)
    assert f"no {stage} dataset at {params.layout.dataset(stage)}" in message
    assert "\n" not in message


# --------------------------------------------------------------------------------------------
# Completion-only loss
# --------------------------------------------------------------------------------------------
def test_trl_configs_are_built_without_a_warning_and_report_to_tensorboard(
        tmp_path: Path) -> None:
    """The workbook's defaults and both profiles' trainer options, as TRL builds them on this
    machine: no deprecation warning, TensorBoard as the tracker (it is installed), and its
    curves written under the run folder, not in the checkpoint folder removed after training."""
    import warnings

    from aloe.stages.policy import detect_device
    from aloe.stages.qlora import tracker_callbacks, trainer_arguments

    device = detect_device()
    for profile in ("tiny.yaml", "paper.yaml", "paper_full.yaml"):
        params = load_params(ROOT / "params" / profile)
        for stage in ("sft", "dpo"):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                args = trainer_arguments(stage, getattr(params, stage), tmp_path / stage, device)
            assert args.report_to == ["tensorboard"]
            [callback] = tracker_callbacks(args, tmp_path / "tensorboard" / stage)
            assert callback.logging_dir == str(tmp_path / "tensorboard" / stage)
            assert args.report_to == []  # TensorBoard is the callback's now, not twice
    params = load_params(ROOT / "params" / "tiny.yaml")
    params.sft.trainer["report_to"] = "none"
    args = trainer_arguments("sft", params.sft, tmp_path / "x", device)
    assert tracker_callbacks(args, tmp_path / "tb") == []


def test_sft_masks_every_prompt_token(tmp_path: Path) -> None:
    """What SFTTrainer trains on: every prompt token (and padding) is -100, every completion
    token keeps its id as label."""
    params = params_from_dict(tiny_dict(tmp_path, sft={"load_in_4bit": False,
                                                       "trainer": {"max_length": 256}}))
    make_exports(params.layout)
    base = training.validate_training_inputs(params, "sft")
    tokenizer = qlora.load_tokenizer(base)
    device = detect_device()
    model = qlora.load_base_model(base, params.sft, device)
    source = training_data.load_splits(params, "sft")["train"]
    train = training_data.prepare_dataset(source, tokenizer, "sft",
                                          params.sft.trainer["max_length"])
    args = qlora.trainer_arguments("sft", params.sft, tmp_path / "work", device)
    trainer = qlora.build_sft_trainer(model, tokenizer, train, args, params.sft)

    prepared = trainer.train_dataset
    assert len(prepared) == len(source)
    for example, tokenized in zip(source, prepared):
        prompt = tokenizer.apply_chat_template(example["prompt"], tokenize=False,
                                               add_generation_prompt=True)
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        ids, labels = tokenized["input_ids"], tokenized["labels"]
        assert labels[:n_prompt] == [-100] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:] and len(ids) > n_prompt
        completion = tokenizer.decode(ids[n_prompt:])
        assert example["completion"][0]["content"] in completion

    batch = trainer.data_collator([prepared[0], prepared[3]])
    labels, mask = batch["labels"], batch["attention_mask"]
    assert (labels[mask == 0] == -100).all()  # padding carries no label either
    for row, tokenized in enumerate((prepared[0], prepared[3])):
        labelled = (labels[row] != -100).nonzero().flatten().tolist()
        expected = [i for i, label in enumerate(tokenized["labels"]) if label != -100]
        assert labelled == expected


def test_long_histories_drop_their_oldest_turns(tmp_path: Path) -> None:
    tokenizer = qlora.load_tokenizer(str(embedded_model()))
    prompt = conversation_examples(0, turns=4)[-1]["prompt"]
    completion = [{"role": "assistant", "content": GOOD.format(topic="x")}]
    full = training_data.render_length(tokenizer, prompt + completion, False)
    fitted = training_data.fit_history(tokenizer, prompt, [completion], max_length=full - 1)
    assert fitted == prompt[2:]  # one user/assistant exchange dropped, starts with the user
    assert training_data.fit_history(tokenizer, prompt, [completion], max_length=full) == prompt
    assert training_data.fit_history(tokenizer, prompt, [completion], 16) == prompt[-1:]


def test_examples_without_room_for_a_reply_are_left_out(tmp_path: Path) -> None:
    from aloe.core.records import DataError

    params = params_from_dict(tiny_dict(tmp_path))
    make_exports(params.layout)
    tokenizer = qlora.load_tokenizer(str(embedded_model()))
    source = training_data.load_splits(params, "dpo")["train"]
    prepared = training_data.prepare_dataset(source, tokenizer, "dpo", max_length=256)
    assert len(prepared) == len(source) and prepared.column_names == ["prompt", "chosen",
                                                                      "rejected"]
    with pytest.raises(DataError, match="raise dpo.trainer.max_length"):
        training_data.prepare_dataset(source, tokenizer, "dpo", max_length=16)


# --------------------------------------------------------------------------------------------
# Training for real: SFT killed and resumed, DPO from the SFT adapter, notebooks
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, one_thread_when_busy: dict) -> dict:
    tmp = tmp_path_factory.mktemp("training")
    params_file = write_params(tmp, **SECTIONS)
    params = params_from_dict(tiny_dict(tmp, **SECTIONS), source=str(params_file))
    make_exports(params.layout)

    # SFT in its own process (`aloe train sft`), killed once its first checkpoint is complete.
    env = {**os.environ, **one_thread_when_busy}
    process = subprocess.Popen([sys.executable, "-m", "aloe", "train", "sft",
                                str(params_file)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        checkpoint = wait_for_checkpoint(params.layout.checkpoints("sft"), process, 400, step=2)
    finally:
        process.kill()
        process.wait()
    killed_before_end = not training.is_finished(params, "sft")

    sft = training.train_sft(params)
    with warnings.catch_warnings(record=True) as dpo_warnings:
        warnings.simplefilter("always")
        dpo = training.train_dpo(params)
    started = time.perf_counter()
    again = training.train_sft(params)
    return {"params": params, "params_file": params_file, "checkpoint": checkpoint,
            "killed_before_end": killed_before_end, "sft": sft, "dpo": dpo, "again": again,
            "dpo_warnings": [str(w.message) for w in dpo_warnings],
            "rerun_s": time.perf_counter() - started}


@pytest.mark.slow
def test_sft_resumes_from_its_checkpoint_after_a_kill(trained: dict) -> None:
    sft = trained["sft"]
    assert trained["killed_before_end"]
    assert sft.resumed_from_step >= 2 and not sft.skipped
    assert sft.stats["steps"] == 4 and sft.stats["resumed_from_step"] == sft.resumed_from_step
    # the log holds every step once: the killed run's steps and the resumed ones
    assert sft.log["step"].tolist() == [1, 2, 3, 4]
    assert sft.log["loss"].notna().all()
    assert not trained["params"].layout.checkpoints("sft").exists()  # checkpoints cleaned up


@pytest.mark.slow
def test_training_writes_adapters_logs_and_stats(trained: dict) -> None:
    params, sft, dpo = trained["params"], trained["sft"], trained["dpo"]
    for result, stage in ((sft, "sft"), (dpo, "dpo")):
        folder = params.layout.adapter(stage)
        assert result.adapter_dir == folder
        for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json",
                     training.LOG_FILE, training.STATS_FILE):
            assert (folder / name).exists(), f"{stage}: {name} missing"
        assert not [p for p in folder.iterdir() if p.is_dir()]  # no reference copy inside
        modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
        assert len(set(modes.values())) == 1, modes  # safetensors' 0600 follows the umask too
        stats = json.loads((folder / training.STATS_FILE).read_text())
        assert stats["adapter_weights"] == {  # checked before every later load
            "file": "adapter_model.safetensors",
            "bytes": (folder / "adapter_model.safetensors").stat().st_size,
            "sha256": file_sha256(folder / "adapter_model.safetensors")}
        assert stats["train_tokens"] > 0 and stats["tokens_per_s"] > 0
        assert stats["train_wall_s"] > 0 and stats["peak_memory_gb"] > 0
        assert stats["peak_memory_kind"] == "process_peak_rss" and stats["load_in_4bit"]
        for column in ("loss", "learning_rate", "grad_norm"):
            assert result.log[column].notna().all(), f"{stage}: {column}"
    assert dpo.stats["start_from"] == "sft" and dpo.log["step"].tolist() == [1, 2]
    for column in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"):
        assert dpo.log[column].notna().all()
    # the reference is the SFT policy, not the base: before the first update the policy is its
    # reference (up to TRL's bfloat16 copy of the trained adapter), so margin ~0, loss ~log 2
    assert abs(dpo.log["rewards/margins"].iloc[0]) < 0.01
    assert dpo.log["loss"].iloc[0] == pytest.approx(0.6931, abs=0.01)
    table = training.stats_table([sft, dpo])
    assert list(table.index) == ["SFT", "DPO"] and (table["tokens/s"] > 0).all()
    assert "wall_s" not in table and "training time (s)" in table  # labels with units


@pytest.mark.slow
def test_dpo_from_sft_saves_without_looking_the_base_up(trained: dict) -> None:
    """The SFT adapter names its base by hub id; DPO's saves must not look that id up (offline:
    a warning in notebook 04 for every checkpoint), and the DPO adapter still names it."""
    assert not [w for w in trained["dpo_warnings"] if "config" in w and "SmolLM2" in w], \
        trained["dpo_warnings"]
    for stage in ("sft", "dpo"):
        config = json.loads((trained["params"].layout.adapter(stage) /
                             "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.slow
def test_a_finished_adapter_is_not_trained_again(trained: dict) -> None:
    again, sft = trained["again"], trained["sft"]
    assert again.skipped and trained["rerun_s"] < 5
    assert again.stats == json.loads(json.dumps(sft.stats, default=str))
    assert again.log["loss"].tolist() == pytest.approx(sft.log["loss"].tolist())


@pytest.mark.slow
def test_each_adapter_changes_the_base_models_logits(trained: dict) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    sft = trained["sft"]
    tokenizer = qlora.load_tokenizer(str(sft.adapter_dir))
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Any advice on hiking?"}],
                                         tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    base = AutoModelForCausalLM.from_pretrained(sft.base_model,
                                                config=qlora.model_config(sft.base_model))
    base.eval()
    with torch.inference_mode():
        reference = base(**inputs).logits
    logits = {}
    for stage in ("sft", "dpo"):
        model = PeftModel.from_pretrained(base, str(trained[stage].adapter_dir))
        with torch.inference_mode():
            logits[stage] = model(**inputs).logits
        base = model.unload()  # the same base, without the adapter, for the next one
    for stage, values in logits.items():
        assert values.shape == reference.shape
        assert (values - reference).abs().max() > 1e-3, f"{stage} adapter changed nothing"
    assert (logits["dpo"] - logits["sft"]).abs().max() > 0


@pytest.mark.slow
def test_the_comparison_is_generated_once_per_adapter(trained: dict,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Rerunning a finished run shows the kept comparison instead of loading the model again;
    new adapter weights make it generate afresh."""
    params = trained["params"]
    first = training.compare_replies(params, adapters=["sft"], n=2, max_new_tokens=8)
    assert list(first.columns)[-2:] == ["base", "sft"] and len(first) == 2
    generated: list[str] = []
    real = training._generate_comparison
    monkeypatch.setattr(training, "_generate_comparison",
                        lambda *args, **kwargs: generated.append("again") or real(*args, **kwargs))
    assert training.compare_replies(params, adapters=["sft"], n=2,
                                    max_new_tokens=8).equals(first)
    assert generated == []
    weights = trained["sft"].adapter_dir / "adapter_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    training.compare_replies(params, adapters=["sft"], n=2, max_new_tokens=8)
    assert generated == ["again"]
