"""Stage 4 beside DPO: turn-level GRPO against the simulated users (`aloe.stages.grpo`), on CPU.

The slow tests train the real SmolLM2-135M in 4-bit (QLoRA, from the base) for two steps
against the stub server's user and judge (tests/support/stub_server.py: a judge's score is a
pure function of its request, so two replies may score differently and one reply always
scores the same). GRPO runs first as `aloe train grpo` in its own process, killed once its
first checkpoint is complete, then resumes in this one; the rollout is also called directly
on a trainer built the stage's way. Fast tests cover the parameters, the rows, the request
bound, the runner's order and the evaluation's resolution of `adapter: grpo`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aloe.core.config import EvalModelSpec, params_from_dict
from aloe.core.errors import ParamsError
from aloe.core.records import write_records
from aloe.operations import runner
from aloe.stages import grpo, policy, qlora, training
from tests.conftest import ROOT, stub_roles, tiny_dict, write_params
from tests.support.checkpoints import wait_for_checkpoint
from tests.support.stub_server import StubServer
from tests.test_training import one_thread_when_busy  # noqa: F401 - a fixture, shared

TRAIN = [{"id": f"train-{i}", "profile": f"She is a {30 + i}-year-old nurse in Leeds who grows "
          "tomatoes.", "personality": "She is blunt, curious and impatient."} for i in range(2)]
BENCHMARK = [{"id": f"bench-{i}", "profile": f"He is a {50 + i}-year-old pilot in Oslo.",
              "personality": "He is calm and formal."} for i in range(2)]
GRPO = {"start_from": "base", "lora_r": 4, "lora_alpha": 8, "turns": 2, "num_generations": 2,
        "trainer": {"max_steps": 2, "save_steps": 1, "per_device_train_batch_size": 2,
                    "gradient_accumulation_steps": 1, "max_completion_length": 8,
                    "learning_rate": 1e-3, "activation_checkpointing": False}}


def _sections(base_url: str, **grpo_section: Any) -> dict[str, Any]:
    return {"roles": stub_roles(base_url), "grpo": {**GRPO, **grpo_section}}


def _with_personas(params: Any, train: list[dict] = TRAIN) -> Any:
    write_records(params.layout.personas, train)
    write_records(params.layout.benchmark, BENCHMARK)
    return params


# --------------------------------------------------------------------------------------------
# Parameters, rows, requests: no model
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("section, expected", [
    ({"rollout_turns": 3}, "grpo.rollout_turns"),
    ({"rewards": {"judge": 1.0, "style": 1.0}}, "grpo.rewards.style"),
    ({"trainer": {"num_generations": 4}}, "set grpo.num_generations"),
    ({"rewards": {"judge": 0.0}}, "every weight is 0"),
    ({"rewards": {"future": 1.0}}, "future_turns is 0"),
    ({"num_generations": 3}, "must be a multiple of grpo.num_generations (3)"),
    ({"method": "full", "load_in_4bit": False}, "GRPO trains a LoRA adapter"),
])
def test_bad_grpo_parameters_are_refused_in_one_line(tmp_path: Path, section: dict,
                                                     expected: str) -> None:
    with pytest.raises(ParamsError) as error:
        params_from_dict(tiny_dict(tmp_path, grpo={**GRPO, **section}), source="bad.yaml")
    message = str(error.value)
    assert expected in message and "\n" not in message and message.startswith("bad.yaml")


def test_rows_are_the_training_personas_only(tmp_path: Path) -> None:
    params = _with_personas(params_from_dict(tiny_dict(tmp_path, grpo=GRPO), source="t"))
    rows = grpo.turn_rows(params, grpo.training_personas(params))
    assert {row.persona["id"] for row in rows} == {p["id"] for p in TRAIN}
    assert not {row.persona["id"] for row in rows} & {p["id"] for p in BENCHMARK}
    assert sorted((row.persona["id"], row.turn) for row in rows) == [
        ("train-0", 1), ("train-0", 2), ("train-1", 1), ("train-1", 2)]
    assert len({row.key for row in rows}) == len(rows)  # a prompt names one row


def test_no_training_personas_is_refused_before_any_model_loads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = params_from_dict(tiny_dict(tmp_path, grpo=GRPO), source="t")
    write_records(params.layout.benchmark, BENCHMARK)  # the benchmark is never a substitute
    monkeypatch.setattr(qlora, "load_base_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(grpo.NoTrainingPersonas) as error:
        grpo.train_grpo(params)
    message = str(error.value)
    assert "no training personas" in message and "01_personas" in message
    assert "\n" not in message and str(params.layout.personas) in message


def test_the_request_bound_counts_each_reward(tmp_path: Path) -> None:
    params = params_from_dict(tiny_dict(tmp_path, grpo=GRPO), source="t")
    # 2 steps x (2 completions / G=2) = 2 turns rolled out; each: 2 user messages at most
    # (the first and turn 1's answer), G judge requests
    assert grpo.grpo_requests(params, personas=5) == {"user": 4, "judge": 4}
    params = params_from_dict(tiny_dict(tmp_path, grpo={
        **GRPO, "rewards": {"judge": 1.0, "inference": 0.5, "future": 1.0}, "future_turns": 2,
        "future_samples": 3}), source="t")
    # per reply: judge 1 + inference 1 + 3 futures x 2 turns (user + judge each)
    assert grpo.grpo_requests(params, personas=5) == {"user": 2 * (2 + 2 * 6),
                                                      "judge": 2 * 2 * (1 + 1 + 6)}
    epoch = {**GRPO, "trainer": {**GRPO["trainer"], "max_steps": -1}}
    params = params_from_dict(tiny_dict(tmp_path, grpo=epoch), source="t")
    assert grpo.grpo_requests(params, personas=5) == {"user": 5 * 2 * 2, "judge": 5 * 2 * 2}


def test_the_runner_runs_grpo_after_dpo_and_before_the_evaluation() -> None:
    names = [nb.stem for nb in runner.notebooks()]
    assert names.index("04_dpo") + 1 == names.index("04_grpo")
    assert names.index("04_grpo") + 1 == names.index("05_evaluate")
    assert [nb.stem for nb in runner.parse_stages("4", runner.notebooks())] == [
        "04_dpo", "04_grpo"]
    notebook = json.loads((ROOT / "notebooks" / "04_grpo.ipynb").read_text())
    assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code")


def test_an_evaluation_model_names_the_grpo_adapter(tmp_path: Path) -> None:
    params = params_from_dict(tiny_dict(tmp_path, grpo={**GRPO, "load_in_4bit": False}),
                              source="t")
    spec = EvalModelSpec(name="grpo", adapter="grpo")
    with pytest.raises(policy.PolicyError, match=r"adapters/grpo .*run stage 4 \(grpo\) first"):
        policy.adapter_path(params, spec)
    assert policy.spec_model(params, spec) == policy.base_model(params, "grpo")
    params.evaluation.adapter_base = "as_trained"
    assert not policy.evaluated_in_4bit(params, spec)  # grpo's load_in_4bit, not sft's
    assert policy.evaluated_in_4bit(params, EvalModelSpec(name="sft", adapter="sft"))


def test_the_future_reward_plays_the_policy_through_the_environment(
        tmp_path: Path, stub: StubServer) -> None:
    """`score` gives a future reward from the policy's own replies without touching the
    dialogue, and `advance` adds the reply and the user's answer without scoring."""
    from aloe.llm import LLM

    params = params_from_dict(tiny_dict(tmp_path, **_sections(
        stub.base_url, rewards={"judge": 1.0, "future": 1.0}, future_turns=1)), source="t")
    asked: list[int] = []

    async def policy_reply(history: list[dict[str, str]]) -> str:
        asked.append(len(history))
        return "Tell me more about your week."

    llm = LLM.for_run(params, "grpo")
    env = grpo.environment(params, llm, policy=policy_reply)

    async def play() -> tuple[Any, dict, Any]:
        dialogue = await env.reset(TRAIN[0], 0)
        scored = await env.score(dialogue, "Hello! What do you grow?")
        before = list(dialogue.history)
        user = await env.advance(dialogue, "Hello! What do you grow?")
        return dialogue, scored, (before, user)

    dialogue, scored, (before, user) = llm.run(play())
    assert set(scored) == {"judge", "future"} and 1 <= scored["future"] <= 5
    assert asked == [3] and len(before) == 1  # the future saw user, reply, user
    assert [m["role"] for m in dialogue.history] == ["user", "assistant", "user"]
    assert dialogue.history[-1]["content"] == user and dialogue.turn == 2


