"""Stage 5 beyond the paper's evaluation: protocols by name and version, replayed users, a
preference shift and long dialogues, the inference probe, the simulated user and the judge
measured.

The quick tests run the real stage against the stub server (tests/support/stub_server.py, a
separate process speaking the OpenAI protocol) standing in for every model, the models under
test included: what they check is what the stage sends, records and computes, which a 135M
model would make slow without making more real. The slow tests at the end run the same modes
on the real embedded model (the tiny profile), which proves the machinery, not the method.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aloe.core import protocols, schemas
from aloe.core.config import load_params, params_from_dict
from aloe.core.errors import ParamsError
from aloe.core.records import read_records
from aloe.roles.judges import Judgement
from aloe.roles.simulator import simulator_messages
from aloe.stages import evaluation
from aloe.stages.evaluation import dialogue
from tests.conftest import ROOT, tiny_dict
from tests.support.benchmarks import stub_dict, with_benchmark
from tests.support.stub_server import StubServer


# ------------------------------------------------------------------------------------------
# Protocols by name and version
# ------------------------------------------------------------------------------------------
def test_each_protocol_is_defined_with_a_version_and_what_was_assumed() -> None:
    aloe, rlpa = protocols.get("aloe"), protocols.get("rlpa")
    assert aloe.scale == (1, 5) and aloe.multiplier == 1 and len(aloe.criteria) == 3
    assert aloe.first_message is None and aloe.n_users is None
    assert rlpa.scale == (0, 1) and rlpa.multiplier == 100 and len(rlpa.criteria) == 5
    assert rlpa.first_message == "Hello" and rlpa.n_users == 74 and rlpa.turns == 10
    assert rlpa.al_range == (0.0, 100.0) and rlpa.assumptions  # what the paper left open
    assert aloe.version != rlpa.version
    table = protocols.definitions_table()
    assert list(table.columns) == ["aloe", "rlpa"] and "assumed" in table.index
    with pytest.raises(protocols.ProtocolError, match="unknown evaluation protocol 'x'"):
        protocols.get("x")


def test_rlpa_takes_74_users_of_the_official_benchmark(tmp_path, reference_dir) -> None:
    files = {"benchmark": "aloe", "aloe_profiles": str(reference_dir / "profile_eval.jsonl"),
             "aloe_personalities": str(reference_dir / "personality_eval.jsonl")}
    aloe = params_from_dict(tiny_dict(tmp_path, evaluation=files))
    rlpa = params_from_dict(tiny_dict(tmp_path, evaluation={**files, "protocol": "rlpa"}))
    everyone = evaluation.benchmark_personas(aloe)
    assert len(everyone) == 100
    assert evaluation.benchmark_personas(rlpa) == everyone[:74]


def test_the_schema_checks_the_new_keys(tmp_path) -> None:
    def load(**evaluation_keys) -> object:
        path = tmp_path / "p.yaml"
        import yaml

        path.write_text(yaml.safe_dump(tiny_dict(tmp_path, evaluation=evaluation_keys)))
        return load_params(path)

    assert load(turns=30, preference_shift={"turn": 6}).evaluation.turns == 30  # long dialogues
    with pytest.raises(ParamsError, match="evaluation.protocol"):
        load(protocol="prefeval")
    with pytest.raises(ParamsError, match="replay_from 'nobody' is not one of"):
        load(user_mode="replay", replay_from="nobody")
    with pytest.raises(ParamsError, match="preference_shift.turn 4 is after the last turn"):
        load(turns=3, preference_shift={"turn": 4})
    with pytest.raises(ParamsError, match="judge_check needs roles.second_judge"):
        load(judge_check={"sample": 10})
    with pytest.raises(ParamsError, match="stage_budget_usd"):
        params_from_dict(tiny_dict(tmp_path, run={"name": "x", "stage_budget_usd": {"sft": 1}}))


def test_paper_plus_shows_every_mode_and_validates() -> None:
    text = (ROOT / "params" / "paper_plus.yaml").read_text()
    for key in ("protocol:", "user_mode:", "replay_from:", "preference_shift:",
                "inference_probe:", "simulator_check:", "judge_check:", "second_judge:",
                "budget_usd:", "stage_budget_usd:"):
        assert key in text, key
    params = load_params(ROOT / "params" / "paper_plus.yaml")
    assert params.evaluation.inference_probe and params.evaluation.simulator_check
    assert params.run.budget_usd is not None


def test_variants_keep_different_conversations_apart(tmp_path) -> None:
    def variant(**keys) -> str:
        return protocols.variant_name(params_from_dict(tiny_dict(tmp_path,
                                                                  evaluation=keys)).evaluation)

    assert variant() == "aloe"
    assert variant(protocol="rlpa") == "rlpa"
    assert variant(user_mode="replay") == "aloe-replay-base"
    assert variant(preference_shift={"turn": 2, "change": "profile"}) == "aloe-shift2-profile"
    assert variant(turns=30) == "aloe"  # a longer run continues the same conversations
    params = params_from_dict(tiny_dict(tmp_path))
    assert params.layout.eval_records("base") == params.layout.eval_dir / "base.jsonl"
    assert params.layout.eval_records("base", "rlpa") == params.layout.eval_dir / "rlpa" / \
        "base.jsonl"


# ------------------------------------------------------------------------------------------
# The stage under each mode, on the stub server
# ------------------------------------------------------------------------------------------
def test_rlpa_protocol_fixed_first_message_binary_judgements_scaled(tmp_path, stub,
                                                                    reference_dir) -> None:
    params, personas = with_benchmark(stub_dict(tmp_path, stub, protocol="rlpa"), reference_dir)
    summary = evaluation.run_stage(params)
    records = read_records(params.layout.eval_records("a", "rlpa"))
    assert not params.layout.eval_records("a").exists()  # never mixed with ALOE's records
    assert len(records) == 4 * 3
    assert {r["user"] for r in records if r["turn"] == 1} == {"Hello"}
    assert {r["score"] for r in records} <= {0, 1} and {r["protocol"] for r in records} == \
        {"rlpa"}
    metrics = json.loads(params.layout.metrics.read_text())
    assert metrics["protocol"]["name"] == "rlpa" and metrics["protocol"]["version"] == "rlpa-1"
    assert metrics["variant"] == "rlpa" and metrics == summary.metrics
    for k, al in enumerate(metrics["models"]["a"]["al"], start=1):
        ones = sum(r["score"] for r in records if r["turn"] == k)
        assert al == pytest.approx(100 * ones / 4)  # AL(k) = 100 x the share of 1s
    assert json.loads(params.layout.variant_metrics("rlpa").read_text()) == metrics


def test_replayed_users_give_every_model_the_same_messages(tmp_path, stub,
                                                           reference_dir) -> None:
    data = stub_dict(tmp_path, stub)
    live, _ = with_benchmark(data, reference_dir)
    evaluation.run_stage(live)
    a_live = read_records(live.layout.eval_records("a"))
    b_live = read_records(live.layout.eval_records("b"))
    key = lambda r: (r["persona_id"], r["turn"])  # noqa: E731
    users_a = {key(r): r["user"] for r in a_live}
    # live: after turn 1 each conversation drifts its own way
    assert any(users_a[key(r)] != r["user"] for r in b_live if r["turn"] > 1)

    data["evaluation"].update(user_mode="replay", replay_from="a")
    replay = params_from_dict(data)
    summary = evaluation.run_stage(replay)
    assert summary.progress["a"].turns_run == 0  # the reference's live run is reused
    b_replay = read_records(replay.layout.eval_records("b", "aloe-replay-a"))
    assert len(b_replay) == 12
    assert all(r["user"] == users_a[key(r)] and r["user_source"] == "replay:a"
               for r in b_replay)
    metrics = summary.metrics
    assert metrics["user_mode"] == "replay" and metrics["replay_from"] == "a"
    assert metrics["paired"]["b - a"]["n_personas"] == 4
    both = evaluation.sibling_metrics(replay)  # what the notebook shows side by side
    assert set(both) == {"aloe", "aloe-replay-a"}
    assert both["aloe"]["user_mode"] == "live"


def test_preference_shift_tells_the_simulator_and_the_judge(tmp_path, stub, reference_dir,
                                                            monkeypatch) -> None:
    data = stub_dict(tmp_path, stub, turns=4, preference_shift={"turn": 3})
    params, personas = with_benchmark(data, reference_dir)
    seen: list[tuple[int, str, str | None]] = []
    original_simulate, original_score = dialogue.simulate_user, dialogue.score_reply

    async def simulate(llm, persona, history, **kwargs):
        seen.append((len(history) // 2 + 1, persona["personality"], kwargs.get("note")))
        return await original_simulate(llm, persona, history, **kwargs)

    judged: list[tuple[int, str]] = []

    async def score(chat, persona, history, reply, **kwargs):
        judged.append((len(history) // 2 + 1, persona["personality"]))
        return await original_score(chat, persona, history, reply, **kwargs)

    monkeypatch.setattr(dialogue, "simulate_user", simulate)
    monkeypatch.setattr(dialogue, "score_reply", score)
    summary = evaluation.run_stage(params)
    own = {p["personality"] for p in personas}
    before = [(personality, note) for turn, personality, note in seen if turn < 3]
    after = [(personality, note) for turn, personality, note in seen if turn >= 3]
    assert before and all(note is None and personality in own for personality, note in before)
    # from turn 3 another benchmark persona's personality, and the simulator is told
    assert after and all(note and personality in note for personality, note in after)
    assert all(p in own for _, p in judged)  # changed to another benchmark personality...
    by_turn = {(t, p) for t, p in judged}
    first = personas[0]
    changed = evaluation.shifted_persona(params.evaluation.preference_shift, params.run.seed,
                                         first, personas)
    assert changed["personality"] != first["personality"]
    assert changed["profile"] == first["profile"]
    assert (3, changed["personality"]) in by_turn  # ...which the judge scores against
    records = read_records(params.layout.eval_records("a", "aloe-shift3-personality"))
    assert [r["shifted"] for r in sorted(records, key=lambda r: r["turn"])
            if r["persona_id"] == first["id"]] == [False, False, True, True]
    recovery = summary.metrics["recovery"]["a"]
    assert recovery["shift_turn"] == 3 and recovery["turns_run"] == 4
    assert summary.metrics["preference_shift"] == {"turn": 3, "change": "personality",
                                                   "text": None}


def test_simulator_prompts_carry_the_shift_note() -> None:
    persona = {"profile": "She is a nurse.", "personality": "She is shy."}
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    for style in ("workbook", "rlpa", "reference"):
        plain = simulator_messages(persona, history, style=style)
        noted = simulator_messages(persona, history, style=style, note="NOTE: now bold")
        assert "NOTE: now bold" not in json.dumps(plain)
        assert noted[0]["content"].endswith("NOTE: now bold") and noted[1:] == plain[1:]


def test_long_dialogues_run_and_resume(tmp_path, stub, reference_dir) -> None:
    params, _ = with_benchmark(stub_dict(tmp_path, stub, turns=24,
                                         models=[{"name": "a", "model": "stub-a",
                                                  "base_url": stub.base_url}]),
                               reference_dir, n=2)
    params.evaluation.turns = 12
    evaluation.run_stage(params)
    params.evaluation.turns = 24  # a longer run continues the same conversations
    summary = evaluation.run_stage(params)
    assert summary.progress["a"].turns_before == 24 and summary.progress["a"].turns_run == 24
    assert summary.metrics["models"]["a"]["turns"] == list(range(1, 25))


def test_inference_probe_is_a_side_branch(tmp_path, stub, reference_dir) -> None:
    plain, _ = with_benchmark(stub_dict(tmp_path / "plain", stub), reference_dir)
    evaluation.run_stage(plain)
    probed, _ = with_benchmark(stub_dict(tmp_path / "probed", stub, inference_probe=True),
                               reference_dir)
    summary = evaluation.run_stage(probed)
    strip = lambda rows: [(r["persona_id"], r["turn"], r["user"], r["reply"], r["score"])  # noqa
                          for r in rows]
    # the probe never continues the conversation: the records are the ones without it
    assert strip(read_records(probed.layout.eval_records("a"))) == \
        strip(read_records(plain.layout.eval_records("a")))
    probes = read_records(probed.layout.probe_records("a"))
    assert sorted((p["persona_id"], p["turn"]) for p in probes) == \
        sorted((r["persona_id"], r["turn"]) for r in read_records(probed.layout.eval_records("a")))
    assert all(p["statement"] and (p["accuracy"] is None or 0 <= p["accuracy"] <= 1)
               for p in probes)
    curve = summary.metrics["inference"]["a"]
    assert curve["turns"] == [1, 2, 3] and len(curve["low"]) == 3
    assert summary.progress["a"].probes_run == 12
    again = evaluation.run_stage(probed)  # resumes: nothing twice
    assert again.progress["a"].probes_run == 0 and again.progress["a"].turns_run == 0


def test_a_probe_that_cannot_be_answered_is_named_not_dropped(tmp_path, reference_dir) -> None:
    """The model under test answers every turn but never the inference probe (the stub answers
    the probe's question 500: a fake backend, because a real one cannot be told to fail one
    kind of request): the stage does not end as if every probe were run; it names the probe,
    the role and the URL, and a rerun with the model back retries only the probes."""
    from aloe.core.errors import IncompleteStageError

    with StubServer(seed=0, fail_roles=("probe",)) as down:
        data = stub_dict(tmp_path, down, inference_probe=True)
        for model in data["evaluation"]["models"]:
            model["max_retries"] = 0
        params, _ = with_benchmark(data, reference_dir, n=2)
        with pytest.raises(IncompleteStageError) as failed:
            evaluation.run_stage(params)
    message = str(failed.value)
    assert message.startswith("12 of 12 side measures (inference probes, simulator checks) "
                              "could not finish")
    assert "first: inference probe of model 'a' persona " in message
    assert "turn 1: model under test: LLMError: role 'policy'" in message
    assert down.base_url in message
    assert "\n" not in message and not params.layout.metrics.exists()
    turns = len(read_records(params.layout.eval_records("a")))
    with StubServer(seed=0) as up:
        for model in params.evaluation.models:
            model.base_url = up.base_url
        for role in ("judge", "user"):
            getattr(params.roles, role).base_url = up.base_url
        again = evaluation.run_stage(params)
    assert again.progress["a"].turns_run == 0 and again.progress["a"].probes_run == turns == 6


def test_simulator_and_judge_measured(tmp_path, stub, reference_dir) -> None:
    data = stub_dict(tmp_path, stub, second_judge=True, simulator_check=True,
                     judge_check={"sample": 10})
    params, _ = with_benchmark(data, reference_dir)
    summary = evaluation.run_stage(params)
    checks = read_records(params.layout.simulator_records("a"))
    assert len(checks) == 12 and all(isinstance(c["contradiction"], bool) for c in checks)
    assert all(c["revealed"] is None or 0 <= c["revealed"] <= 1 for c in checks)
    simulator = summary.metrics["simulator"]["a"]
    assert {"revealed", "contradiction", "lexical", "reveals_at_once",
            "first_message_share", "contradiction_rate"} <= set(simulator)
    assert simulator["revealed"]["turns"] == [1, 2, 3]
    judged = read_records(params.layout.judge_check())
    assert len(judged) == 10 and len({(r["model"], r["persona_id"], r["turn"])
                                      for r in judged}) == 10
    agreement = summary.metrics["judge_agreement"]
    assert agreement["n"] == agreement["sampled"] - agreement["unreadable"]
    assert agreement["second_judge"] == "stub-other-family" and not agreement["same_model"]
    for key in ("kappa", "weighted_kappa", "spearman"):
        assert set(agreement[key]) == {"value", "low", "high"}
    # the wiring (issue 22): main_score is the main judge's recorded score, and the agreement
    # is main against second, which differ here (a judge against itself would agree fully)
    scored = {(r["model"], r["persona_id"], r["turn"]): r["score"]
              for r in evaluation.load_records(params)}
    assert all(r["main_score"] == scored[(r["model"], r["persona_id"], r["turn"])]
               for r in judged)
    pairs = [r for r in judged if r["main_score"] is not None and r["second_score"] is not None]
    assert any(r["main_score"] != r["second_score"] for r in pairs)
    from aloe.analysis import agreement as measures
    from aloe.core import protocols

    expected = measures.agreement([r["main_score"] for r in pairs],
                                  [r["second_score"] for r in pairs],
                                  protocols.get(params.evaluation.protocol).categories,
                                  clusters=[str(r.get("profile_id") or r["persona_id"])
                                            for r in pairs],
                                  n_boot=params.evaluation.bootstrap_samples,
                                  confidence=params.evaluation.confidence, seed=params.run.seed)
    assert agreement["kappa"] == expected["kappa"] and agreement["kappa"]["value"] < 1
    check, seed = params.evaluation.judge_check, params.run.seed
    assert evaluation.judge_sample(check, seed, evaluation.load_records(params)) == \
        evaluation.judge_sample(check, seed, evaluation.load_records(params))  # a fixed draw
    usage = json.loads(params.layout.usage("evaluate").read_text())
    assert usage["roles"]["second_judge"]["requests"] >= 10


@pytest.mark.slow
def test_notebook_05_shows_every_measure_with_intervals(tmp_path, stub, reference_dir) -> None:
    """Notebook 05 (papermill, a real kernel) over a run with every mode on: the protocol, live
    and replayed users in tables of their own, the shift marked and the recovery, inference
    accuracy beside AL, the simulator and the judge measured, spend estimated and actual."""
    import yaml

    from aloe.operations.runner import execute_stage

    data = stub_dict(tmp_path, stub, second_judge=True, turns=4, preference_shift={"turn": 3},
                     inference_probe=True, simulator_check=True, judge_check={"sample": 10})
    live, _ = with_benchmark(data, reference_dir)
    evaluation.run_stage(live)
    data["evaluation"].update(user_mode="replay", replay_from="a")
    params = params_from_dict(data)
    evaluation.run_stage(params)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    output = tmp_path / "05_evaluate.ipynb"
    execute_stage(ROOT / "notebooks" / "05_evaluate.ipynb", params, str(params_file), output,
                  progress=False)
    text = output.read_text()
    assert text.count("image/png") == 6  # AL, recovery, inference, simulator, scores, missing
    for expected in ("protocol **aloe** (aloe-1)", "**aloe-shift3-personality**: protocol",
                     "**aloe-shift3-personality-replay-a**: protocol", "turns to recover CI",
                     "inference accuracy at turn", "revealed (judge), mean CI",
                     "weighted kappa CI", "estimated (USD)", "Beyond the paper's evaluation"):
        assert expected in text, expected
    assert "protocol **rlpa**" not in text  # one protocol only, never two in one table


# ------------------------------------------------------------------------------------------
# End to end on the real embedded model (the tiny profile): the machinery, not the method
# ------------------------------------------------------------------------------------------
def embedded_dict(tmp_path: Path, **evaluation_keys) -> dict:
    """The tiny profile shrunk: 2 personas, 3 turns, short messages; the base model in process
    and the same embedded model behind the local server as a second model under test. The
    second judge is the embedded model again, sampled at 0.7: with one model on this machine
    the agreement checks only self-consistency (the report says `same model`)."""
    keys = {"turns": 3, "max_new_tokens": 24, "batch_size": 8, "bootstrap_samples": 100,
            "models": [{"name": "base"}, {"name": "served", "base_url": "local"}],
            **evaluation_keys}
    data = tiny_dict(tmp_path, evaluation=keys)
    data["roles"]["user"]["max_tokens"] = 24
    data["roles"]["judge"]["max_tokens"] = 8
    for role in data["roles"].values():
        role.update(price_input_per_1m=0.5, price_output_per_1m=1.5)  # so that spend counts
    data["roles"]["second_judge"] = {**data["roles"]["judge"], "temperature": 0.7}
    data["run"]["budget_usd"] = 5.0
    return data


@pytest.mark.slow
def test_every_mode_on_the_embedded_model(tmp_path, reference_dir, local_server) -> None:
    import torch

    torch.set_num_threads(1)
    data = embedded_dict(tmp_path, preference_shift={"turn": 2}, inference_probe=True,
                         simulator_check=True, judge_check={"sample": 6})
    live, _ = with_benchmark(data, reference_dir, n=2)
    summary = evaluation.run_stage(live)
    m = summary.metrics
    assert m["protocol"]["name"] == "aloe" and m["variant"] == "aloe-shift2-personality"
    for name in ("base", "served"):
        assert m["models"][name]["turns"] == [1, 2, 3]
        assert m["recovery"][name]["shift_turn"] == 2
        assert m["inference"][name]["turns"] == [1, 2, 3]
        assert m["simulator"][name]["lexical"]["turns"] == [1, 2, 3]
    assert m["judge_agreement"]["same_model"] and m["judge_agreement"]["sampled"] == 6
    spend = sum(e["totals"]["cost_usd"] for e in __import__("aloe.llm", fromlist=["x"])
                .load_usage_history(live.layout))
    assert 0 < spend <= 5.0

    data["evaluation"].update(user_mode="replay", replay_from="base")
    replay = params_from_dict(data)
    again = evaluation.run_stage(replay)
    assert again.progress["base"].turns_run == 0 and again.progress["served"].turns_run == 6
    users = {(r["persona_id"], r["turn"]): r["user"]
             for r in read_records(replay.layout.eval_records("base", "aloe-shift2-personality"))}
    served = read_records(replay.layout.eval_records("served",
                                                     "aloe-shift2-personality-replay-base"))
    assert len(served) == 6 and all(users[(r["persona_id"], r["turn"])] == r["user"]
                                    for r in served)
    assert set(evaluation.sibling_metrics(replay)) == {"aloe-shift2-personality",
                                                       "aloe-shift2-personality-replay-base"}


@pytest.mark.slow
def test_rlpa_protocol_on_the_embedded_model(tmp_path, reference_dir, local_server) -> None:
    data = embedded_dict(tmp_path, protocol="rlpa",
                         models=[{"name": "served", "base_url": "local"}])
    data["roles"]["judge"]["max_tokens"] = 24  # a short reason, then the verdict
    params, _ = with_benchmark(data, reference_dir, n=2)
    summary = evaluation.run_stage(params)
    records = read_records(params.layout.eval_records("served", "rlpa"))
    assert len(records) == 6 and {r["user"] for r in records if r["turn"] == 1} == {"Hello"}
    assert {r["score"] for r in records} <= {0, 1, None}
    al = summary.metrics["models"]["served"]["al"]
    assert all(v is None or 0 <= v <= 100 for v in al)
    assert summary.metrics["protocol"]["version"] == "rlpa-1"


def test_a_crossed_benchmark_is_bootstrapped_two_way_from_the_personas_design(tmp_path) -> None:
    """Evaluation records name a persona's profile, not its personality: the metrics take the
    design from the benchmark's personas (here 3 profiles x the same 2 personalities)."""
    params = params_from_dict(tiny_dict(tmp_path, evaluation={"turns": 2,
                                                              "bootstrap_samples": 50}))
    personas = [{"id": f"p{p}-q{q}", "profile_id": f"p{p}", "personality_id": f"q{q}",
                 "profile": f"Profile {p}.", "personality": f"Personality {q}."}
                for p in range(3) for q in range(2)]
    records = [{"model": spec.name, "persona_id": persona["id"],
                "profile_id": persona["profile_id"], "turn": turn, "score": 1 + (turn + i) % 5,
                "reply": "Sure.", "user": "Hi"}
               for spec in params.evaluation.models for i, persona in enumerate(personas)
               for turn in (1, 2)]
    summary = evaluation.compute_metrics(params, records, personas)
    assert summary["bootstrap_unit"] == "two-way"
    model = next(iter(summary["models"].values()))
    assert model["unit_sizes"] == {"profile": 3, "personality": 2}
    without_design = [{k: v for k, v in p.items() if k != "personality_id"} for p in personas]
    assert evaluation.compute_metrics(params, records, without_design)["bootstrap_unit"] == \
        "profile"


