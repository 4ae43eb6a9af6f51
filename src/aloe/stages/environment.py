"""The simulated user as an environment to learn from interaction: `reset` a dialogue with a
persona, `step` it with the policy's reply, and get the user's next message and the rewards.

The same parts as stage 5, so that what a policy is trained against is what it is measured on:
the simulated user (`simulator.simulate_user`, in the protocol's style, or the protocol's fixed
first message), the protocol's judge (`judges.score_reply`: ALOE's 1-5, RLPA's 0/1) and the
inference judge (`judges.score_inference`, 0-1). Every request goes through the LLM layer, so a
dialogue is cached (a rerun with the same replies sends nothing), budgeted and retried like
any other; `seed` is the request's sample index, so two seeds of one persona are two users,
and one seed is always the same user.

Rewards are switches (`Rewards`) and come back apart, each as its own number (None where its
judge's answer could not be read), so a trainer may weigh them as it likes:
- `judge`: the protocol's score of the reply, as the benchmark scores it;
- `inference`: how right what the policy says it inferred of the user is (RLPA's profile
  reward), when the policy states it (`step(..., inferred=...)`);
- `future`: a multi-turn-aware reward in the manner of CollabLLM's: after the reply, K future
  turns are sampled (the simulated user, then the policy itself through `policy`), and the
  reward is the judge's mean score of those future replies, averaged over `future_samples`
  futures. CollabLLM scores the sampled future with task, efficiency and interactivity
  metrics; here the protocol's own judge scores it, so the reward speaks the benchmark's
  language. Futures draw their own samples: the dialogue itself is the same with or without.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aloe.core.chat import Message
from aloe.core.protocols import Protocol
from aloe.roles.judges import score_inference, score_reply
from aloe.roles.simulator import simulate_user

# Future turns draw their simulated users from these sample indices on: never a dialogue's own.
FUTURE_SAMPLES = 1 << 20

Policy = Callable[[list[Message]], Awaitable[str]]  # the chat so far -> the policy's reply


@dataclass(frozen=True)
class Rewards:
    """Which rewards a step computes (each costs judge requests; `future` also the user's and
    the policy's for each future turn)."""

    judge: bool = True
    inference: bool = False
    future_turns: int = 0  # K: the future turns each sampled future plays (0: no future reward)
    future_samples: int = 1  # how many futures the future reward averages


@dataclass
class Dialogue:
    """One simulated user's conversation so far: `history` is the chat from the policy's side,
    ending with the user's message the policy answers next."""

    persona: dict[str, Any]
    seed: int
    history: list[Message] = field(default_factory=list)
    turn: int = 1  # the turn the policy answers next (1-based)
    done: bool = False


@dataclass(frozen=True)
class Step:
    """What one reply brought: the user's next message (None when the dialogue is over),
    whether it is over, and each reward apart (None: its judge's answer was unreadable)."""

    user: str | None
    done: bool
    rewards: dict[str, float | None]


class DialogueEnded(RuntimeError):
    """`step` on a dialogue that is over: a bug in the caller, not a failed request."""


class UserEnvironment:
    """Simulated users of `protocol` over `turns` turns, on the roles `user` and `judge` of
    `llm` (an `aloe.llm.LLM`)."""

    def __init__(self, llm: Any, protocol: Protocol, *, turns: int, prompt_style: str = "workbook",
                 rewards: Rewards = Rewards(), judge_temperature: float | None = None,
                 policy: Policy | None = None) -> None:
        if turns < 1:
            raise ValueError(f"turns must be at least 1 (got {turns})")
        if rewards.future_turns and policy is None:
            raise ValueError("the future reward plays the policy's future replies: pass policy=")
        self.llm, self.protocol, self.turns, self.rewards = llm, protocol, turns, rewards
        self.policy = policy
        self.style = protocol.simulator_for(prompt_style)
        self.judge_temperature = judge_temperature

    async def reset(self, persona: dict[str, Any], seed: int = 0) -> Dialogue:
        """A new dialogue: the user's first message (the protocol's own, or the simulated
        user's) is the last message of its history."""
        dialogue = Dialogue(persona=persona, seed=seed)
        first = self.protocol.first_message
        if first is None:
            first = await simulate_user(self.llm, persona, [], sample=seed, style=self.style,
                                        length_request=False)
        dialogue.history.append({"role": "user", "content": first})
        return dialogue

    async def step(self, dialogue: Dialogue, reply: str, inferred: str | None = None) -> Step:
        """The policy's `reply` to the user's last message: judged, added to the history, and
        answered by the user unless that was the last turn."""
        self._check_open(dialogue)
        rewards = await self.score(dialogue, reply, inferred)
        user = await self.advance(dialogue, reply)
        return Step(user, dialogue.done, rewards)

    async def score(self, dialogue: Dialogue, reply: str,
                    inferred: str | None = None) -> dict[str, float | None]:
        """The rewards `reply` would get as the answer to the user's last message, without
        adding it to the dialogue: several candidate replies to one turn are scored alike
        (GRPO's group, `aloe.stages.grpo`). `step` is `score`, then `advance`."""
        self._check_open(dialogue)
        rewards = await self._rewards(dialogue, reply, inferred)
        ahead = min(self.rewards.future_turns, self.turns - dialogue.turn)
        if ahead:
            history = [*dialogue.history, {"role": "assistant", "content": reply}]
            rewards["future"] = await self._future(dialogue, history, ahead)
        return rewards

    async def advance(self, dialogue: Dialogue, reply: str) -> str | None:
        """Add `reply` to the dialogue and get the user's answer (None after the last turn),
        scoring nothing: the turns before the one a trainer learns from."""
        self._check_open(dialogue)
        dialogue.history.append({"role": "assistant", "content": reply})
        dialogue.done = dialogue.turn >= self.turns
        if dialogue.done:
            return None
        user = await simulate_user(self.llm, dialogue.persona, dialogue.history,
                                   sample=dialogue.seed, style=self.style, length_request=False)
        dialogue.history.append({"role": "user", "content": user})
        dialogue.turn += 1
        return user

    def _check_open(self, dialogue: Dialogue) -> None:
        if dialogue.done:
            raise DialogueEnded(f"dialogue of persona {dialogue.persona.get('id')!r} (seed "
                                f"{dialogue.seed}) is over after {self.turns} turns: reset it")

    async def _rewards(self, dialogue: Dialogue, reply: str,
                       inferred: str | None) -> dict[str, float | None]:
        work: dict[str, Any] = {}
        if self.rewards.judge:
            work["judge"] = score_reply(self.llm.chat, dialogue.persona, list(dialogue.history),
                                        reply, protocol=self.protocol,
                                        temperature=self.judge_temperature)
        if self.rewards.inference and inferred is not None:
            work["inference"] = score_inference(self.llm.chat, dialogue.persona, inferred,
                                                temperature=self.judge_temperature)
        done = dict(zip(work, await asyncio.gather(*work.values())))
        found: dict[str, float | None] = {}
        if "judge" in done:
            score = done["judge"].score
            found["judge"] = None if score is None else float(score)
        if "inference" in done:
            found["inference"] = done["inference"].value
        return found

    async def _future(self, dialogue: Dialogue, history: list[Message],
                      ahead: int) -> float | None:
        """The judge's mean score of the policy's replies over `ahead` sampled future turns
        after `history` (the dialogue with the scored reply), averaged over the futures sampled
        (None when no future reply could be scored)."""
        n = self.rewards.future_samples
        futures = [self._one_future(dialogue, history, ahead,
                                    FUTURE_SAMPLES + dialogue.seed * n + j) for j in range(n)]
        scores = [x for scored in await asyncio.gather(*futures) for x in scored
                  if x is not None]
        return sum(scores) / len(scores) if scores else None

    async def _one_future(self, dialogue: Dialogue, history: list[Message], ahead: int,
                          sample: int) -> list[float | None]:
        assert self.policy is not None
        history = list(history)
        scores: list[float | None] = []
        for _ in range(ahead):
            user = await simulate_user(self.llm, dialogue.persona, history, sample=sample,
                                       style=self.style, length_request=False)
            history.append({"role": "user", "content": user})
            reply = await self.policy(list(history))
            judged = await score_reply(self.llm.chat, dialogue.persona, list(history), reply,
                                       protocol=self.protocol,
                                       temperature=self.judge_temperature)
            scores.append(None if judged.score is None else float(judged.score))
            history.append({"role": "assistant", "content": reply})
        return scores

    async def reset_many(self, personas: Sequence[dict[str, Any]],
                         seeds: Sequence[int] | None = None) -> list[Dialogue]:
        """Many dialogues at once (the LLM layer bounds how many requests are in flight)."""
        seeds = seeds if seeds is not None else [0] * len(personas)
        return list(await asyncio.gather(*(self.reset(p, s) for p, s in zip(personas, seeds))))

    async def step_many(self, dialogues: Sequence[Dialogue], replies: Sequence[str],
                        inferred: Sequence[str | None] | None = None) -> list[Step]:
        """One step of many dialogues at once, in order."""
        inferred = inferred if inferred is not None else [None] * len(dialogues)
        return list(await asyncio.gather(*(self.step(d, r, i) for d, r, i
                                           in zip(dialogues, replies, inferred))))