# --------------------------------------------------------------------------------------------
# Training for real: killed after its first checkpoint, resumed; the rollout itself
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, stub: StubServer,
            one_thread_when_busy: dict) -> dict:  # noqa: F811 - the shared fixture
    tmp = tmp_path_factory.mktemp("grpo")
    sections = _sections(stub.base_url)
    params_file = write_params(tmp, **sections)
    params = _with_personas(params_from_dict(tiny_dict(tmp, **sections),
                                             source=str(params_file)))
    env = {**os.environ, **one_thread_when_busy, "TRL_EXPERIMENTAL_SILENCE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "aloe", "train", "grpo",
                                str(params_file)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        checkpoint = wait_for_checkpoint(params.layout.checkpoints("grpo"), process, 400, step=1)
    finally:
        process.kill()
        process.wait()
    killed_before_end = not training.is_finished(params, "grpo")
    result = grpo.train_grpo(params)
    return {"params": params, "params_file": params_file, "checkpoint": checkpoint,
            "result": result, "killed_before_end": killed_before_end}


@pytest.mark.slow
def test_grpo_trains_and_logs_the_loss_and_each_reward(trained: dict) -> None:
    result, params = trained["result"], trained["params"]
    assert result.adapter_dir == params.layout.adapter("grpo") and not result.skipped
    assert result.log["step"].tolist() == [1, 2]
    for column in ("loss", "rewards/judge/mean", "kl"):
        assert result.log[column].notna().all(), column
    assert result.log["rewards/judge/mean"].between(1, 5).all()  # ALOE's judge: 1-5
    stats = json.loads((result.adapter_dir / training.STATS_FILE).read_text())
    assert stats["rewards"] == {"judge": 1.0} and stats["training_personas"] == len(TRAIN)
    assert stats["steps"] == 2 and stats["train_tokens"] > 0 and stats["load_in_4bit"]
    card = params.layout.model_card("grpo").read_text()
    assert "QLoRA GRPO" in card and "- judge: 1.0" in card
    assert "training personas only" in card
    assert not [p for p in result.adapter_dir.iterdir() if p.is_dir()]  # no "ref" copy inside
    spec = EvalModelSpec(name="grpo", adapter="grpo")  # stage 5 finds it by its name
    assert policy.adapter_path(params, spec) == result.adapter_dir


@pytest.mark.slow
def test_a_killed_grpo_run_resumes_from_its_checkpoint(trained: dict) -> None:
    result = trained["result"]
    assert trained["killed_before_end"] and trained["checkpoint"].name == "checkpoint-1"
    assert result.resumed_from_step == 1 and result.stats["resumed_from_step"] == 1
    assert not trained["params"].layout.checkpoints("grpo").exists()  # cleaned up


@pytest.mark.slow
def test_the_grpo_adapter_changes_the_models_logits(trained: dict) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = trained["result"]
    tokenizer = qlora.load_tokenizer(str(result.adapter_dir))
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Any advice on hiking?"}],
                                         tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    base = AutoModelForCausalLM.from_pretrained(result.base_model,
                                                config=qlora.model_config(result.base_model))
    base.eval()
    with torch.inference_mode():
        start = base(**inputs).logits
        tuned = PeftModel.from_pretrained(base, str(result.adapter_dir))(**inputs).logits
    assert (tuned - start).abs().max() > 1e-3


@pytest.mark.slow
def test_notebook_04_grpo_runs_on_the_trained_run_without_noise(trained: dict,
                                                                tmp_path: Path) -> None:
    """The notebook finds the finished adapter, draws its figure, and prints nothing on stderr
    but the workbook's own log lines (no warning, no line per HTTP request)."""
    import nbformat

    from aloe.operations.runner import execute_stage

    output = tmp_path / "04_grpo.ipynb"
    execute_stage(ROOT / "notebooks" / "04_grpo.ipynb", trained["params"],
                  str(trained["params_file"]), output, progress=False)
    cells = nbformat.read(output, as_version=4).cells
    stderr = [line for cell in cells for out in cell.get("outputs", [])
              if out.get("name") == "stderr" for line in out["text"].splitlines()]
    assert all(line.startswith("aloe.") for line in stderr if line.strip()), stderr
    text = "".join(out.get("text", "") for cell in cells for out in cell.get("outputs", []))
    assert "found finished: " in text and "requests at most" in text
    assert any("image/png" in out.get("data", {}) for cell in cells
               for out in cell.get("outputs", []))


@pytest.fixture(scope="module")
def rollout(trained: dict) -> dict:
    """A trainer built the stage's way on the trained run, and its rollout called on a turn-1
    row (4 replies) and a turn-2 row (2 replies); each turn-1 reply then scored again by the
    environment on the same dialogue."""
    from aloe.llm import open_llm
    from aloe.stages.policy import detect_device

    params = trained["params"]
    rows = grpo.turn_rows(params, TRAIN)
    first, second = rows[0], rows[1]  # train-0's turn 1 and turn 2
    loop = grpo.EventLoopThread()
    with open_llm(params, "grpo") as llm:
        trainer = grpo._trainer(params, grpo.validate_grpo_inputs(params), detect_device(), [],
                                llm, loop)
        try:
            rollout = trainer.rollout_func
            turn_1 = rollout([first.key] * 4, trainer)
            turn_2 = rollout([second.key] * 2, trainer)
            replies = [grpo.split_reply(rollout.policy.decode(ids))[0]
                       for ids in turn_1["completion_ids"]]
            dialogue = loop.run(rollout.env.reset(first.persona, first.seed))
            again = [loop.run(rollout.env.score(dialogue, reply))["judge"] for reply in replies]
            keys = [r["prompt"] for r in trainer.train_dataset]
            prompts = [rollout.policy.decode(out["prompt_ids"][0]) for out in (turn_1, turn_2)]
        finally:
            loop.close(llm)
    return {"turn_1": turn_1, "turn_2": turn_2, "replies": replies, "again": again,
            "keys": keys, "prompts": prompts, "first_user": dialogue.history[0]["content"]}


@pytest.mark.slow
def test_the_rollout_gives_each_repeated_row_a_sampled_reply_of_the_same_history(
        rollout: dict) -> None:
    for out, n in ((rollout["turn_1"], 4), (rollout["turn_2"], 2)):
        assert len(out["prompt_ids"]) == len(out["completion_ids"]) == len(out["logprobs"]) == n
        assert all(ids == out["prompt_ids"][0] for ids in out["prompt_ids"])  # one history
        for ids, logps in zip(out["completion_ids"], out["logprobs"]):
            assert 0 < len(ids) <= 8 and len(logps) == len(ids) and all(lp <= 0 for lp in logps)
    turn_1, turn_2 = rollout["prompts"]
    # turn 2's history: the first message, the policy's turn-1 reply, the user's answer
    assert turn_1.count("user\n") == 1 and turn_2.count("user\n") == 2
    assert rollout["first_user"] in turn_1 and rollout["first_user"] in turn_2


@pytest.mark.slow
def test_the_rewards_are_the_environments_scores_of_each_reply(rollout: dict) -> None:
    judge = rollout["turn_1"]["judge"]
    assert all(score is None or 1 <= score <= 5 for score in judge)
    assert judge == rollout["again"]  # the environment's own score of each reply
    assert len(set(rollout["replies"])) > 1 and len(set(judge)) > 1  # replies scored apart
    reward = grpo.reward_function("judge")
    assert reward.__name__ == "judge" and reward(completions=judge, judge=judge) == judge
    assert {key.split(" | ")[0] for key in rollout["keys"]} == {
        f"persona {p['id']}" for p in TRAIN}  # the trainer's rows: training personas only


def test_a_reply_states_what_it_inferred_apart() -> None:
    reply, inferred = grpo.split_reply("<profile>a nurse who gardens</profile> Try basil!")
    assert (reply, inferred) == ("Try basil!", "a nurse who gardens")
    assert grpo.split_reply(" Plain reply. ") == ("Plain reply.", None)


def test_the_report_and_the_comparison_count_the_grpo_stage(tmp_path: Path) -> None:
    """GRPO's statistics reach the report's findings and the comparison's training time
    beside SFT's (the files as the stages write them; no training needed to read them)."""
    from aloe.core.records import write_json
    from aloe.presentation import compare, report

    params = params_from_dict(tiny_dict(tmp_path, grpo=GRPO), source="t")
    for stage, seconds in (("sft", 10.0), ("grpo", 2.5)):
        write_json(params.layout.adapter_file(stage, training.STATS_FILE),
                   {"stage": stage, "steps": 2, "train_examples": 4, "train_wall_s": seconds})
    assert set(report.training_stats(params.layout)) == {"sft", "grpo"}
    assert compare._training_seconds(params.layout) == 12.5


# --------------------------------------------------------------------------------------------
# A judge whose answers cannot be read: a blank step and one line, not the libraries' noise
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_replies_no_judge_could_score_leave_blank_steps_and_one_closing_line(
        tmp_path: Path, one_thread_when_busy: dict) -> None:  # noqa: F811 - the shared fixture
    """Every score judge answer carries no score: TRL gives those replies no advantage; the
    stage runs through, logs the unreadable share per step, leaves the means blank, and says
    so in one line of its own on stderr, without TRL's warning (with the whole reply) or
    TensorBoard's refusals of the missing values."""
    with StubServer(seed=0, unreadable={"judge_score": 1.0}) as stub:
        sections = _sections(stub.base_url, trainer={**GRPO["trainer"], "max_steps": 1})
        params_file = write_params(tmp_path, **sections)
        params = _with_personas(params_from_dict(tiny_dict(tmp_path, **sections),
                                                 source=str(params_file)))
        env = {**os.environ, **one_thread_when_busy, "TRL_EXPERIMENTAL_SILENCE": "1"}
        done = subprocess.run([sys.executable, "-m", "aloe", "train", "grpo", str(params_file)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = training.load_result(params, "grpo")
    assert result.log["rewards/judge/unreadable"].tolist() == [1.0]
    assert result.log["rewards/judge/mean"].isna().all()
    assert result.stats["unreadable_replies"] == {"judge": 1.0}  # for the report's findings
    assert "All reward functions returned None" not in done.stderr
    assert "attempting to log a value of \"None\"" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "unreadable judge answers" in line]
    assert len(lines) == 1 and lines[0].endswith(
        "aloe.stages.training: grpo: unreadable judge answers for part of the sampled replies "
        "(judge 100% over 1 step); a reply no reward scored got no advantage"), done.stderr[-2000:]
    assert (params.layout.tensorboard("grpo")).exists()  # TensorBoard wrote the step anyway


def test_the_closing_line_sums_up_each_rewards_unreadable_share() -> None:
    import pandas as pd

    seen: dict[str, list[float]] = {}
    reward = grpo.reward_function("judge")
    got = reward(completions=["a", "b", "c", "d"], judge=[4.0, None, None, 2.0],
                 log_metric=lambda name, value: seen.setdefault(name, []).append(value))
    assert got == [4.0, None, None, 2.0] and seen == {"rewards/judge/unreadable": [0.5]}
    log = pd.DataFrame({"step": [1, 2], "rewards/judge/unreadable": [0.5, 0.0],
                        "rewards/inference/unreadable": [0.0, 0.0]})
    shares = grpo.unreadable_shares(log, ["judge", "inference"])
    assert shares == {"judge": 0.25, "inference": 0.0}
    assert grpo.unreadable_line(shares, 2) == (
        "grpo: unreadable judge answers for part of the sampled replies (judge 25% over 2 "
        "steps); a reply no reward scored got no advantage")
    assert grpo.unreadable_line({"judge": 0.0, "inference": 0.0}, 2) is None
    assert grpo.unreadable_shares(pd.DataFrame({"step": [1]}), ["judge"]) == {}  # older logs
