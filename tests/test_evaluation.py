"""Stage 5: the benchmark, batched replies with adapters, the protocol on the real local
server, resuming after a kill, and notebook 05. (Reading the judge: tests/test_judges.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aloe.core.config import params_from_dict
from aloe.core.protocols.aloe import parse_score
from aloe.core.records import read_records, write_records
from aloe.stages import evaluation
from aloe.stages.evaluation import EvaluationError, EvaluationRun, dialogue, side, stage
from aloe.stages.policy import InProcessResponder, PolicyError
from aloe.stages.pools import load_aloe_benchmark
from tests.conftest import MODEL_CACHE, ROOT, embedded_model, tiny_dict

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
# The benchmark and the judge's prompt
# ------------------------------------------------------------------------------------------
def test_official_files_load_as_exactly_100_personas(reference_dir):
    personas = load_aloe_benchmark(reference_dir / "profile_eval.jsonl",
                                   reference_dir / "personality_eval.jsonl")
    assert len(personas) == 100
    assert len({p["id"] for p in personas}) == 100
    assert len({p["profile"] for p in personas}) == 20
    assert len({p["personality"] for p in personas}) == 5


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


# ------------------------------------------------------------------------------------------
# Batched in-process replies, with and without an adapter
# ------------------------------------------------------------------------------------------
def make_adapter(path: Path, seed: int) -> Path:
    """A small LoRA adapter on the embedded model with random (non-zero) B weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(embedded_model(), dtype=torch.float32)
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
    assert all(isinstance(r.text, str) and r.text for r in batched)
    responder.max_new_tokens = 1  # no reply ends by itself in one token: each is cut
    assert all(r.truncated for r in responder.reply_many(HISTORIES))
    responder.close()

    adapted = InProcessResponder(str(MODEL), make_adapter(tmp_path / "lora", seed=1),
                                 batch_size=8, max_new_tokens=12, temperature=0.0)
    assert adapted.reply_many(HISTORIES) != batched


# ------------------------------------------------------------------------------------------
# The protocol on the real local server
# ------------------------------------------------------------------------------------------
def stage_dict(tmp_path: Path, **evaluation_overrides) -> dict:
    """The tiny profile shrunk for tests: 2 turns, short messages, the base model and the SFT
    and DPO adapters these tests make (not the profile's GRPO policy)."""
    models = [{"name": "base"}, {"name": "sft", "adapter": "sft"},
              {"name": "dpo", "adapter": "dpo"}]
    data = tiny_dict(tmp_path, evaluation={"turns": 2, "max_new_tokens": 24, "batch_size": 8,
                                           "bootstrap_samples": 50, "models": models,
                                           **evaluation_overrides})
    data["roles"]["user"]["max_tokens"] = 24
    data["roles"]["judge"]["max_tokens"] = 6
    return data


def write_benchmark(params, reference_dir: Path, n: int) -> list[dict]:
    personas = load_aloe_benchmark(reference_dir / "profile_eval.jsonl",
                                   reference_dir / "personality_eval.jsonl")[::7][:n]
    write_records(params.layout.benchmark, personas)
    return personas


def test_missing_adapter_stops_before_any_work(tmp_path, reference_dir):
    params = params_from_dict(stage_dict(tmp_path, models=[{"name": "base"},
                                                           {"name": "sft", "adapter": "sft"}]))
    write_benchmark(params, reference_dir, 2)
    with pytest.raises(PolicyError, match=r"adapters/sft.*run stage 3"):
        evaluation.run_stage(params)
    assert not params.layout.eval_dir.exists()