def test_a_model_under_test_with_its_own_system_prompt_is_scored_on_its_response(
        tmp_path) -> None:
    """RLPA's policy answers <profile>...</profile><response>...</response>: with its system
    prompt and response pattern, the user and the judge see the response alone, and the whole
    answer is kept. A scripted endpoint (a real HTTP server on loopback) stands in for it."""
    from aloe.stages import policy
    from tests.support.scripted_server import ScriptedServer, completion

    tagged = "<profile>\n- likes tea\n</profile>\n\n<response>\nTea it is, then!\n</response>\n"
    with ScriptedServer([completion(tagged), completion("Plain words, no tags.")]) as server:
        params = params_from_dict(tiny_dict(tmp_path, evaluation={"models": [{
            "name": "rlpa-policy", "model": "scripted", "base_url": server.base_url,
            "system_prompt": "Infer the user, then answer.",
            "response_pattern": r"<response>\s*(.*?)\s*(?:</response>|$)"}]}))
        responder = policy.open_responder(params, params.evaluation.models[0])
        try:
            first, second = (responder.reply_many([[{"role": "user", "content": text}]])[0]
                             for text in ("Hello", "Hi again"))
        finally:
            responder.close()
    assert (first.text, first.raw, first.extracted) == ("Tea it is, then!", tagged.strip(), True)
    assert (second.text, second.extracted) == ("Plain words, no tags.", False)
    assert [m["role"] for m in server.received[0]["messages"]] == ["system", "user"]
    assert server.received[0]["messages"][0]["content"] == "Infer the user, then answer."
    record = dialogue.turn_record("rlpa-policy", {"id": "p1"}, 1, "Hello", first,
                                  Judgement(1, "Verdict: 1", 1), "rlpa")
    assert record["reply"] == "Tea it is, then!" and record["raw_reply"] == tagged.strip()
    assert schemas.record_check(protocols.RLPA, "rlpa-policy")(record) is None
    with pytest.raises(ParamsError, match="response_pattern.*exactly one group"):
        params_from_dict(tiny_dict(tmp_path, evaluation={"models": [{
            "name": "x", "response_pattern": "<response>.*"}]}))


