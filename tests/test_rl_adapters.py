"""The environment for outside RL engines (`aloe.stages.rl_adapters`): verl's interaction contract.

verl needs GPUs, so it cannot run here: `_rollout` stands in for it and calls the interaction
exactly as verl's multi-turn rollout does (`verl/experimental/agent_loop/tool_agent_loop.py`,
`ToolAgentLoop.run` and `_handle_interacting_state`; the class is built as the registry
`verl/interactions/utils/interaction_registry.py`, `initialize_interactions_from_config`,
builds it): `start_interaction(request_id, **interaction_kwargs)`, then after each policy turn
`generate_response(request_id, messages, **interaction_kwargs)`, the user's message appended
to the messages, until it says to stop; then `calculate_score` and `finalize_interaction`.
The policy is a fixed reply (no model can train here). Everything else is real: the class is
built from a real parameter file, and its `user` and `judge` roles talk to the stub server
(tests/support/stub_server.py), fast and always the same."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aloe.core.errors import BadInputError, ParamsError
from aloe.llm import run_sync
from aloe.stages.rl_adapters.dataset import verl_rows, write_rows, write_verl_dataset
from aloe.stages.rl_adapters.verl import AloeInteraction, compute_score
from tests.conftest import stub_roles, tiny_dict
from tests.support.stub_server import StubServer

PERSONAS = [{"id": f"p{i}", "profile": f"He is a {40 + i}-year-old baker in Cork who runs "
             "marathons.", "personality": "He is patient, wry and private."} for i in range(3)]
PEAK: list[int] = []  # how many instances were in flight as each rollout began
REPLY = "Glad to help. What matters most to you here?"



def _params(tmp_path: Path, stub: StubServer) -> Path:
    """A parameter file of the tiny profile with every role on the stub server."""
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_dict(tmp_path, roles=stub_roles(stub.base_url))))
    return params


def _interaction(tmp_path: Path, stub: StubServer, **config: Any) -> AloeInteraction:
    """Built as verl's registry builds it: the YAML's config with the interaction's name."""
    return AloeInteraction(config={"params": str(_params(tmp_path, stub)), **config,
                                   "name": "aloe"})


async def _rollout(interaction: AloeInteraction, request_id: str,
                   interaction_kwargs: dict[str, Any], prompt: list[dict[str, Any]],
                   ) -> tuple[list[dict[str, Any]], list[float], list[dict], float]:
    """One rollout as verl's agent loop plays it (see the module's text)."""
    messages = list(prompt)
    await interaction.start_interaction(request_id, **interaction_kwargs)
    await asyncio.sleep(0)  # let the other rollouts start, as verl's concurrent loops do
    PEAK.append(len(interaction.in_flight()))
    turn_scores, metadata = [], []
    while True:
        messages.append({"role": "assistant", "content": REPLY})
        done, user, score, info = await interaction.generate_response(
            request_id, messages, **interaction_kwargs)
        turn_scores.append(score)
        metadata.append(info)
        messages.append({"role": "user", "content": user})
        if done:
            break
    final = await interaction.calculate_score(request_id)
    await interaction.finalize_interaction(request_id)
    return messages, turn_scores, metadata, final


def _rows(interaction: AloeInteraction, seeds: tuple[int, ...] = (0,)) -> list[dict[str, Any]]:
    return run_sync(verl_rows(interaction.env, PERSONAS, seeds=seeds))


async def _many(interaction: AloeInteraction, rows: list[dict[str, Any]]) -> list[tuple]:
    return list(await asyncio.gather(*(
        _rollout(interaction, f"req-{i}", r["extra_info"]["interaction_kwargs"], r["prompt"])
        for i, r in enumerate(rows))))


def test_rollouts_in_flight_together_end_after_the_protocols_turns(
        tmp_path: Path, stub: StubServer) -> None:
    interaction = _interaction(tmp_path, stub, turns=3)
    rows = _rows(interaction, seeds=(0, 1))
    PEAK.clear()
    results = run_sync(_many(interaction, rows))
    assert max(PEAK) == 6  # all six dialogues open at once
    assert len(results) == 6 and interaction.in_flight() == []  # all freed at the end
    for (messages, scores, metadata, final), row in zip(results, rows):
        assert messages[0] == row["prompt"][0]
        assert [m["role"] for m in messages] == ["user", "assistant"] * 3 + ["user"]
        assert messages[-1]["content"] == ""  # the last turn: no user message follows
        assert len(scores) == 3 and all(1 <= s <= 5 for s in scores)  # ALOE's 1-5
        assert [m["turn"] for m in metadata] == [1, 2, 3]
        assert all(set(m["rewards"]) == {"judge"} for m in metadata)
        assert final == pytest.approx(sum(scores) / 3)
        assert compute_score("aloe/aloe", "", "", {"turn_scores": scores}) == final
    firsts = [r["prompt"][0]["content"] for r in rows]
    assert len(set(firsts)) == 6  # each persona and seed is its own user