@pytest.mark.slow
def test_official_benchmark_with_limit_through_an_endpoint(tmp_path, reference_dir, local_server):
    """`benchmark: aloe` + limit, the model under test behind an OpenAI-compatible endpoint."""
    params = params_from_dict(stage_dict(
        tmp_path, benchmark="aloe", limit=2,
        aloe_profiles=str(reference_dir / "profile_eval.jsonl"),
        aloe_personalities=str(reference_dir / "personality_eval.jsonl"),
        models=[{"name": "served", "base_url": "local"}]))
    summary = evaluation.run_stage(params)
    records = read_records(params.layout.eval_records("served"))
    assert sorted((r["persona_id"], r["turn"]) for r in records) == \
        [("aloe-eval-001", 1), ("aloe-eval-001", 2), ("aloe-eval-002", 1), ("aloe-eval-002", 2)]
    for r in records:
        assert r["user"] and isinstance(r["reply"], str) and r["raw_judgement"] is not None
        assert r["score"] is None or 1 <= r["score"] <= 5
        assert r["score"] == parse_score(r["raw_judgement"])
    metrics = json.loads(params.layout.metrics.read_text())
    assert metrics["models"]["served"]["turns"] == [1, 2]
    assert metrics == json.loads(json.dumps(summary.metrics))
    usage = json.loads(params.layout.usage("evaluate-served").read_text())
    assert usage["roles"]["policy"]["requests"] == 4


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, reference_dir, local_server):
    """Base, SFT and DPO (random adapters) evaluated on a 2-persona run benchmark, 2 turns."""
    tmp_path = tmp_path_factory.mktemp("eval_run")
    data = stage_dict(tmp_path)
    params = params_from_dict(data)
    write_benchmark(params, reference_dir, 2)
    make_adapter(params.layout.adapter("sft"), seed=1)
    make_adapter(params.layout.adapter("dpo"), seed=2)
    summary = evaluation.run_stage(params)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return params, params_file, summary


@pytest.mark.slow
def test_tiny_run_evaluates_base_sft_and_dpo(finished_run):
    params, _, summary = finished_run
    metrics = json.loads(params.layout.metrics.read_text())
    assert list(metrics["models"]) == ["base", "sft", "dpo"]
    for name, m in metrics["models"].items():
        assert m["turns"] == [1, 2] and m["n_personas"] == 2
        assert len(m["al"]) == len(m["al_low"]) == len(m["al_high"]) == 2
        assert {"ir", "n_ir", "n_r2", "mean_al", "missing_rate"} <= set(m)
        records = read_records(params.layout.eval_records(name))
        assert len(records) == 4 and {r["model"] for r in records} == {name}
    assert set(metrics["paired"]) == {"sft - base", "dpo - base", "dpo - sft"}
    assert all(p.turns_run == 4 for p in summary.progress.values())
    base = read_records(params.layout.eval_records("base"))
    dpo = read_records(params.layout.eval_records("dpo"))
    first = {r["persona_id"]: r["user"] for r in base if r["turn"] == 1}
    assert first == {r["persona_id"]: r["user"] for r in dpo if r["turn"] == 1}  # same opener


@pytest.mark.slow
def test_rerun_of_a_finished_stage_does_nothing_again(finished_run, monkeypatch):
    params, _, summary = finished_run
    before = {name: params.layout.eval_records(name).read_bytes()
              for name in ("base", "sft", "dpo")}

    def no_model(*args, **kwargs):
        raise AssertionError("a finished model was loaded again")

    monkeypatch.setattr(stage, "open_responder", no_model)  # where the stage opens models
    again = evaluation.run_stage(params)
    assert all(p.turns_run == 0 for p in again.progress.values())
    assert {name: params.layout.eval_records(name).read_bytes()
            for name in before} == before
    assert again.metrics["models"] == summary.metrics["models"]
    usage = json.loads(params.layout.usage("evaluate").read_text())
    assert usage["totals"]["requests"] == 0


@pytest.mark.slow
def test_notebook_05_runs_on_the_finished_stage(finished_run, tmp_path):
    from aloe.operations.runner import execute_stage

    params, params_file, _ = finished_run
    output = tmp_path / "05_evaluate.ipynb"
    execute_stage(ROOT / "notebooks" / "05_evaluate.ipynb", params, str(params_file), output,
                  progress=False)
    text = output.read_text()
    # four figures, each shown once: AL(k), the scores, the missing rate, the simulated user
    # (word overlap, always measured); the other measures say they did not run
    assert text.count("image/png") == 4
    assert "No preference shift in this run" in text and "No inference probes" in text
    # the findings, computed from this run's figures: its caveats and the lines beyond the paper
    assert "**Caveats**" in text and "demonstrates the machinery, not the method" in text
    assert "Beyond the paper's evaluation" in text and "protocol **aloe**" in text
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
    out_file = params.layout.eval_records("base")

    command = [sys.executable, "-m", "aloe", "evaluate", str(params_file), "--limit", "2"]
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
    progress = summary.progress["base"]
    assert (progress.turns_before, progress.turns_run) == (2, 2)


