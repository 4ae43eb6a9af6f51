"""Stage 5: reading the judge, batched replies with adapters, the protocol on the real local
server, resuming after a kill, and notebook 05."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aloe import evaluation
from aloe.config import params_from_dict
from aloe.evaluation import (EvaluationError, InProcessResponder, expected_score,
                             load_aloe_benchmark, parse_score)
from aloe.records import read_records, write_records
from tests.conftest import MODEL_CACHE, ROOT, tiny_dict

MODEL = MODEL_CACHE / "SmolLM2-135M-Instruct"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """In-process generation on one thread: on a shared 2-core machine a second OpenMP thread
    mostly waits at barriers (measured several times slower, not faster)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------
# parse_score: a number when there is one clear score, else None (never a guess)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, score", [
    ("4", 4),
    (" 5\n", 5),
    ("Score: 4", 4),
    ("**4**", 4),
    ("**Score:** 2", 2),
    ("### Score\n5", 5),
    ("`4`", 4),
    ("4/5", 4),
    ("Rating: 4/5", 4),
    ("four out of five", 4),
    ("I'd give it a 4.", 4),
    ("I would give this a score of 3", 3),
    ("I rate this response a 2 because it is generic.", 2),
    ("Rating: four", 4),
    ("Four.", 4),
    ("Rating - 3", 3),
    ("score = 1", 1),
    ("(3)", 3),
    ("Final rating: 5 (excellent)", 5),
    ("The reply deserves a 4.", 4),
    ("On a 1-5 scale, this reply earns 4.", 4),
    ("The score is 4 on a scale from 1 to 5.", 4),
    ("Between 1 and 5, I'd say 4", 4),
    ("Score: 4\nThe reply mentions the user's 2 kids.", 4),
    ("Style 4, content 2. Overall: 3", 3),
    ("Score: 4\n\nScore: 4", 4),
    ("Rating: five stars", 5),
    ("I'd rate this one a 4", 4),
    ("I would give this one a 2.", 2),
    ("I'd give it one star.", 1),
    # no single clear score
    ("3 or 4", None),
    ("I'd rate it 2 or 3", None),
    ("between 2 and 5", None),
    ("3-4", None),
    ("Score: 4-5", None),
    ("Score: 4.5", None),
    ("3.5", None),
    ("8/10", None),
    ("4 out of 10", None),
    ("Score: 10", None),
    ("0", None),
    ("6", None),
    ("", None),
    ("I cannot rate this reply.", None),
    ("This one is fine.", None),
    ("I would rate this one highly.", None),
    ("The user mentions two hobbies and the reply covers one.", None),
    ("Score: 3. Revised score: 4", None),
    ("Score: 4/5 for style, 3/5 for content", None),
    ("The assistant scores 4 on style and 2 on content", None),
    ("1. Style: good\n2. Content: relevant", None),
])
def test_parse_score(text, score):
    assert parse_score(text) == score


def test_expected_score_weights_the_digit_alternatives():
    logprobs = [{"token": "Score", "logprob": -0.1, "top": {"Score": -0.1}},
                {"token": ":", "logprob": -0.01, "top": {}},
                {"token": " 4", "logprob": math.log(0.6),
                 "top": {" 4": math.log(0.6), " 5": math.log(0.2), "3": math.log(0.1),
                         " great": math.log(0.1)}}]
    # (4 * .6 + 5 * .2 + 3 * .1) / (.6 + .2 + .1) = 3.7 / .9
    assert expected_score(logprobs, 4) == pytest.approx(3.7 / 0.9)
    assert expected_score(logprobs, 5) is None  # the digit read is not the score parsed
    assert expected_score(None, 4) is None and expected_score(logprobs, None) is None


# ------------------------------------------------------------------------------------------
# The benchmark and the judge's prompt
# ------------------------------------------------------------------------------------------
def test_official_files_load_as_exactly_100_personas(reference_dir):
    personas = load_aloe_benchmark(reference_dir / "profile_eval.jsonl",
                                   reference_dir / "personality_eval.jsonl")
    assert len(personas) == 100
    assert len({p["id"] for p in personas}) == 100
    assert len({p["profile"] for p in personas}) == 20
    assert len({p["personality"] for p in personas}) == 5
    assert evaluation.load_aloe_benchmark is load_aloe_benchmark  # re-exported


