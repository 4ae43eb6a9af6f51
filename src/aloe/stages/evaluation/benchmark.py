"""Stage 5's users: the benchmark personas (the run's own or the official ALOE files), and
each persona as it is at a turn when the evaluation shifts its preferences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aloe.core import protocols
from aloe.core.chat import seeded
from aloe.core.config import Params
from aloe.core.config.schema import PreferenceShiftConfig
from aloe.core.errors import AloeError
from aloe.core.records import read_records
from aloe.core.schemas import (
    persona_check,
)
from aloe.roles.simulator import shift_note
from aloe.stages.plan_lengths import benchmark_size
from aloe.stages.pools import load_aloe_benchmark

Record = dict[str, Any]


SECOND_JUDGE_ROLE = "second_judge"


class EvaluationError(AloeError):
    """The stage cannot run (a missing benchmark) or conversations were cut short."""


# ------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------
def benchmark_personas(params: Params) -> list[dict[str, Any]]:
    """The personas to evaluate on: the protocol's users (RLPA: the first 74), then
    `evaluation.limit`.

    `evaluation.benchmark: run` reads the run's own `benchmark.jsonl` (written by stage 1);
    `aloe` pairs the official benchmark files (20 profiles x the first 5 personalities = 100).
    """
    e = params.evaluation
    if e.benchmark == "aloe":
        missing = [key for key, value in (("evaluation.aloe_profiles", e.aloe_profiles),
                                          ("evaluation.aloe_personalities",
                                           e.aloe_personalities)) if not value]
        if missing:
            raise EvaluationError(f"{params.source}: evaluation.benchmark is 'aloe' but "
                                  f"{missing[0]} is not set (a path or URL of the official file)")
        personas = load_aloe_benchmark(e.aloe_profiles, e.aloe_personalities)
    else:
        path = params.layout.benchmark
        if not path.exists():
            raise EvaluationError(f"no benchmark personas at {path}: run stage 1 (personas) "
                                  "first, or set evaluation.benchmark: aloe")
        personas = read_records(path, check=persona_check())
    if not personas:
        raise EvaluationError(f"the benchmark ({e.benchmark}) holds no personas")
    n_users = protocols.get(e.protocol).n_users
    if n_users:
        personas = personas[:n_users]
    return personas[: e.limit] if e.limit else personas


def planned_users(params: Params) -> int:
    """How many personas `benchmark_personas` gives, counted offline (`aloe plan`): the
    benchmark's size after `evaluation.limit`, at most the protocol's users."""
    size = benchmark_size(params)
    n_users = protocols.get(params.evaluation.protocol).n_users
    return min(size, n_users) if n_users is not None else size


# ------------------------------------------------------------------------------------------
# Variants: which conversations a model has, and where they are kept
# ------------------------------------------------------------------------------------------
def shifted_persona(shift: PreferenceShiftConfig | None, seed: int, persona: dict[str, Any],
                    personas: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The persona after the preference shift `shift` (None: no shift). Its personality (or
    profile) becomes the given text, or, without one, another benchmark persona's, drawn with
    the run's `seed` among those that differ from its own."""
    if shift is None:
        return None
    key = shift.change
    if shift.text:
        new = shift.text
    else:
        others = sorted({str(p[key]) for p in personas if str(p[key]) != str(persona[key])})
        if not others:
            raise EvaluationError(f"evaluation.preference_shift: the benchmark has no other "
                                  f"{key} to change persona {persona['id']} to; give "
                                  "preference_shift.text")
        new = seeded(seed, "preference-shift", persona["id"]).choice(others)
    return {**persona, key: new}


@dataclass
class Conversationist:
    """Who a persona is at each turn, and what the simulated user is told then (`shift`: the
    evaluation's preference shift, None for none)."""

    shift: PreferenceShiftConfig | None
    seed: int
    personas: Sequence[dict[str, Any]]
    _shifted: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    @classmethod
    def of(cls, params: Params, personas: Sequence[dict[str, Any]]) -> "Conversationist":
        """The benchmark users of a run's evaluation."""
        return cls(params.evaluation.preference_shift, params.run.seed, personas)

    def persona_at(self, persona: dict[str, Any], turn: int) -> dict[str, Any]:
        if not self.shifted(turn):
            return persona
        pid = str(persona["id"])
        if pid not in self._shifted:
            self._shifted[pid] = shifted_persona(self.shift, self.seed, persona, self.personas)
        return self._shifted[pid] or persona

    def note_at(self, persona: dict[str, Any], turn: int) -> str | None:
        if self.shift is None or not self.shifted(turn):
            return None
        now = self.persona_at(persona, turn)
        label = "Your personality now" if self.shift.change == "personality" else "Your profile now"
        return shift_note(f"{label}: {now[self.shift.change]}")

    def shifted(self, turn: int) -> bool:
        return self.shift is not None and turn >= self.shift.turn
