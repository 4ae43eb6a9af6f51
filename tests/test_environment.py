"""The simulated user as an environment (`aloe.stages.environment`): reset and step, the rewards of
each protocol, determinism under a seed, many dialogues at once, and a rerun served from the
cache. The roles talk to the stub server (tests/support/stub_server.py): what is checked is
the environment's protocol and which requests reach a backend, not what a model writes, and
the stub answers in milliseconds and always the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from aloe.core import protocols
from aloe.core.config import RoleConfig
from aloe.core.layout import RunLayout
from aloe.llm import LLM, run_sync
from aloe.stages.environment import DialogueEnded, Rewards, UserEnvironment
from tests.support.stub_server import StubServer

PERSONAS = [{"id": f"p{i}", "profile": f"She is a {30 + i}-year-old nurse in Leeds who grows "
             "tomatoes on her balcony.", "personality": "She is blunt, curious and impatient."}
            for i in range(4)]
REPLY = "Happy to help. What would you like to know first?"



def _llm(stub: StubServer, folder: Path) -> LLM:
    role = RoleConfig(model="stub", base_url=stub.base_url, temperature=0.7, max_tokens=64)
    return LLM({"user": role, "judge": role.model_copy(update={"temperature": 0.0})},
               stage="environment", layout=RunLayout(folder / "run", folder / "cache.sqlite"))


def _play(env: UserEnvironment, seeds: list[int], inferred: str | None = None) -> list:
    """Every persona's dialogue with `seeds`, the same reply each turn, to the end."""
    async def play() -> list:
        dialogues = await env.reset_many(PERSONAS, seeds)
        steps = []
        while not all(d.done for d in dialogues):
            steps.append(await env.step_many(dialogues, [REPLY] * len(dialogues),
                                             [inferred] * len(dialogues)))
        return [d.history for d in dialogues], steps
    return run_sync(play())


def test_a_dialogue_runs_its_turns_and_each_reply_is_scored_on_the_protocols_scale(
        tmp_path: Path, stub: StubServer) -> None:
    env = UserEnvironment(_llm(stub, tmp_path), protocols.get("aloe"), turns=3)
    histories, steps = _play(env, [0, 0, 0, 0])
    assert len(steps) == 3
    assert [s.done for s in steps[-1]] == [True] * 4 and all(s.user is None for s in steps[-1])
    assert all(not s.done and s.user for s in steps[0] + steps[1])
    history = histories[0]  # user, reply, user, reply, user, reply
    assert [m["role"] for m in history] == ["user", "assistant"] * 3
    assert history[2]["content"] == steps[0][0].user
    scores = [s.rewards["judge"] for turn in steps for s in turn]
    assert set(scores) - {None} and all(1 <= x <= 5 for x in scores if x is not None)


def test_a_finished_dialogue_refuses_another_step(tmp_path: Path, stub: StubServer) -> None:
    env = UserEnvironment(_llm(stub, tmp_path), protocols.get("aloe"), turns=1)
    dialogue = run_sync(env.reset(PERSONAS[0]))
    assert run_sync(env.step(dialogue, REPLY)).done
    with pytest.raises(DialogueEnded, match="is over after 1 turns: reset it"):
        run_sync(env.step(dialogue, REPLY))


def test_rlpa_opens_with_its_own_first_message_and_scores_zero_or_one(
        tmp_path: Path, stub: StubServer) -> None:
    env = UserEnvironment(_llm(stub, tmp_path), protocols.get("rlpa"), turns=2)
    histories, steps = _play(env, [0, 1, 2, 3])
    assert all(h[0]["content"] == "Hello" for h in histories)
    assert {s.rewards["judge"] for turn in steps for s in turn} <= {0.0, 1.0, None}