def test_records_carry_their_profile_and_truncation_under_the_released_protocol(
        tmp_path, reference_dir):
    """Stage 5 as released (the simulated user's role-play with replies fed back as they are,
    a judge that reads the latest user message only) with every role and the model under test
    behind an endpoint. (The stub server stands in for the models: what is checked is what the
    stage records.)"""
    from tests.support.stub_server import StubServer

    with StubServer(seed=0) as stub:
        data = stage_dict(tmp_path, benchmark="aloe", limit=2, prompt_style="reference",
                          judge_context="last_message",
                          aloe_profiles=str(reference_dir / "profile_eval.jsonl"),
                          aloe_personalities=str(reference_dir / "personality_eval.jsonl"),
                          models=[{"name": "served", "model": "stub",
                                   "base_url": stub.base_url}])
        for role in data["roles"].values():
            role.update(model="stub", base_url=stub.base_url)
        params = params_from_dict(data)
        summary = evaluation.run_stage(params)
    records = read_records(params.layout.eval_records("served"))
    assert len(records) == 4
    assert {r["profile_id"] for r in records} == {"aloe-eval-profile-01"}
    assert all(r["truncated"] is False and r["score"] is not None for r in records)
    assert summary.metrics["bootstrap_unit"] == "profile"
    assert summary.metrics["models"]["served"]["truncated"] == [0.0, 0.0]
# ------------------------------------------------------------------------------------------
# Cut conversations fail the stage (issue 16), against the stub server (its own process)
# ------------------------------------------------------------------------------------------
def _stub_benchmark_params(tmp_path: Path, base_url: str, **evaluation_overrides):
    from tests.conftest import stub_roles

    data = tiny_dict(tmp_path, roles=stub_roles(base_url, max_retries=0), evaluation={
        "turns": 2, "bootstrap_samples": 50,
        "models": [{"name": "served", "model": "stub", "base_url": base_url}],
        **evaluation_overrides})
    params = params_from_dict(data, source="stub(test)")
    write_records(params.layout.benchmark, [
        {"id": f"bench-{i}", "profile": f"She is a {30 + i}-year-old baker in Porto who swims "
         "every morning.", "personality": "She is cheerful and direct."} for i in range(4)])
    return params


def test_cut_benchmark_conversations_fail_the_stage_unless_tolerated(tmp_path: Path) -> None:
    from aloe.core.errors import IncompleteStageError
    from tests.support.stub_server import StubServer

    with StubServer(fail_rate=1.0) as stub:
        params = _stub_benchmark_params(tmp_path / "strict", stub.base_url)
        with pytest.raises(IncompleteStageError) as error:
            evaluation.run_stage(params)
        message = str(error.value)
        assert message.startswith("4 of 4 benchmark conversations (model x persona) could not "
                                  "finish (more than evaluation.max_failed_share: 0); first: "
                                  "model 'served' persona bench-0: user simulator: LLMError: "
                                  f"role 'user' (model stub at {stub.base_url}): failed after 1 "
                                  "attempts: InternalServerError")
        assert "\n" not in message and message.endswith("a rerun retries only those 4")
        assert not params.layout.metrics.exists()  # no metrics from a cut benchmark

        tolerant = _stub_benchmark_params(tmp_path / "tolerant", stub.base_url,
                                          max_failed_share=1.0)
        evaluation.run_stage(tolerant)
        assert tolerant.layout.metrics.exists()


def test_an_adapter_without_its_weights_or_with_changed_ones_is_named(tmp_path: Path) -> None:
    """A folder without weights used to count as a finished adapter and fail later with an
    unrelated hub error (PEFT looking the folder's name up online)."""
    from aloe.core.layout import ADAPTER_STATS
    from aloe.core.records import write_json
    from aloe.stages import training
    from aloe.stages.policy import adapter_path, weights_record

    params = params_from_dict(stage_dict(tmp_path, models=[{"name": "sft", "adapter": "sft"}]))
    spec = params.evaluation.models[0]
    folder = make_adapter(params.layout.adapter("sft"), seed=1)
    write_json(folder / ADAPTER_STATS, {"adapter_weights": weights_record(folder)})
    assert adapter_path(params, spec) == folder and training.is_finished(params, "sft")

    weights = folder / "adapter_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-8] + b"\0" * 8)
    with pytest.raises(PolicyError) as changed:
        adapter_path(params, spec)
    assert str(changed.value) == (
        f"{weights}: the adapter's weights changed since training (their sha256 differs from "
        "the one in training_stats.json); restore them, or delete the folder and run stage 3 "
        "(sft) again")

    weights.unlink()
    assert not training.is_finished(params, "sft")  # unfinished: training would run again
    write_records(params.layout.benchmark, [{"id": "b0", "profile": "He is a 30-year-old cook.",
                                             "personality": "He is calm."}])
    with pytest.raises(PolicyError) as missing:
        evaluation.run_stage(params)
    assert str(missing.value) == (
        f"{folder}: the adapter has no weights file (adapter_model.safetensors): it is "
        "unfinished or damaged; delete the folder and run stage 3 (sft) again")
    assert not params.layout.eval_dir.exists()


