"""The environment as a verl interaction, so a lab trains a policy on a cluster against the
same simulated users and judge that the benchmark scores it with.

verl's multi-turn rollout (`verl/experimental/agent_loop/tool_agent_loop.py`, `ToolAgentLoop`)
builds each interaction of its YAML file as `cls(config={**config, "name": name})`, then per
dataset row: `await start_interaction(request_id, **interaction_kwargs)`, after each policy
reply `await generate_response(request_id, messages, **interaction_kwargs)` returning
`(should_terminate, user_message, turn_score, metadata)`, and at the end `calculate_score` and
`finalize_interaction`. `AloeInteraction` keeps that shape exactly; verl is not imported, as
its registry only imports the class by its dotted name.

The interaction's `config` (its YAML `config:` mapping):
- `params` (required): a parameter file (`params/paper.yaml`, or a lab's own): its `user` and
  `judge` roles, its cache and budget, and by default its protocol and turns;
- `protocol`, `turns`: the protocol (`aloe`, `rlpa`) and turns (default: `evaluation.*`);
- `inference` (default false): also RLPA's profile reward, when a row passes `inferred`;
- `unreadable_score` (default: the bottom of the protocol's scale): the turn score when the
  judge's answer could not be read (verl needs a number; metadata keeps the None).
"""

from __future__ import annotations

import atexit
import json
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from aloe.core import protocols
from aloe.core.config import load_params
from aloe.core.errors import BadInputError, ParamsError
from aloe.llm import LLM
from aloe.stages.environment import Dialogue, Rewards, UserEnvironment

STAGE = "environment"  # the usage ledger's stage name for a training run's requests


@dataclass
class _Instance:
    """One rollout's dialogue and the scores of its turns so far."""

    dialogue: Dialogue
    scores: list[float] = field(default_factory=list)


def persona_of(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The persona a dataset row names: `persona` (a mapping, or its JSON text, as parquet
    keeps it), else `persona_id`/`profile`/`personality` given apart."""
    persona = kwargs.get("persona")
    if isinstance(persona, str):
        persona = json.loads(persona)
    if persona is None and "profile" in kwargs:
        persona = {"id": kwargs.get("persona_id"), "profile": kwargs["profile"],
                   "personality": kwargs.get("personality", "")}
    if not isinstance(persona, dict) or "profile" not in persona:
        raise BadInputError("verl interaction_kwargs name no persona: give 'persona' (id, "
                            "profile, personality) or 'profile'; write rows with "
                            "aloe.stages.rl_adapters.dataset")
    return persona


def reply_of(messages: list[dict[str, Any]]) -> str:
    """The policy's latest reply: the last assistant message's text (a plain string, or the
    text parts of a multimodal processor's content list)."""
    for message in reversed(messages):
        if message.get("role") == "assistant":
            content = message.get("content") or ""
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content)
    raise BadInputError("verl generate_response: the messages hold no assistant reply to "
                        "answer; call it after the policy's turn")


class AloeInteraction:
    """The simulated users of one protocol as a verl interaction (see the module's text)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        self.name: str = self.config.get("name", "aloe")
        if not self.config.get("params"):
            raise ParamsError(f"verl interaction '{self.name}': no 'params' in its config: set "
                              "config.params to a parameter file (e.g. params/paper.yaml)")
        params = load_params(self.config["params"])
        self.protocol = protocols.get(self.config.get("protocol") or params.evaluation.protocol)
        self.llm = LLM.for_run(params, STAGE)
        self._closed = False
        atexit.register(self.close)  # a training run's spend lands in the run folder
        self.env = UserEnvironment(
            self.llm, self.protocol, turns=int(self.config.get("turns") or
                                               params.evaluation.turns),
            prompt_style=params.evaluation.prompt_style,
            rewards=Rewards(judge=True, inference=bool(self.config.get("inference", False))))
        self.unreadable = float(self.config.get("unreadable_score", self.protocol.scale[0]))
        self._instances: dict[str, _Instance] = {}

    async def start_interaction(self, instance_id: str | None = None, **kwargs: Any) -> str:
        """A new dialogue for the row's persona and `seed`; its first user message is the
        row's `first_message` (what the policy's prompt holds), else the environment's own."""
        instance_id = instance_id or str(uuid4())
        if instance_id in self._instances:
            raise BadInputError(f"verl interaction '{self.name}': instance {instance_id!r} is "
                                "already in flight; finalize it before starting it again")
        persona, seed = persona_of(kwargs), int(kwargs.get("seed", 0))
        first = kwargs.get("first_message")
        if first:
            dialogue = Dialogue(persona=persona, seed=seed,
                                history=[{"role": "user", "content": str(first)}])
        else:
            dialogue = await self.env.reset(persona, seed)
        self._instances[instance_id] = _Instance(dialogue)
        return instance_id

    async def generate_response(self, instance_id: str, messages: list[dict[str, Any]],
                                **kwargs: Any) -> tuple[bool, str, float, dict[str, Any]]:
        """The policy's last reply judged and answered: (over, the user's next message ("" at
        the end), the turn's score on the protocol's scale, each reward apart)."""
        instance = self._instance(instance_id)
        step = await self.env.step(instance.dialogue, reply_of(messages),
                                   inferred=kwargs.get("inferred"))
        judged = step.rewards.get("judge")
        score = self.unreadable if judged is None else judged
        instance.scores.append(score)
        metadata = {"rewards": dict(step.rewards), "turn": len(instance.scores),
                    "protocol": self.protocol.name, "scale": list(self.protocol.scale)}
        return step.done, step.user or "", score, metadata

    async def calculate_score(self, instance_id: str, **kwargs: Any) -> float:
        """The dialogue's mean turn score so far (0.0 before the first reply)."""
        scores = self._instance(instance_id).scores
        return sum(scores) / len(scores) if scores else 0.0

    async def finalize_interaction(self, instance_id: str, **kwargs: Any) -> None:
        """Frees the instance's dialogue; the cache keeps what was asked."""
        self._instance(instance_id)
        del self._instances[instance_id]

    def dialogue(self, instance_id: str) -> Dialogue:
        """An instance's dialogue so far, as the simulated user and judge saw it (to log)."""
        return self._instance(instance_id).dialogue

    def in_flight(self) -> list[str]:
        """The instance ids started and not yet finalized."""
        return list(self._instances)

    def close(self) -> None:
        """Saves the usage ledger, once (the run's usage history appends each save)."""
        if not self._closed:
            self._closed = True
            atexit.unregister(self.close)
            self.llm.save_ledger()

    def _instance(self, instance_id: str) -> _Instance:
        if instance_id not in self._instances:
            raise BadInputError(f"verl interaction '{self.name}': unknown instance "
                                f"{instance_id!r}; start_interaction it first (or it was "
                                "finalized)")
        return self._instances[instance_id]


def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: dict[str, Any] | None = None, **kwargs: Any) -> float:
    """verl's custom reward function (`custom_reward_function.path/name`): the mean of the
    turn scores the interaction gave, which verl's reward manager passes in `extra_info`."""
    scores = [float(s) for s in (extra_info or {}).get("turn_scores") or [] if s is not None]
    return sum(scores) / len(scores) if scores else 0.0