def test_an_rlpa_run_says_how_it_differs_from_rlpa_s_published_table() -> None:
    from aloe.analysis import findings

    metrics = {"protocol": protocols.RLPA.to_json(), "models": {"base": {}}}
    params = {"roles": {"judge": {"model": "gpt-4o-mini"}},
              "evaluation": {"benchmark": "run", "protocol": "rlpa"}}
    (caveat,) = findings.published_comparison(params, metrics)
    assert "its judge is gpt-4o-mini, not gpt-4o-2024-11-20" in caveat.text
    assert "the run's own benchmark personas" in caveat.text and caveat.caveat
    assert caveat in findings.run_findings(metrics, params=params)  # the report shows it
    published = {"roles": {"judge": {"model": "gpt-4o-2024-11-20"}},
                 "evaluation": {"benchmark": "aloe"}}
    (only_models,) = findings.published_comparison(published, metrics)
    assert "judge" not in only_models.text and "own benchmark" not in only_models.text
    aloe_metrics = {"protocol": protocols.ALOE.to_json(), "models": {"base": {}}}
    assert findings.published_comparison(params, aloe_metrics) == []


@pytest.mark.slow
def test_an_adapter_can_be_evaluated_on_the_4bit_base_it_was_trained_on(tmp_path) -> None:
    """`evaluation.adapter_base: as_trained` loads the real embedded model on a bitsandbytes
    NF4 base (CPU here), as training loaded it; `unquantised` (the default) does not."""
    from aloe.stages import policy
    from tests.conftest import embedded_model

    params = params_from_dict(tiny_dict(tmp_path, evaluation={"adapter_base": "as_trained"}))
    base, dpo = (next(m for m in params.evaluation.models if m.adapter == a) for a in (None,
                                                                                       "dpo"))
    assert policy.evaluated_in_4bit(params, base) and policy.evaluated_in_4bit(params, dpo)
    params.dpo.load_in_4bit = False  # each model as its own stage loaded the base
    assert policy.evaluated_in_4bit(params, base) and not policy.evaluated_in_4bit(params, dpo)
    default = params_from_dict(tiny_dict(tmp_path))
    assert default.evaluation.adapter_base == "unquantised"
    assert not policy.evaluated_in_4bit(default, base)
    responder = policy.InProcessResponder(str(embedded_model()), None, max_new_tokens=4,
                                          temperature=0.0, load_in_4bit=True)
    try:
        linear = responder.model.model.layers[0].self_attn.q_proj
        assert type(linear).__name__ == "Linear4bit"
        (reply,) = responder.reply_many([[{"role": "user", "content": "Hello"}]])
        assert isinstance(reply, policy.Reply) and reply.text
    finally:
        responder.close()