# ------------------------------------------------------------------------------------------
# Run files hold valid values, or are refused where they are read (issue 27)
# ------------------------------------------------------------------------------------------
def test_a_score_off_the_protocols_scale_is_refused_with_file_and_line(tmp_path: Path) -> None:
    """A score of 99 on ALOE's 1-5 scale gave AL(1) = 27.25 and exit 0."""
    from aloe.core.records import DataError

    params = params_from_dict(stage_dict(tmp_path, models=[{"name": "base"}]))
    personas = [{"id": "b0", "profile": "He is a cook.", "personality": "He is calm."}]
    write_records(params.layout.benchmark, personas)
    good = {"model": "base", "persona_id": "b0", "turn": 1, "score": 4}
    path = params.layout.eval_records("base")
    write_records(path, [good, {**good, "turn": 2, "score": None}])
    assert [r["score"] for r in evaluation.load_records(params)] == [4, None]
    for bad, said in [({**good, "turn": 2, "score": 99}, "score 99 is not on the aloe "
                                                          "protocol's 1-5 scale"),
                      ({**good, "turn": 0}, "turn 0 is not a turn number"),
                      ({**good, "turn": 2, "score": "4"}, "score '4' is not on the aloe")]:
        write_records(path, [good, bad])
        with pytest.raises(DataError) as error:
            evaluation.load_records(params)
        assert str(error.value).startswith(f"{path}:2: {said}")


def test_a_conversation_written_twice_is_refused_by_every_reader(tmp_path: Path) -> None:
    """A duplicated line made the report say 5 conversations where the stage said 4."""
    from aloe.core.records import DataError
    from aloe.presentation import report
    from aloe.stages.conversations import load_conversations

    params = params_from_dict(stage_dict(tmp_path))
    trees = [{"id": f"conv-{i:05d}", "index": i, "turns": []} for i in range(4)]
    write_records(params.layout.conversations, trees)
    assert len(load_conversations(params)) == 4
    assert report.product_counts(params.layout)["conversations"] == 4
    write_records(params.layout.conversations, [*trees, trees[2]])
    for read in (lambda: load_conversations(params),
                 lambda: report.product_counts(params.layout)):
        with pytest.raises(DataError, match=r"conversations\.jsonl:5: conversation conv-00002 "
                                            r"is written twice \(first on line 3\)"):
            read()


def test_a_benchmark_persona_off_its_schema_is_refused_with_file_and_line(
        tmp_path: Path) -> None:
    from aloe.core.records import DataError

    params = params_from_dict(stage_dict(tmp_path, models=[{"name": "base"}]))
    good = {"id": "b0", "profile": "He is a cook.", "personality": "He is calm."}
    for bad, said in [({**good, "id": "b1", "profile": 5}, "persona 'b1' without a profile"),
                      (good, "persona 'b0' is listed twice"),
                      ({"profile": "x", "personality": "y"}, "persona without an id")]:
        write_records(params.layout.benchmark, [good, bad])
        with pytest.raises(DataError) as error:
            evaluation.benchmark_personas(params)
        assert str(error.value).startswith(f"{params.layout.benchmark}:2: {said}")


class _Offline:
    """An LLM session for side measures whose judges a test replaces: it only runs them."""

    chat = None

    def run(self, work):
        from aloe.llm import run_sync

        return run_sync(work)


class _Saying:
    """A model under test that says one thing to everything."""

    def __init__(self, text: str):
        self.text = text

    def reply_many(self, prompts):
        from aloe.stages.policy import Reply

        return [Reply(self.text) for _ in prompts]


