"""What a run asks of the hardware (`aloe.operations.hardware`): GPU hours of training and
evaluation from the measured figures scaled by the policy; GPU hours of serving roles on a
self-hosted endpoint from the stated throughput rules, in the plan's table and JSON; a warning when
a prompt and its max_tokens come near the server's context; and the module stands below the plan."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from aloe.core.config import RoleConfig, params_from_dict
from aloe.operations import hardware
from aloe.operations import plan as planning
from aloe.operations.plan_format import format_plan
from tests.conftest import ROOT, load_params, stub_roles, tiny_dict

PAPER = ROOT / "params" / "paper.yaml"
ENDPOINT = "http://127.0.0.1:9/v1"  # never reached: the plan is offline


def _params(tmp_path: Path, **sections: dict):
    return params_from_dict(tiny_dict(tmp_path, **sections), source="test")


def _self_hosted(**settings: object) -> dict:
    """Every role on one endpoint of the run's own: a URL and no price."""
    return stub_roles(ENDPOINT, model="Org/Model-7B", price_input_per_1m=0.0,
                      price_output_per_1m=0.0, **settings)


# ------------------------------------------------------------------------------------------
# Training and evaluation
# ------------------------------------------------------------------------------------------
def test_gpu_hours_scale_with_the_policy_and_name_their_assumption(tmp_path: Path) -> None:
    small = planning.make_plan(_params(tmp_path))
    paper = planning.make_plan(load_params(PAPER))
    for plan in (small, paper):
        for gpu, hours in plan.gpu["by_gpu"].items():
            assert 0 <= hours["total"]["forecast"] <= hours["total"]["ceiling"], gpu
    assert paper.gpu["by_gpu"]["H100 80GB"]["sft"]["ceiling"] < \
        paper.gpu["by_gpu"]["RTX 4090 24GB"]["sft"]["ceiling"]
    assert "8.00B parameters" in paper.gpu["policy"]
    figures = hardware.gpu_figures()
    measured = {gpu for gpu, entry in figures["gpus"].items() if entry["measured"]}
    assert measured == {"H200 141GB"}
    assert all("not measured" in entry["source"] for gpu, entry in figures["gpus"].items()
               if gpu not in measured)
    # the hours come from the figures: the measured class's rate, scaled by parameters
    h200 = figures["gpus"]["H200 141GB"]
    scale = 8.0e9 / figures["reference"]["parameters"]
    tokens = paper.gpu["tokens"]["sft"]["ceiling"]
    assert paper.gpu["by_gpu"]["H200 141GB"]["sft"]["ceiling"] == pytest.approx(
        tokens * scale / h200["sft_tokens_per_s"] / 3600, abs=0.01)


# ------------------------------------------------------------------------------------------
# Serving roles on a self-hosted endpoint
# ------------------------------------------------------------------------------------------
def test_serving_hours_are_prefill_and_decode_at_the_stated_rates() -> None:
    """One role's 36M prompt and 3.6M completion tokens on a 7B model, one GPU of a class:
    prompt tokens at SERVING's share of the bf16 peak (2 FLOPs a parameter a token),
    completion tokens at its sequences a step, each step reading the bf16 weights."""
    config = RoleConfig(model="Org/Model-7B", base_url=ENDPOINT)
    served = hardware.Served("user", config, {"forecast": 36e6, "ceiling": 72e6},
                             {"forecast": 3.6e6, "ceiling": 7.2e6})
    figures = hardware.gpu_figures()
    result = hardware.serving_hours([served], figures)
    a100 = figures["gpus"]["A100 80GB"]
    rules = hardware.SERVING
    prefill = rules["prefill_flops_share"] * a100["bf16_tflops"] * 1e12 / (2 * 7e9)
    decode = (rules["decode_sequences"] * rules["decode_bandwidth_share"]
              * a100["bandwidth_gb_s"] * 1e9 / (2 * 7e9))
    assert result["by_gpu"]["A100 80GB"]["forecast"] == pytest.approx(
        (36e6 / prefill + 3.6e6 / decode) / 3600)
    assert result["by_gpu"]["A100 80GB"]["ceiling"] == pytest.approx(
        2 * result["by_gpu"]["A100 80GB"]["forecast"])
    assert result["rates"]["A100 80GB"]["Org/Model-7B"] == {
        "prefill_tokens_per_s": round(prefill), "decode_tokens_per_s": round(decode)}
    assert result["models"] == ["Org/Model-7B (7.00B parameters)"]


