"""Full fine-tuning (`method: full`, params/paper_full.yaml): the schema's switch, the profile,
the memory estimate against figures computed by hand, and the launch path for real: two
processes under `accelerate launch` on CPU train every weight of the embedded SmolLM2-135M
(SFT, then DPO with a separate frozen reference), and the saved models load back.

What the CPU test does not cover: FSDP itself. accelerate (1.15) enables FSDP only on GPUs, so
the same launch (the same command and FSDP config file) trains the two CPU processes as
multi-CPU data parallelism over gloo; the sharding, the bf16 mixed precision and the gathered
save of a sharded model run only on a machine with GPUs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from aloe.core import fidelity
from aloe.core.config import EvalModelSpec, load_params, params_from_dict
from aloe.core.errors import ParamsError
from aloe.stages import training
from aloe.stages.full_finetune import (
    GIB,
    KNOWN_SHAPES,
    full_finetune_estimate,
    memory_parts,
    stage_estimate,
)
from aloe.stages.launch import FSDP_CONFIG, launch_command, needs_launch
from tests.conftest import ROOT, embedded_model, tiny_dict
from tests.support.training_data import make_exports

PAPER_FULL = ROOT / "params" / "paper_full.yaml"
LLAMA_8B = KNOWN_SHAPES["meta-llama/Meta-Llama-3-8B-Instruct"]


# --------------------------------------------------------------------------------------------
# The switch and the profile
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("section, expected", [
    ({"method": "full"}, "set sft.load_in_4bit: false"),
    ({"processes": 2}, "sft.processes > 1 is for method 'full'"),
])
def test_a_method_that_cannot_run_is_refused_in_one_line(tmp_path: Path, section: dict,
                                                         expected: str) -> None:
    with pytest.raises(ParamsError) as error:
        params_from_dict(tiny_dict(tmp_path, sft=section), source="bad.yaml")
    message = str(error.value)
    assert message.startswith("bad.yaml: ") and expected in message and "\n" not in message


def test_paper_full_trains_every_weight_with_the_released_settings() -> None:
    full, paper = load_params(PAPER_FULL), load_params(ROOT / "params" / "paper.yaml")
    for stage in ("sft", "dpo"):
        cfg = getattr(full, stage)
        assert (cfg.method, cfg.load_in_4bit) == ("full", False)
        assert cfg.trainer["learning_rate"] == 1e-5 and cfg.trainer["optim"] == "adamw_torch"
        batch = (cfg.processes * cfg.trainer["per_device_train_batch_size"]
                 * cfg.trainer["gradient_accumulation_steps"])
        assert batch == 48  # the released effective batch, as paper.yaml's
        assert cfg.trainer["max_length"] == getattr(paper, stage).trainer["max_length"]
    assert full.dpo.trainer["per_device_train_batch_size"] == 4  # released
    assert (full.dpo.start_from, full.dpo.trainer["beta"]) == ("base", 0.9)
    assert full.run.name == "paper_full" and full.roles == paper.roles


def test_the_fidelity_declaration_says_paper_full_trains_as_released() -> None:
    full = load_params(PAPER_FULL)
    wrong = {k: fidelity.value(full, k) for k, v in fidelity.full_pinned_switches().items()
             if fidelity.value(full, k) != v}
    assert not wrong, wrong
    assert {"sft.method", "dpo.method", "sft.trainer.learning_rate"} <= set(
        fidelity.full_pinned_switches())
    table = fidelity.full_table(full)
    row = next(line for line in table.splitlines() if line.startswith("| fine-tuning"))
    assert "every weight" in row and "4 GPUs" in row
    assert "SFT 1e-5, DPO 1e-5" in table


# --------------------------------------------------------------------------------------------
# The memory estimate, against figures computed by hand
# --------------------------------------------------------------------------------------------
def test_the_estimate_for_llama_3_8b_sft_is_the_hand_computed_one() -> None:
    """Llama-3-8B: 8,030,261,248 parameters, 32 layers, h = 4096, V = 128,256, untied;
    a decoder layer holds (8,030,261,248 - 2 x 128,256 x 4096) / 32 = 218,112,128."""
    parts = memory_parts(LLAMA_8B, tokens=8192, sequences=1, gpus=8, dpo=False)
    assert parts == {
        "training_state": 16 * 8_030_261_248 / 8,  # 16,060,522,496
        "reference": 0.0,
        "gathered_layers": 4 * (2 * 218_112_128 + 128_256 * 4096),  # 3,846,243,328
        "activations": 2 * 8192 * 4096 * 32 + 34 * 8192 * 4096,  # 3,288,334,336
        "logits": 10 * 8192 * 128_256,  # 10,506,731,520
    }
    estimate = stage_estimate(LLAMA_8B, tokens=8192, micro_batch=1, gpus=8, dpo=False)
    assert estimate["per_gpu_gib"] == round(33_701_831_680 / GIB, 2) == 31.39
    # unsharded: 17,641,309,184 bytes; 72 GiB usable leave 59,668,102,144 for the
    # 128,484,179,968 bytes of training state: 2.15 GPUs' worth, so 3
    assert estimate["fits"] and estimate["min_gpus"] == 3


def test_the_estimate_for_llama_3_8b_dpo_counts_the_reference_and_both_replies() -> None:
    estimate = stage_estimate(LLAMA_8B, tokens=512, micro_batch=4, gpus=4, dpo=True)
    assert estimate["parts_gib"] == {
        "training_state": round(16 * 8_030_261_248 / 4 / GIB, 2),  # 29.92
        "reference": round(2 * 8_030_261_248 / 4 / GIB, 2),  # 3.74
        "gathered_layers": round(3_846_243_328 / GIB, 2),
        "activations": round((2 * 512 * 8 * 4096 * 32 + 34 * 512 * 8 * 4096) / GIB, 2),
        "logits": round(10 * 512 * 8 * 128_256 / GIB, 2),  # 8 sequences: 4 chosen, 4 rejected
    }
    assert estimate["per_gpu_gib"] == round(46_879_951_872 / GIB, 2) == 43.66
    assert estimate["min_gpus"] == 3  # 144,544,702,464 sharded bytes / 66,565,635,072 room


def test_one_gpu_holds_no_gathered_copy_and_an_8b_model_does_not_fit_it() -> None:
    one = stage_estimate(LLAMA_8B, tokens=8192, micro_batch=1, gpus=1, dpo=False)
    assert one["parts_gib"]["gathered_layers"] == 0.0 and not one["fits"]
    assert one["per_gpu_gib"] == round((16 * 8_030_261_248 + 3_288_334_336
                                        + 10_506_731_520) / GIB, 2)


def test_the_estimate_of_a_profile_uses_its_model_lengths_and_processes() -> None:
    full = full_finetune_estimate(load_params(PAPER_FULL))
    sft, dpo = full["stages"]["sft"], full["stages"]["dpo"]
    assert (sft["gpus"], sft["per_gpu_gib"], sft["min_gpus"]) == (4, 46.34, 3)
    assert (dpo["gpus"], dpo["per_gpu_gib"], dpo["min_gpus"]) == (4, 43.66, 3)
    assert full["min_gpus"] == 3 and full["usable_gib"] == 72.0 and full["assumptions"]
    tiny = full_finetune_estimate(load_params(ROOT / "params" / "tiny.yaml"), gpus=2)
    assert tiny["stages"]["sft"]["parameters"] == 134_515_008  # read from the embedded model
    assert tiny["stages"]["sft"]["gpus"] == 2 and tiny["min_gpus"] == 1


# --------------------------------------------------------------------------------------------
# The launch path
# --------------------------------------------------------------------------------------------
def test_a_full_stage_on_several_processes_launches_accelerate_with_fsdp(tmp_path: Path) -> None:
    params = params_from_dict(tiny_dict(tmp_path, sft={"method": "full", "load_in_4bit": False,
                                                       "processes": 4}))
    assert needs_launch(params.sft) and not needs_launch(params.dpo)
    command = launch_command("sft", tmp_path / "p.yaml", 4, ROOT)
    assert command[1:] == ["-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / FSDP_CONFIG), "--num_processes", "4", "-m",
                           "aloe.stages.rank", "sft", str(tmp_path / "p.yaml")]
    assert "distributed_type: FSDP" in (ROOT / FSDP_CONFIG).read_text()


FULL_TRAINER = {"max_steps": 2, "save_steps": 50, "per_device_train_batch_size": 1,
                "max_length": 128, "optim": "adamw_torch", "logging_steps": 1}
FULL = {"sft": {"method": "full", "load_in_4bit": False, "processes": 2,
                "trainer": {**FULL_TRAINER, "learning_rate": 1e-4}},
        "dpo": {"method": "full", "load_in_4bit": False, "processes": 2, "start_from": "base",
                "trainer": {**FULL_TRAINER, "learning_rate": 1e-5, "beta": 0.9}}}


@pytest.fixture(scope="module")
def trained_in_full(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("full")
    params = params_from_dict(tiny_dict(tmp, **FULL), source="full(test)")
    make_exports(params.layout)
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # two processes on a shared CPU
    try:
        sft = training.train_sft(params)
        dpo = training.train_dpo(params)
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = threads
    return {"params": params, "sft": sft, "dpo": dpo}


def _weights(folder: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32")
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


@pytest.mark.slow
def test_two_cpu_processes_train_every_weight_and_the_models_load_back(
        trained_in_full: dict) -> None:
    params, base = trained_in_full["params"], _weights(embedded_model())
    for stage in ("sft", "dpo"):
        result = trained_in_full[stage]
        stats = result.stats
        assert not result.skipped and stats["world_size"] == 2 and stats["steps"] == 2
        assert stats["method"] == "full" and stats["fsdp"] is False  # CPU: data parallel
        assert stats["trainable_params"] == 134_515_008  # every weight, no adapter
        folder = params.layout.adapter(stage)
        assert (folder / "config.json").exists() and not (folder / "adapter_config.json").exists()
        assert training.is_finished(params, stage)
        assert not params.layout.checkpoints(stage).exists()  # launch files cleaned up
        trained = _weights(folder)
        assert trained.keys() == base.keys()
        changed = [n for n in base if not (trained[n] == base[n]).all()]
        assert len(changed) > len(base) // 2, f"{stage}: only {len(changed)} tensors changed"
    log = trained_in_full["dpo"].log
    assert log["loss"].notna().all() and "rewards/margins" in log  # against the reference


@pytest.mark.slow
def test_a_stage_trained_in_full_is_evaluated_as_a_whole_model(trained_in_full: dict) -> None:
    from aloe.stages.policy import adapter_path, spec_model

    params = trained_in_full["params"]
    spec = EvalModelSpec(name="sft", adapter="sft")
    assert spec_model(params, spec) == str(params.layout.adapter("sft"))
    assert adapter_path(params, spec) is None
    again = training.train_sft(params)  # finished: neither trained nor launched again
    assert again.skipped and again.stats["world_size"] == 2


def test_full_dpo_from_a_lora_sft_is_refused_before_any_model_is_loaded(
        tmp_path: Path) -> None:
    params = params_from_dict(tiny_dict(tmp_path, dpo={**FULL["dpo"], "start_from": "sft"}),
                              source="bad.yaml")
    make_exports(params.layout)
    with pytest.raises(ParamsError) as error:
        training.validate_training_inputs(params, "dpo")
    message = str(error.value)
    assert "sft.method is 'lora' and dpo.method 'full'" in message and "\n" not in message


@pytest.mark.slow
def test_full_dpo_continues_the_full_sft_model_in_one_process(trained_in_full: dict,
                                                              tmp_path: Path) -> None:
    """DPO from the SFT model (`start_from: sft`) on one process, no launch: the policy and
    its frozen reference both start as the SFT model, and only the policy moves."""
    import shutil

    first = trained_in_full["params"]
    sections = {**FULL, "dpo": {**FULL["dpo"], "start_from": "sft", "processes": 1}}
    params = params_from_dict(tiny_dict(tmp_path, **sections), source="full(test)")
    shutil.copytree(first.layout.data, params.layout.data)
    shutil.copytree(first.layout.adapter("sft"), params.layout.adapter("sft"))
    dpo = training.train_dpo(params)
    assert dpo.stats["world_size"] == 1 and dpo.stats["start_from"] == "sft"
    sft, after = _weights(params.layout.adapter("sft")), _weights(params.layout.adapter("dpo"))
    base = _weights(embedded_model())

    def distance(a: dict[str, Any], b: dict[str, Any]) -> float:
        return sum(float((a[n] - b[n]).abs().sum()) for n in a)

    # two steps at 1e-5 from the SFT model: moved, and still far nearer it than the base
    assert 0 < distance(after, sft) < distance(after, base) / 2
    assert dpo.log["rewards/margins"].notna().all()
