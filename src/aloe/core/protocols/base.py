"""What an evaluation protocol is: a definition (users, first message, turns, criteria, scale,
aggregation, assumptions) together with the behaviour that differs between protocols (the
judge's request and how its answer is read, the simulated user's instruction, the human rating
form's question and labels). Call sites ask a protocol; none compares its name."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from aloe.core.chat import Message
from aloe.core.errors import BadInputError

JudgeMessages = Callable[[dict[str, Any], Sequence[Message], str, str], list[Message]]
"""(persona, history ending in the user's message, reply, evaluation.judge_context) -> request"""
ReadJudgement = Callable[[str | None], int | None]
"""A judge's answer -> the judgement on the protocol's scale, or None when unreadable"""
ExpectedJudgement = Callable[[list[dict[str, Any]] | None, int | None], float | None]
"""(token log-probabilities, judgement read) -> its probability-weighted value, or None"""

BEHAVIOUR = {"behaviour": True}  # a field that is code, not part of the protocol's record


class ProtocolError(BadInputError):
    """An unknown protocol name."""


@dataclass(frozen=True)
class Protocol:
    name: str
    version: str
    source: str  # where it is documented
    users: str  # who the simulated users are, in words
    n_users: int | None  # how many of the benchmark's personas (None: all of them)
    first_message: str | None  # a fixed first user message; None: the simulated user writes it
    turns: int  # the documented number of turns (`evaluation.turns` decides a run's)
    simulator: str  # the simulated user's instruction template (aloe: the prompt_style's)
    judge_template: str  # the judge's template (aloe: the judge_context's)
    judge_reask: str
    scale: tuple[int, int]  # what one judgement can be
    multiplier: float  # AL(k) = multiplier x the mean judgement at turn k
    criteria: tuple[str, ...]
    aggregate: str  # how judgements become a figure, in words
    assumptions: tuple[str, ...] = field(default_factory=tuple)
    # behaviour: what the protocol does where another would do otherwise
    judge_messages: JudgeMessages = field(default=None, metadata=BEHAVIOUR)  # type: ignore[assignment]
    read_judgement: ReadJudgement = field(default=None, metadata=BEHAVIOUR)  # type: ignore[assignment]
    expected_judgement: ExpectedJudgement | None = field(default=None, metadata=BEHAVIOUR)
    simulator_style: str | None = field(default=None, metadata=BEHAVIOUR)
    """the simulated user's prompt style (`aloe.roles.simulator`); None: evaluation.prompt_style"""
    rating_labels: Mapping[int, str] = field(default_factory=dict, metadata=BEHAVIOUR)
    rating_lead: str = field(default="", metadata=BEHAVIOUR)
    """the rating form's question, before the criteria"""
    al_axis: str = field(default="", metadata=BEHAVIOUR)  # what AL(k) is, on a figure's axis
    published_judge: str | None = field(default=None, metadata=BEHAVIOUR)
    """the judge model of the published table a run may be read against (None: no caveat)"""
    defined_on: str | None = field(default=None, metadata=BEHAVIOUR)
    """the `evaluation.benchmark` whose users the protocol is defined on (None: any)"""

    @property
    def categories(self) -> list[int]:
        """The judgements one reply can get (for agreement statistics)."""
        return list(range(self.scale[0], self.scale[1] + 1))

    @property
    def al_range(self) -> tuple[float, float]:
        """The range of AL(k) on this protocol's scale."""
        return self.scale[0] * self.multiplier, self.scale[1] * self.multiplier

    @property
    def scale_label(self) -> str:
        """AL(k)'s range in a table header: '1-5', '0-100'."""
        low, high = self.al_range
        return f"{low:g}-{high:g}"

    def simulator_for(self, prompt_style: str) -> str:
        """The simulated user's prompt style in a run whose `evaluation.prompt_style` is
        `prompt_style`: the protocol's own where it brings one."""
        return self.simulator_style or prompt_style

    def rating_question(self) -> str:
        """The question a human rater answers for each reply."""
        return f"{self.rating_lead} " + "; ".join(self.criteria) + "."

    def to_json(self) -> dict[str, Any]:
        """The definition as recorded in metrics.json (no behaviour)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata}
        data["scale"] = list(self.scale)
        data["al_range"] = list(self.al_range)
        data["criteria"] = list(self.criteria)
        data["assumptions"] = list(self.assumptions)
        return data
