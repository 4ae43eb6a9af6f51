"""What a stage says it will send, for `aloe plan`: `PlannedRequest`s, each a count of requests
of one role that share a prompt length and a completion length.

Every stage that sends requests has one function beside the code that sends them,
`planned_requests(params, lengths) -> list[PlannedRequest]`, built from the same loop bounds,
constants and message builders the stage uses (so that a change to the stage changes its
forecast); `aloe.operations.plan` only collects, sums and prices them (its `STAGES`). `lengths`
(`aloe.stages.plan_lengths.Lengths`) is the ceiling's or the forecast's: the same requests at their
longest or at typical lengths. The helpers here fill a prompt's variable parts with
placeholders that `PromptCounter` counts at their lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aloe.core.chat import Message
from aloe.core.config import EvalModelSpec, Params
from aloe.prompts import render
from aloe.stages.plan_lengths import Lengths, PromptCounter
from aloe.stages.pools import KINDS


@dataclass
class PlannedRequest:
    """`count` requests of one role sharing a prompt length and a completion length."""

    role: str
    count: float
    prompt: float
    completion: float
    reask: bool = False  # part of the ceiling's allowance, not a first attempt
    turn: int | None = None  # the conversation's turn, where the prompt grows with it


StagePlan = Callable[[Params, Lengths], list[PlannedRequest]]
"""A stage's `planned_requests`: its requests under the ceiling's or the forecast's lengths."""


def policy_role(spec: EvalModelSpec) -> str:
    """The plan's name of a model under test behind an endpoint (its ledger records the role
    `policy` under the stage `evaluate-NAME`)."""
    return f"policy:{spec.name}"


def at_turn(planned: list[PlannedRequest], turn: int) -> None:
    """Mark one turn's requests with it, so that a prompt too long can be named by its turn."""
    for request in planned:
        request.turn = turn


def history_slots(counter: PromptCounter, turns: int, user: float,
                  reply: float) -> list[Message]:
    """`turns` exchanges of a user message and a reply, at those lengths."""
    messages: list[Message] = []
    for _ in range(turns):
        messages += [{"role": "user", "content": counter.slot(user)},
                     {"role": "assistant", "content": counter.slot(reply)}]
    return messages


def persona_slots(counter: PromptCounter, lengths: dict[str, float]) -> dict[str, str]:
    """A persona whose texts are placeholders at `lengths` (per kind)."""
    return {kind: counter.slot(lengths[kind]) for kind in KINDS}


def reasked(counter: PromptCounter, messages: list[Message], answer: float,
            template: str) -> list[Message]:
    """A request asked again in the same chat: its answer, then the re-ask template."""
    return messages + [{"role": "assistant", "content": counter.slot(answer)},
                       {"role": "user", "content": render(template)}]