def test_a_seed_is_one_user_and_another_seed_another(tmp_path: Path, stub: StubServer) -> None:
    env = UserEnvironment(_llm(stub, tmp_path / "a"), protocols.get("aloe"), turns=2)
    again = UserEnvironment(_llm(stub, tmp_path / "b"), protocols.get("aloe"), turns=2)
    first, first_steps = _play(env, [0, 0, 0, 0])
    same, same_steps = _play(again, [0, 0, 0, 0])
    other, _ = _play(again, [1, 1, 1, 1])
    assert first == same  # another cache, the same users
    assert [[s.rewards for s in t] for t in first_steps] == \
        [[s.rewards for s in t] for t in same_steps]
    assert all(a[0] != b[0] for a, b in zip(first, other))  # seed 1: other first messages


def test_the_inference_reward_is_asked_only_when_switched_on_and_stated(
        tmp_path: Path, stub: StubServer) -> None:
    plain = UserEnvironment(_llm(stub, tmp_path / "a"), protocols.get("aloe"), turns=1)
    _, steps = _play(plain, [0] * 4, inferred="You are a nurse who gardens.")
    assert all(set(s.rewards) == {"judge"} for s in steps[0])
    both = UserEnvironment(_llm(stub, tmp_path / "b"), protocols.get("aloe"), turns=1,
                           rewards=Rewards(judge=True, inference=True))
    _, steps = _play(both, [0] * 4, inferred="You are a nurse who gardens.")
    values = [s.rewards["inference"] for s in steps[0]]
    assert all(v is None or 0.0 <= v <= 1.0 for v in values) and set(values) - {None}
    _, unstated = _play(both, [5] * 4)
    assert all("inference" not in s.rewards for s in unstated[0])


def test_a_rerun_of_the_same_dialogues_is_served_from_the_cache(
        tmp_path: Path, stub: StubServer) -> None:
    """A killed training run that replays its dialogues sends nothing for what was asked."""
    first = _llm(stub, tmp_path)
    histories, _ = _play(UserEnvironment(first, protocols.get("aloe"), turns=2), [0] * 4)
    sent = sum(u.requests for u in first.ledger.roles.values())
    second = _llm(stub, tmp_path)
    replayed, _ = _play(UserEnvironment(second, protocols.get("aloe"), turns=2), [0] * 4)
    assert sent > 0 and replayed == histories
    assert sum(u.requests for u in second.ledger.roles.values()) == 0
    assert sum(u.cache_hits for u in second.ledger.roles.values()) == sent


def test_the_future_reward_plays_k_turns_ahead_without_changing_the_dialogue(
        tmp_path: Path, stub: StubServer) -> None:
    """CollabLLM's multi-turn-aware reward: after each reply the environment samples K future
    turns (the simulated user, then the policy) and scores the future replies; the dialogue is
    the same as without it, and the last turn, with no future, has none."""
    asked: list[int] = []

    async def policy(history: list) -> str:
        asked.append(len(history))
        return REPLY

    plain = UserEnvironment(_llm(stub, tmp_path / "a"), protocols.get("aloe"), turns=3)
    ahead = UserEnvironment(_llm(stub, tmp_path / "b"), protocols.get("aloe"), turns=3,
                            rewards=Rewards(future_turns=2, future_samples=2), policy=policy)
    histories, _ = _play(plain, [0] * 4)
    same, steps = _play(ahead, [0] * 4)
    assert same == histories
    futures = [[s.rewards.get("future") for s in turn] for turn in steps]
    assert all(v is not None and 1 <= v <= 5 for v in futures[0] + futures[1])
    assert futures[2] == [None] * 4 and all("future" not in s.rewards for s in steps[2])
    # turn 1: 2 futures x 2 turns; turn 2: 2 futures x 1 turn (one turn is left), per dialogue
    assert len(asked) == 4 * (2 * 2 + 2 * 1)
    with pytest.raises(ValueError, match="pass policy="):
        UserEnvironment(_llm(stub, tmp_path / "c"), protocols.get("aloe"), turns=3,
                        rewards=Rewards(future_turns=1))