def test_rlpa_scores_zero_or_one_and_each_reward_comes_apart(
        tmp_path: Path, stub: StubServer) -> None:
    interaction = _interaction(tmp_path, stub, protocol="rlpa", turns=2, inference=True)
    rows = _rows(interaction)
    assert all(r["prompt"][0]["content"] == "Hello" for r in rows)
    kwargs = {**rows[0]["extra_info"]["interaction_kwargs"],
              "inferred": "You are a baker who runs."}
    _, scores, metadata, _ = run_sync(_rollout(interaction, "r", kwargs, rows[0]["prompt"]))
    assert set(scores) <= {0.0, 1.0}
    assert all(set(m["rewards"]) == {"judge", "inference"} for m in metadata)
    assert all(m["protocol"] == "rlpa" and m["scale"] == [0, 1] for m in metadata)


def test_unknown_or_finished_instances_are_refused_in_one_line(
        tmp_path: Path, stub: StubServer) -> None:
    interaction = _interaction(tmp_path, stub, turns=1)
    row = _rows(interaction)[0]
    kwargs = row["extra_info"]["interaction_kwargs"]
    run_sync(_rollout(interaction, "done", kwargs, row["prompt"]))
    for call in (interaction.generate_response("done", [{"role": "assistant", "content": "x"}]),
                 interaction.calculate_score("nope"), interaction.finalize_interaction("done")):
        with pytest.raises(BadInputError, match=r"unknown instance '\w+'; start_interaction") \
                as caught:
            run_sync(call)
        assert "\n" not in str(caught.value)
    run_sync(interaction.start_interaction("twice", **{**kwargs, "first_message": "Hi!"}))
    assert interaction.dialogue("twice").history == [{"role": "user", "content": "Hi!"}]
    with pytest.raises(BadInputError, match="already in flight"):
        run_sync(interaction.start_interaction("twice", **{**kwargs, "first_message": "Hi!"}))
    assert interaction.dialogue("twice").history == [{"role": "user", "content": "Hi!"}]
    with pytest.raises(ParamsError, match="no 'params' in its config"):
        AloeInteraction(config={"name": "aloe"})


def test_rows_are_written_as_parquet_verl_can_read_and_as_json_lines(
        tmp_path: Path, stub: StubServer) -> None:
    interaction = _interaction(tmp_path, stub, turns=1)
    rows = _rows(interaction)
    frame = pd.read_parquet(write_rows(rows, tmp_path / "train.parquet"))
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model",
                                   "extra_info"]
    kwargs = frame.iloc[1]["extra_info"]["interaction_kwargs"]
    assert json.loads(kwargs["persona"]) == PERSONAS[1] and kwargs["name"] == "aloe"
    lines = (write_rows(rows, tmp_path / "train.jsonl")).read_text().splitlines()
    assert [json.loads(x) for x in lines] == rows


def test_a_runs_training_personas_become_verl_rows(tmp_path: Path, stub: StubServer) -> None:
    """From the parameter file: its run folder's personas.jsonl, every persona under each seed;
    an interaction started from a row plays from the row's first message."""
    from aloe.core.config import load_params

    params = _params(tmp_path, stub)
    personas = load_params(params).layout.personas
    personas.parent.mkdir(parents=True)
    personas.write_text("".join(json.dumps(p) + "\n" for p in PERSONAS))
    out = write_verl_dataset(params, tmp_path / "verl" / "train.parquet", seeds=(0, 1))
    frame = pd.read_parquet(out)
    assert len(frame) == 6 and set(frame["data_source"]) == {"aloe/aloe"}
    kwargs = [row["interaction_kwargs"] for row in frame["extra_info"]]
    assert [(json.loads(k["persona"])["id"], k["seed"]) for k in kwargs] == \
        [(p["id"], s) for p in PERSONAS for s in (0, 1)]
    assert all(k["first_message"] == prompt[0]["content"]
               for k, prompt in zip(kwargs, frame["prompt"]))


def test_the_openrlhf_reward_server_answers_a_real_request_in_its_contract(
        tmp_path: Path, stub: StubServer) -> None:
    """A real HTTP POST in the body OpenRLHF's `request_api_wrapper` sends (query, prompts,
    labels), read as it reads it (`rewards`, one per sample); the policy's text is made up."""
    import threading
    import urllib.error
    import urllib.request

    from aloe.core import protocols
    from aloe.stages.rl_adapters.openrlhf import JudgeRewards, label_line, reply_in, serve

    llm = _interaction(tmp_path, stub).llm
    server = serve(JudgeRewards(llm, protocols.get("aloe")), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/get_reward"
    history = [{"role": "user", "content": "I just finished a long run and my legs hurt."}]
    prompt = "<|im_start|>user\nI just finished a long run and my legs hurt.<|im_end|>\n" \
             "<|im_start|>assistant\n"
    body = {"query": [prompt + REPLY + "<|im_end|>", prompt + "Stretch.<|im_end|>"],
            "prompts": [prompt, prompt], "labels": [label_line(p, history) for p in PERSONAS[:2]]}

    def post(data: dict) -> dict:
        request = urllib.request.Request(url, json.dumps(data).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    try:
        answer = post(body)
        assert len(answer["rewards"]) == 2 and all(1 <= r <= 5 for r in answer["rewards"])
        assert answer["scores"] == answer["rewards"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            post({**body, "labels": ["not json"] * 2})
        assert refused.value.code == 400
        assert "label_line" in json.loads(refused.value.read())["error"]
    finally:
        server.shutdown()
    assert reply_in(prompt + "Stretch.<|im_end|>", prompt) == "Stretch."