def test_benchmark_personas_limit_and_missing_files(tmp_path, reference_dir):
    params = params_from_dict(tiny_dict(tmp_path, evaluation={
        "benchmark": "aloe", "limit": 7,
        "aloe_profiles": str(reference_dir / "profile_eval.jsonl"),
        "aloe_personalities": str(reference_dir / "personality_eval.jsonl")}))
    assert [p["id"] for p in evaluation.benchmark_personas(params)] == \
        [p["id"] for p in load_aloe_benchmark(reference_dir / "profile_eval.jsonl",
                                              reference_dir / "personality_eval.jsonl")[:7]]
    run_params = params_from_dict(tiny_dict(tmp_path))
    with pytest.raises(EvaluationError, match="benchmark.jsonl.*stage 1"):
        evaluation.benchmark_personas(run_params)


def test_judge_sees_the_full_persona_and_the_reply():
    persona = {"profile": "She is a 41-year-old beekeeper.", "personality": "She is blunt."}
    history = [{"role": "user", "content": "My hives swarmed again!"}]
    messages = evaluation.judge_messages(persona, history, "Oh no, how many did you lose?")
    text = messages[-1]["content"]
    for part in ("41-year-old beekeeper", "She is blunt.", "User: My hives swarmed again!",
                 "Oh no, how many did you lose?"):
        assert part in text


class ScriptedJudge:
    """Answers the judge role from a script, recording what it was asked."""

    def __init__(self, answers: list[str]):
        self.answers, self.calls = list(answers), []

    async def chat(self, role, messages, *, sample=0, logprobs=False, **kwargs):
        from aloe.llm import Completion

        self.calls.append({"role": role, "messages": messages, "sample": sample})
        return Completion(text=self.answers.pop(0))


@pytest.mark.parametrize("answers, score, attempts", [
    (["Score: 4"], 4, 1),
    (["It is a nice reply.", "3"], 3, 2),  # unreadable, asked once more
    (["3 or 4", "Hmm, 3 or maybe 4"], None, 2),  # still unreadable: missing, never a guess
])
def test_judge_reasks_once_then_records_missing(answers, score, attempts):
    from aloe.llm import run_sync

    persona = {"profile": "He brews beer.", "personality": "He is witty."}
    history = [{"role": "user", "content": "My IPA is too bitter."}]
    judge = ScriptedJudge(answers)
    result = run_sync(evaluation.judge_reply(judge, persona, history, "Give it two weeks."))
    assert (result.score, result.attempts, result.raw) == (score, attempts, answers[-1])
    assert len(judge.calls) == attempts and {c["role"] for c in judge.calls} == {"judge"}
    if attempts == 2:  # the re-ask continues the judge's chat, as another cached sample
        again = judge.calls[1]
        assert again["sample"] != judge.calls[0]["sample"]
        assert again["messages"][: 2] == judge.calls[0]["messages"] + \
            [{"role": "assistant", "content": answers[0]}]