def test_the_plan_shows_serving_hours_for_self_hosted_roles_only(tmp_path: Path) -> None:
    served = planning.make_plan(_params(tmp_path, roles=_self_hosted(),
                                        conversations={"n_conversations": 2000, "turns": 4}))
    serving = served.gpu["serving"]
    assert list(serving["roles"]) == ["generator", "user", "inducer", "assistant", "judge"]
    total = served.total()["forecast"]  # every request goes to the endpoint
    assert serving["tokens"]["forecast"] == {"prompt_tokens": total["prompt_tokens"],
                                             "completion_tokens": total["completion_tokens"]}
    for gpu, hours in served.gpu["by_gpu"].items():
        assert 0 < hours["serve"]["forecast"] <= hours["serve"]["ceiling"], gpu
        parts = sum(hours[stage]["forecast"] for stage in ("sft", "dpo", "evaluate", "serve"))
        assert hours["total"]["forecast"] == pytest.approx(parts, abs=0.02)
    text = format_plan(served)
    assert "serve: roles generator, user, inducer, assistant, judge on their self-hosted " \
           "endpoint (Org/Model-7B (7.00B parameters))" in text
    assert "assumed: one GPU of the class runs the server: prefill at 40% of its bf16 peak" \
        in text
    header = text.split("GPU (forecast / ceiling)")[0].splitlines()[-1]
    assert header.split() == ["sft", "dpo", "evaluate", "grpo", "serve", "total"]
    # an API that bills (a price) and the bundled local server: dollars, no serving hours
    priced = stub_roles(ENDPOINT, price_input_per_1m=0.15, price_output_per_1m=0.6)
    for roles in (priced, tiny_dict(tmp_path)["roles"]):
        plan = planning.make_plan(_params(tmp_path, roles=roles))
        assert "serving" not in plan.gpu and "serve: " not in format_plan(plan)
        assert all(set(h) == {"sft", "dpo", "evaluate", "grpo", "total"}
                   for h in plan.gpu["by_gpu"].values())


# ------------------------------------------------------------------------------------------
# A server's context
# ------------------------------------------------------------------------------------------
def test_a_prompt_near_the_servers_context_is_warned_of_in_one_line(tmp_path: Path) -> None:
    """The user's longest forecast prompt (the last turn of stage 5, with the model's replies
    before it) plus its max_tokens past 90% of its max_model_len: one line naming the role,
    stage and turn, the tokens, and what to do; the other roles' context is ample."""
    sections = {"conversations": {"turns": 3}, "evaluation": {"turns": 3, "max_new_tokens": 400}}
    roles = _self_hosted(max_model_len=100_000)
    plan = planning.make_plan(_params(tmp_path, roles=roles, **sections))
    assert plan.warnings == []
    user = max((r for r in plan.roles if r.role == "user"), key=lambda r: r.longest)
    assert (user.stage, user.longest_turn) == ("evaluate", 3)
    need = math.ceil(user.longest) + 64  # the prompt's tokens, rounded up, + max_tokens
    roles["user"]["max_model_len"] = math.ceil(need / 0.9)  # 90% of it holds them
    assert planning.make_plan(_params(tmp_path, roles=roles, **sections)).warnings == []
    roles["user"]["max_model_len"] = limit = math.ceil(need / 0.9) - 1  # 90% of it does not
    plan = planning.make_plan(_params(tmp_path, roles=roles, **sections))
    assert plan.warnings == [
        f"warning: roles.user (evaluate, turn 3): forecast prompt {need - 64:,} + max_tokens 64 "
        f"= {need:,} tokens, over 90% of roles.user.max_model_len {limit:,}; serve "
        "the model at a longer --max-model-len (if it supports one) and set "
        "roles.user.max_model_len to it, or shorten the prompts (evaluation.turns, "
        "evaluation.max_new_tokens)"]
    assert plan.warnings[0] in format_plan(plan)
    assert plan.to_json()["gpu_hours"]["serving"]["warnings"] == plan.warnings


def test_an_unset_context_is_taken_as_the_suggested_8192() -> None:
    config = RoleConfig(model="m", base_url=ENDPOINT, max_tokens=300)
    at = hardware.Served("judge", config, {}, {}, longest=7072.0, stage="conversations",
                         turn=10)
    assert hardware.context_warning(at) is None  # 7,372 tokens: within 90% of 8,192 (7,372.8)
    past = hardware.Served("judge", config, {}, {}, longest=7072.4,  # counted as 7,073
                           stage="conversations", turn=10)
    line = hardware.context_warning(past)
    assert line is not None and line.startswith("warning: roles.judge (conversations, turn 10)")
    assert "of the suggested --max-model-len 8,192 (roles.judge.max_model_len unset)" in line


def test_the_vllm_profile_warns_of_its_late_turns() -> None:
    """params/vllm.yaml serves Llama-3-8B at 8,192 tokens; stage 5's simulated user reads nine
    replies of the model under test before the tenth turn."""
    plan = planning.make_plan(load_params(ROOT / "params" / "vllm.yaml"))
    assert [line.split(":")[1] for line in plan.warnings] == [" roles.user (evaluate, turn 10)"]
    assert plan.gpu["by_gpu"]["H100 80GB"]["serve"]["forecast"] > 0


# ------------------------------------------------------------------------------------------
# Imports go down
# ------------------------------------------------------------------------------------------
def test_the_hardware_module_does_not_import_the_plan() -> None:
    code = ("import sys, aloe.operations.hardware; "
            "print([m for m in sys.modules "
            "if m in ('aloe.operations.plan', 'aloe.operations.plan_format')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