def test_side_records_off_their_schema_are_refused_where_written_and_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inference probes, the simulated user measured and the second judge's judgements
    have their schemas too: an accuracy of 7 (0-1), a contradiction "no", a second score of
    99 or a line written twice is named by file and line by every reader (metrics.json's
    figures, the stage resuming), and the stage never writes such a record."""
    from aloe.core.records import DataError, SchemaError
    from aloe.roles.judges import Judgement, Measurement

    data = stage_dict(tmp_path, models=[{"name": "base"}], inference_probe=True,
                      simulator_check=True, judge_check={"sample": 2})
    data["roles"]["second_judge"] = dict(data["roles"]["judge"])
    params = params_from_dict(data)
    layout, spec, offline = params.layout, params.evaluation.models[0], _Offline()
    personas = [{"id": "b0", "profile": "He is a cook.", "personality": "He is calm."}]
    write_records(layout.benchmark, personas)
    records = [{"model": "base", "persona_id": "b0", "turn": turn, "user": "Hi",
                "reply": "Hello.", "score": 4} for turn in (1, 2)]
    write_records(layout.eval_records("base"), records)
    probes, measures, judged = (layout.probe_records("base"), layout.simulator_records("base"),
                                layout.judge_check())
    good = {probes: {"model": "base", "persona_id": "b0", "turn": 1, "statement": "You cook.",
                     "accuracy": 0.5},
            measures: {"model": "base", "persona_id": "b0", "turn": 1, "revealed": 0.3,
                       "contradiction": False},
            judged: {"model": "base", "persona_id": "b0", "turn": 1, "main_score": 4,
                     "second_score": 3}}
    for path, record in good.items():
        write_records(path, [record, {**record, "turn": 2}])
    metrics = evaluation.compute_metrics(params, records, personas)
    assert {"inference", "simulator", "judge_agreement"} <= set(metrics)

    def figures():
        return evaluation.compute_metrics(params, records, personas)

    readers = {probes: [figures, lambda: evaluation.run_stage(params)],
               measures: [figures, lambda: evaluation.check_simulator(
                   EvaluationRun.resolve(params, personas), offline, "base", "aloe")],
               judged: [figures, lambda: evaluation.check_judge(
                   EvaluationRun.resolve(params, personas), offline, records, "aloe")]}
    bad = {probes: ("accuracy", 7, "accuracy 7 is not a number from 0 to 1 (or none)"),
           measures: ("contradiction", "no", "contradiction 'no' is not true or false (or none)"),
           judged: ("second_score", 99, "second_score 99 is not on the aloe protocol's 1-5 "
                                        "scale")}
    for path, (key, value, said) in bad.items():
        for lines, says in [([good[path], {**good[path], "turn": 2, key: value}], said),
                            ([good[path], good[path]], "written twice (first on line 1)")]:
            write_records(path, lines)
            for read in readers[path]:
                with pytest.raises(DataError) as error:
                    read()
                assert str(error.value).startswith(f"{path}:2: ") and says in str(error.value)
        write_records(path, [good[path]])  # turn 2 is left to measure

    async def accuracy_of_7(*args, **kwargs):
        return Measurement(7.0, "70", 1)

    async def revealed_too_much(*args, **kwargs):
        return Measurement(1.5, "15", 1)

    async def no(*args, **kwargs):
        return Measurement(False, "No", 1)

    async def score_of_9(*args, **kwargs):
        return Judgement(9, "9", 1)

    monkeypatch.setattr(dialogue, "score_inference", accuracy_of_7)
    monkeypatch.setattr(side, "score_revealed", revealed_too_much)
    monkeypatch.setattr(side, "check_contradiction", no)
    monkeypatch.setattr(side, "score_reply", score_of_9)  # the second judge's request
    run = EvaluationRun.resolve(params, personas)
    done = dialogue.finished_turns(run, spec)
    writers = {probes: (lambda: evaluation.probe_model(run, offline, spec,
                                                       _Saying("You cook."), done),
                        "accuracy 7.0 is not a number from 0 to 1 (or none)"),
               measures: (readers[measures][1], "revealed 1.5 is not a number from 0 to 1 "
                                                "(or none)"),
               judged: (readers[judged][1], "second_score 9 is not on the aloe protocol's 1-5 "
                                            "scale")}
    for path, (write, said) in writers.items():
        with pytest.raises(SchemaError) as refused:
            write()
        assert str(refused.value) == (f"{path}: refusing to write a record that breaks its "
                                      f"schema ({said}); nothing was written")
        assert read_records(path) == [good[path]]