# ------------------------------------------------------------------------------------------
# Batched in-process replies, with and without an adapter
# ------------------------------------------------------------------------------------------
def make_adapter(path: Path, seed: int) -> Path:
    """A small LoRA adapter on the embedded model with random (non-zero) B weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM",
                                                  target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.05)
    peft_model.save_pretrained(path)
    return path


HISTORIES = [
    [{"role": "user", "content": "Hi! I just got back from a long run."}],
    [{"role": "user", "content": "What should I cook tonight? I have rice, eggs and a lot of "
                                 "leftover vegetables from the weekend market."}],
    [{"role": "user", "content": "hey"}, {"role": "assistant", "content": "Hello! How are you?"},
     {"role": "user", "content": "Tired. Work was long."}],
]


@pytest.mark.slow
def test_batched_replies_match_one_at_a_time_and_adapters_change_them(tmp_path):
    responder = InProcessResponder(str(MODEL), batch_size=8, max_new_tokens=12, temperature=0.0)
    batched = responder.reply_many(HISTORIES)
    single = [responder.reply_many([h])[0] for h in HISTORIES]
    assert batched == single  # left padding: each row's reply as if it were alone
    assert all(isinstance(r, str) and r for r in batched)
    responder.close()

    adapted = InProcessResponder(str(MODEL), make_adapter(tmp_path / "lora", seed=1),
                                 batch_size=8, max_new_tokens=12, temperature=0.0)
    assert adapted.reply_many(HISTORIES) != batched


# ------------------------------------------------------------------------------------------
# The protocol on the real local server
# ------------------------------------------------------------------------------------------
def stage_dict(tmp_path: Path, **evaluation_overrides) -> dict:
    """The tiny profile shrunk for tests: 2 turns, short messages."""
    data = tiny_dict(tmp_path, evaluation={"turns": 2, "max_new_tokens": 24, "batch_size": 8,
                                           "bootstrap_samples": 50, **evaluation_overrides})
    data["roles"]["user"]["max_tokens"] = 24
    data["roles"]["judge"]["max_tokens"] = 6
    return data


def write_benchmark(params, reference_dir: Path, n: int) -> list[dict]:
    personas = load_aloe_benchmark(reference_dir / "profile_eval.jsonl",
                                   reference_dir / "personality_eval.jsonl")[::7][:n]
    write_records(params.run_dir / "benchmark.jsonl", personas)
    return personas


def test_missing_adapter_stops_before_any_work(tmp_path, reference_dir):
    params = params_from_dict(stage_dict(tmp_path, models=[{"name": "base"},
                                                           {"name": "sft", "adapter": "sft"}]))
    write_benchmark(params, reference_dir, 2)
    with pytest.raises(EvaluationError, match=r"adapters/sft.*run stage 3"):
        evaluation.run_stage(params)
    assert not (params.run_dir / "eval").exists()


@pytest.mark.slow
def test_official_benchmark_with_limit_through_an_endpoint(tmp_path, reference_dir, local_server):
    """`benchmark: aloe` + limit, the model under test behind an OpenAI-compatible endpoint."""
    params = params_from_dict(stage_dict(
        tmp_path, benchmark="aloe", limit=2,
        aloe_profiles=str(reference_dir / "profile_eval.jsonl"),
        aloe_personalities=str(reference_dir / "personality_eval.jsonl"),
        models=[{"name": "served", "base_url": "local"}]))
    summary = evaluation.run_stage(params)
    records = read_records(params.run_dir / "eval" / "served.jsonl")
    assert sorted((r["persona_id"], r["turn"]) for r in records) == \
        [("aloe-eval-001", 1), ("aloe-eval-001", 2), ("aloe-eval-002", 1), ("aloe-eval-002", 2)]
    for r in records:
        assert r["user"] and isinstance(r["reply"], str) and r["raw_judgement"] is not None
        assert r["score"] is None or 1 <= r["score"] <= 5
        assert r["score"] == parse_score(r["raw_judgement"])
    metrics = json.loads((params.run_dir / "metrics.json").read_text())
    assert metrics["models"]["served"]["turns"] == [1, 2]
    assert metrics == json.loads(json.dumps({k: v for k, v in summary.items()
                                             if k != "progress"}))
    usage = json.loads((params.run_dir / "usage" / "evaluate-served.json").read_text())
    assert usage["roles"]["assistant"]["requests"] == 4


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, reference_dir, local_server):
    """Base, SFT and DPO (random adapters) evaluated on a 2-persona run benchmark, 2 turns."""
    tmp_path = tmp_path_factory.mktemp("eval_run")
    data = stage_dict(tmp_path)
    params = params_from_dict(data)
    write_benchmark(params, reference_dir, 2)
    make_adapter(params.run_dir / "adapters" / "sft", seed=1)
    make_adapter(params.run_dir / "adapters" / "dpo", seed=2)
    summary = evaluation.run_stage(params)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return params, params_file, summary


@pytest.mark.slow
def test_tiny_run_evaluates_base_sft_and_dpo(finished_run):
    params, _, summary = finished_run
    metrics = json.loads((params.run_dir / "metrics.json").read_text())
    assert list(metrics["models"]) == ["base", "sft", "dpo"]
    for name, m in metrics["models"].items():
        assert m["turns"] == [1, 2] and m["n_personas"] == 2
        assert len(m["al"]) == len(m["al_low"]) == len(m["al_high"]) == 2
        assert {"ir", "n_ir", "n_r2", "mean_al", "missing_rate"} <= set(m)
        records = read_records(params.run_dir / "eval" / f"{name}.jsonl")
        assert len(records) == 4 and {r["model"] for r in records} == {name}
    assert set(metrics["paired"]) == {"sft - base", "dpo - base", "dpo - sft"}
    assert all(p["turns_run"] == 4 for p in summary["progress"].values())
    base = read_records(params.run_dir / "eval" / "base.jsonl")
    dpo = read_records(params.run_dir / "eval" / "dpo.jsonl")
    first = {r["persona_id"]: r["user"] for r in base if r["turn"] == 1}
    assert first == {r["persona_id"]: r["user"] for r in dpo if r["turn"] == 1}  # same opener


@pytest.mark.slow
def test_rerun_of_a_finished_stage_does_nothing_again(finished_run, monkeypatch):
    params, _, summary = finished_run
    before = {name: (params.run_dir / "eval" / f"{name}.jsonl").read_bytes()
              for name in ("base", "sft", "dpo")}

    def no_model(*args, **kwargs):
        raise AssertionError("a finished model was loaded again")

    monkeypatch.setattr(evaluation, "open_responder", no_model)
    again = evaluation.run_stage(params)
    assert all(p["turns_run"] == 0 for p in again["progress"].values())
    assert {name: (params.run_dir / "eval" / f"{name}.jsonl").read_bytes()
            for name in before} == before
    assert again["models"] == summary["models"]
    usage = json.loads((params.run_dir / "usage" / "evaluate.json").read_text())
    assert usage["totals"]["requests"] == 0


@pytest.mark.slow
def test_notebook_05_runs_on_the_finished_stage(finished_run, tmp_path):
    from aloe.runner import execute_stage

    params, params_file, _ = finished_run
    output = tmp_path / "05_evaluate.ipynb"
    execute_stage(ROOT / "notebooks" / "05_evaluate.ipynb", params, str(params_file), output,
                  progress=False)
    text = output.read_text()
    assert text.count("image/png") == 3  # three figures, each shown once
    assert "Findings (95% bootstrap intervals" in text
    assert "dpo: reply" in text  # the side-by-side transcripts


# ------------------------------------------------------------------------------------------
# Killing the stage partway
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_and_rerun_finishes_without_repeating_turns(tmp_path, reference_dir, local_server,
                                                         monkeypatch):
    data = stage_dict(tmp_path, models=[{"name": "base"}])
    params = params_from_dict(data)
    benchmark = write_benchmark(params, reference_dir, 3)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    out_file = params.run_dir / "eval" / "base.jsonl"

    command = [sys.executable, "-m", "aloe.evaluation", str(params_file), "--limit", "2"]
    child = subprocess.Popen(command,
                             cwd=ROOT, env={**os.environ, "ALOE_ROOT": str(ROOT),
                                            "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and child.poll() is None:
        if out_file.exists() and out_file.read_bytes().count(b"\n") >= 2:  # turn 1 recorded
            break
        time.sleep(0.05)
    assert child.poll() is None, f"stage ended before it could be killed: {child.stderr.read()}"
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before = len(read_records(out_file))  # (repairs a line cut short by the kill)
    finished_before = out_file.read_bytes()
    assert done_before == 2  # turn 1 of both conversations, turn 2 not finished

    generated: list[int] = []
    original = InProcessResponder.reply_many

    def counting(self, histories, **kwargs):
        generated.append(len(histories))
        return original(self, histories, **kwargs)

    monkeypatch.setattr(InProcessResponder, "reply_many", counting)
    params.evaluation.limit = 2
    summary = evaluation.run_stage(params)
    records = read_records(out_file)
    assert sorted((r["persona_id"], r["turn"]) for r in records) == \
        sorted((p["id"], k) for p in benchmark[:2] for k in (1, 2))
    assert out_file.read_bytes().startswith(finished_before)  # nothing rewritten
    assert generated == [2]  # turn 2 of both conversations, in one batch; turn 1 not again
    assert summary["progress"]["base"] == {"turns_before": 2, "turns_run": 2}
