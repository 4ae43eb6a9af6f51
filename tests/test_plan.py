"""`aloe plan`: offline (no socket is opened), requests counted by the issue's rules, a ceiling
that bounds real prompts counted by the embedded model's real tokenizer, forecasts that name
where their lengths come from, and the JSON shape other tools read."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aloe.core.config import params_from_dict
from aloe.core.protocols.aloe import score_messages
from aloe.core.records import DataError, append_record
from aloe.llm.ledger import Ledger
from aloe.operations import plan as planning
from aloe.operations.plan_format import format_plan
from aloe.prompts import few_shot, render
from aloe.roles.judges import preference_messages
from aloe.roles.simulator import simulator_messages
from aloe.stages import plan_lengths
from tests.conftest import MODEL_CACHE, ROOT, load_params, tiny_dict

PAPER = ROOT / "params" / "paper.yaml"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the plan opened a connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _params(tmp_path: Path, **sections: dict):
    return params_from_dict(tiny_dict(tmp_path, **sections), source="test")


def _requests(plan: planning.Plan, stage: str) -> dict[str, int]:
    return {r.role: r.requests for r in plan.roles if r.stage == stage}


# ------------------------------------------------------------------------------------------
# Offline, and the command
# ------------------------------------------------------------------------------------------
def test_the_paper_plan_needs_no_network_and_no_key(no_network: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    plan = planning.make_plan(load_params(PAPER))
    total = plan.total()
    assert total["requests"] > 100_000
    assert 0 < total["forecast"]["cost_usd"] < total["ceiling"]["cost_usd"]
    assert total["ceiling"]["allowance"]["requests"] > 0
    assert plan.gpu["measured"] == ["H200 141GB"] and "measured on H200" in plan.gpu["assumption"]


def test_aloe_plan_json_has_the_documented_shape(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run([sys.executable, "-m", "aloe", "plan", str(PAPER), "--json"],
                            cwd=ROOT, env={**env, "ALOE_ROOT": str(ROOT)}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"stages", "total", "gpu_hours", "full_finetune"}
    assert data["full_finetune"] is None  # the tiny profile trains adapters
    assert set(data["stages"]) == {"preflight", "personas", "conversations", "evaluate"}
    for stage in data["stages"].values():
        assert set(stage) == {"roles"}
        for role in stage["roles"].values():
            assert set(role) == {"requests", "forecast", "ceiling"}
            assert isinstance(role["requests"], int)
            for key in ("prompt_tokens", "completion_tokens", "cost_usd"):
                assert role["forecast"][key] <= role["ceiling"][key]
    assert set(data["gpu_hours"]["by_gpu"]["RTX 4090 24GB"]) == {"sft", "dpo", "evaluate",
                                                                 "total"}
    text = subprocess.run([sys.executable, "-m", "aloe", "plan", str(PAPER)], cwd=ROOT,
                          env={**env, "ALOE_ROOT": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert text.returncode == 0 and "forecast" in text.stdout and "ceiling" in text.stdout
    assert "GPU hours" in text.stdout and "how it counts" in text.stdout


# ------------------------------------------------------------------------------------------
# Counting requests
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule, votes", [("both_orders", 2), ("logprobs", 2),
                                         ("single_random", 1)])
def test_stage_2_counts_user_inducer_two_replies_and_the_votes(tmp_path: Path, rule: str,
                                                               votes: int) -> None:
    params = _params(tmp_path, conversations={"n_conversations": 7, "turns": 3,
                                              "judge_rule": rule})
    counted = _requests(planning.make_plan(params), "conversations")
    assert counted == {"user": 21, "inducer": 21, "assistant": 42, "judge": 21 * votes}


def test_stage_5_counts_user_and_judge_and_an_endpoints_replies(tmp_path: Path) -> None:
    models = [{"name": "base"}, {"name": "api", "model": "m", "base_url": "http://x/v1"}]
    params = _params(tmp_path, evaluation={"models": models, "turns": 4},
                     personas={"benchmark_profiles": 3, "benchmark_personalities": 2})
    counted = _requests(planning.make_plan(params), "evaluate")
    assert counted == {"user": 6 * 4 * 2, "judge": 6 * 4 * 2, "policy:api": 6 * 4}


def test_stage_1_counts_only_the_pools_that_are_generated(tmp_path: Path) -> None:
    grow = {"max_rounds": 5, "calls_per_round": 3}
    own = _params(tmp_path, personas=grow)  # two training pools, two benchmark pools
    assert _requests(planning.make_plan(own), "personas") == {"generator": 4 * 5 * 3}
    pool = tmp_path / "profiles.jsonl"
    pool.write_text('"He is a 40-year-old baker in Lyon who keeps bees."\n')
    imported = _params(tmp_path, personas={**grow, "import_profiles": str(pool),
                                           "import_as": "pool"})
    assert _requests(planning.make_plan(imported), "personas") == {"generator": 3 * 5 * 3}


def test_no_benchmark_pool_is_planned_when_evaluation_reads_the_official_one(
        tmp_path: Path, reference_dir: Path) -> None:
    params = _params(tmp_path, personas={"max_rounds": 5, "calls_per_round": 3},
                     evaluation={"benchmark": "aloe",
                                 "aloe_profiles": str(reference_dir / "profile_eval.jsonl"),
                                 "aloe_personalities": str(reference_dir /
                                                           "personality_eval.jsonl")})
    plan = planning.make_plan(params)
    assert _requests(plan, "personas") == {"generator": 2 * 5 * 3}
    assert plan_lengths.benchmark_size(params) == 100  # 20 profiles x the first 5 personalities


# ------------------------------------------------------------------------------------------
# The ceiling bounds real prompts
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from aloe.core.local_model import ensure_embedded_model

    return AutoTokenizer.from_pretrained(ensure_embedded_model(MODEL_CACHE))


def _words(tokenizer, n: int, rng: random.Random) -> str:
    """Text of exactly n tokens of this tokenizer (words that are one token each)."""
    vocab = tokenizer.get_vocab()
    vocabulary = sorted(t[1:] for t in vocab if t.startswith("\u0120") and t[1:] in vocab
                        and t[1:].isalpha() and t[1:].islower() and len(t) > 3)
    text = " ".join(rng.choice(vocabulary) for _ in range(n))
    assert len(tokenizer(text, add_special_tokens=False).input_ids) == n
    return text


def _real_tokens(tokenizer, messages: list[dict]) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def test_the_ceiling_bounds_every_prompt_at_its_longest(tokenizer, tmp_path: Path) -> None:
    """Every variable part filled with real text of exactly its ceiling length, rendered
    through the stages' own helpers, counted by the real tokenizer with its chat template
    (which adds a default system prompt of its own): never more than the plan's ceiling for
    that request."""
    params = _params(tmp_path, conversations={"turns": 3}, evaluation={"turns": 3})
    lengths = plan_lengths.ceiling_lengths(params)
    rng = random.Random(0)
    fill = {key: _words(tokenizer, int(tokens), rng) for key, tokens in [
        ("profile", lengths.persona["profile"]), ("personality", lengths.persona["personality"]),
        ("user", lengths.completion["user"]), ("assistant", lengths.completion["assistant"]),
        ("inducer", lengths.completion["inducer"]), ("policy", lengths.completion["policy"]),
        ("item", lengths.pool_item["profile"]), ("answer", lengths.completion["judge"])]}
    persona = {"profile": fill["profile"], "personality": fill["personality"]}
    first = {}
    for stage, make in planning.STAGES.items():
        for batch in make(params, lengths):
            key = (stage, batch.role, batch.reask)
            first[key] = max(first.get(key, 0.0), batch.prompt)  # the last turn's, the longest
    history = []
    for _ in range(3):
        history += [{"role": "user", "content": fill["user"]},
                    {"role": "assistant", "content": fill["assistant"]}]
    last = history[:-1]  # the third turn: two earlier turns and the user's message
    judging = preference_messages(persona, last, fill["assistant"], fill["assistant"])
    scoring = score_messages(persona, last, fill["policy"])
    examples = "\n".join([fill["item"]] * params.personas.sample_k)
    real = {
        ("preflight", "judge", False): [{"role": "user", "content": render("probe_ready")}],
        ("personas", "generator", False): [{"role": "user", "content": render(
            "generate_profiles", n=params.personas.generate_n, examples=examples)}],
        ("conversations", "user", False): simulator_messages(persona, history[:-2]),
        ("conversations", "inducer", False): few_shot("induce_persona", transcript=_t(last),
                                                      **persona),
        ("conversations", "assistant", False): [{"role": "system", "content": render(
            "assistant_hinted", profile=fill["inducer"], personality="")}, *last],
        ("conversations", "judge", False): judging,
        ("conversations", "judge", True): judging + [
            {"role": "assistant", "content": fill["answer"]},
            {"role": "user", "content": render("judge_preference_reask")}],
        ("evaluate", "user", False): simulator_messages(persona, history[:-2]),
        ("evaluate", "judge", False): scoring,
    }
    for key, messages in real.items():
        counted = _real_tokens(tokenizer, messages)
        assert counted > 0.75 * first[key] or key[0] == "preflight"  # the text was really there
        assert counted <= first[key], (key, counted, first[key])


def _t(history: list[dict]) -> str:
    from aloe.core.chat import transcript

    return transcript(history)


def test_the_ceilings_chars_per_token_rule_holds_for_every_template_and_seed(tokenizer
                                                                            ) -> None:
    from importlib import resources

    from aloe.stages.pools import builtin_seeds

    texts = [re.sub(r"\$\{\w+\}", "", f.read_text())  # the fixed text the plan counts
             for f in resources.files("aloe.prompts").iterdir() if f.name.endswith(".txt")]
    texts += builtin_seeds("profile") + builtin_seeds("personality")
    for text in texts:
        counted = len(tokenizer(text, add_special_tokens=False).input_ids)
        assert counted <= len(text) / plan_lengths.CEILING_CHARS_PER_TOKEN, text[:60]


# ------------------------------------------------------------------------------------------
# Forecasts and their sources
# ------------------------------------------------------------------------------------------
def test_the_forecast_uses_measured_lengths_and_names_them(tmp_path: Path) -> None:
    params = _params(tmp_path)
    before = planning.make_plan(params)
    assert all(r.source.startswith("default") for r in before.roles if r.stage != "preflight")
    ledger = Ledger("conversations")  # what stage 2 saves: ten replies of 25 tokens
    for _ in range(10):
        ledger.record_request("assistant", str(MODEL_CACHE / "SmolLM2-135M-Instruct"), 300, 25,
                              0.0, 0.0)
    ledger.save(params.layout)
    after = planning.make_plan(params)
    replies = next(r for r in after.roles if (r.stage, r.role) == ("conversations",
                                                                     "assistant"))
    assert replies.source == f"measured: 10 requests of local in run(s) {params.run.name}"
    assert replies.forecast.completion_tokens == pytest.approx(25 * replies.requests)
    assert replies.forecast.completion_tokens <= replies.ceiling.completion_tokens


# ------------------------------------------------------------------------------------------
# The run files it reads, through their schemas
# ------------------------------------------------------------------------------------------
PERSONA = {"id": "p1", "profile": "A baker in Lyon.", "personality": "Blunt and warm."}


@pytest.mark.parametrize("name, bad, problem", [
    ("personas", {"id": "p2", "profile": "A nurse."}, "persona 'p2' without a personality"),
    ("persona_rounds", {"pool": "profiles", "round": 1, "calls": 1, "unusable": 0,
                        "candidates": 2, "admitted": 3, "pool_size": 9},
     "admitted 3 of 2 candidates"),
])
def test_a_bad_run_file_is_named_by_file_and_line(tmp_path: Path, name: str, bad: dict,
                                                  problem: str) -> None:
    params = _params(tmp_path)
    path = getattr(params.layout, name)
    good = PERSONA if name == "personas" else {**bad, "admitted": 1}
    append_record(path, good)
    append_record(path, bad)  # a hand edit the writers' schema would have refused
    with pytest.raises(DataError, match=re.escape(f"{path}:2: ") + ".*" + re.escape(problem)):
        planning.make_plan(params)


def test_another_runs_bad_ledger_is_left_out_and_named(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    params = _params(tmp_path)
    other = params.layout.run_dir.parent / "older" / "usage" / "history.jsonl"
    other.parent.mkdir(parents=True)
    other.write_text('{"stage": "conversations", "started": "yesterday", "roles": {}}\n')
    plan = planning.make_plan(params)
    assert all(r.source.startswith("default") for r in plan.roles if r.stage != "preflight")
    assert f"{other}:1: started 'yesterday' is not a time" in capsys.readouterr().err


def test_a_full_fine_tuning_profile_is_planned_with_its_memory_and_gpu_count() -> None:
    """paper_full.yaml trains every weight: the plan gives each stage's memory per GPU on its
    processes and the fewest 80 GiB GPUs that fit, the text says so, and the disk counts whole
    models; the QLoRA profile has none of it."""
    full = planning.make_plan(load_params(ROOT / "params" / "paper_full.yaml"))
    lora = planning.make_plan(load_params(ROOT / "params" / "paper.yaml"))
    assert lora.full_finetune is None and lora.to_json()["full_finetune"] is None
    stages = full.to_json()["full_finetune"]["stages"]
    assert {s: (e["method"], e["gpus"]) for s, e in stages.items()} == {"sft": ("full", 4),
                                                                      "dpo": ("full", 4)}
    assert all(e["fits"] and e["min_gpus"] == 3 for e in stages.values())
    text = format_plan(full)
    assert f"sft: {stages['sft']['per_gpu_gib']:,.1f} GiB on each of 4 GPU(s) (fits)" in text
    assert "full fine-tuning" not in format_plan(lora)
    assert full.disk_gb > lora.disk_gb + 8e9 * 4 * 2 / 1e9  # two fp32 8B models at least
