"""The evaluation protocols, by name and version (`evaluation.protocol`).

A protocol fixes what stage 5 measures: which users, how the first user message is written, how
many turns, what the judge is asked (its scale, its criteria, in this project's own words in
`aloe/prompts/`) and how the judgements are aggregated into the alignment level AL(k). Two
protocols give numbers on different scales: the report never puts them in one table, and
`metrics.json` names the protocol and its version.

- `aloe` (ALOE, arXiv 2410.03642, the released evaluation; see ../shared/aloe_reference/
  PROTOCOL.md): the benchmark's users (the official one: 20 profiles x 5 personalities =
  100); the simulated user writes every message, the first included; 10 turns; the judge scores
  each reply 1-5 on three criteria taken together (style fits the personality, content fits the
  profile, human-like, engaging and concise); AL(k) = the mean score at turn k.
- `rlpa` (RLPA, arXiv 2505.15456, NeurIPS 2025, "Vanilla ALOE" in its Table 1 and
  Appendix C.2-C.4): 74 users of the ALOE test set; the first user message fixed to "Hello";
  a simulated user told to reveal its profile gradually; 10 turns; the judge decides 1 or 0 per
  reply: 1 only when the reply meets all five criteria (natural, relevant to the person's
  interests and needs, logically answers the message, engaging, informative rather than
  repetition or flattery); AL(k) = 100 x the share of 1s at turn k.

Where the RLPA paper leaves a detail open, the definition's `assumptions` say what this project
assumed. A change to a definition that moves its numbers bumps its version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from aloe.errors import BadInputError

if TYPE_CHECKING:
    from aloe.config import Params


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

    @property
    def categories(self) -> list[int]:
        """The judgements one reply can get (for agreement statistics)."""
        return list(range(self.scale[0], self.scale[1] + 1))

    @property
    def al_range(self) -> tuple[float, float]:
        """The range of AL(k) on this protocol's scale."""
        return self.scale[0] * self.multiplier, self.scale[1] * self.multiplier

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["scale"] = list(self.scale)
        data["al_range"] = list(self.al_range)
        data["criteria"] = list(self.criteria)
        data["assumptions"] = list(self.assumptions)
        return data


ALOE = Protocol(
    name="aloe", version="aloe-1",
    source="ALOE, arXiv 2410.03642; released code github.com/ShujinWu-0814/ALOE b1b8285 "
           "(evaluation/eval_own.py)",
    users="the benchmark's personas: evaluation.benchmark (the official one crosses 20 "
          "profiles with the first 5 personalities: 100 users)",
    n_users=None, first_message=None, turns=10,
    simulator="evaluation.prompt_style (workbook: user_simulator; reference: user_roleplay)",
    judge_template="evaluation.judge_context (transcript: judge_score; last_message: "
                   "judge_score_reference)",
    judge_reask="judge_score_reask", scale=(1, 5), multiplier=1.0,
    criteria=("style: the reply's tone and manner suit the person's personality",
              "content: what it says is relevant to the person's profile (and message)",
              "human-like: engaging and concise, like a message from a friend"),
    aggregate="AL(k) = the mean 1-5 score at turn k over the users (missing scores left out); "
              "IR, N-IR, N-R2 from the AL curve",
)

RLPA = Protocol(
    name="rlpa", version="rlpa-1",
    source="RLPA, arXiv 2505.15456 (NeurIPS 2025), Sections 3.3 and 4.1, Appendix C.2-C.4; "
           "its response-reward prompt in github.com/XingYuSSS/RLPA scirpts/multi_turn_rfn.py",
    users="the first 74 personas of the benchmark (RLPA: 'the complete ALOE test set, "
          "consisting of 74 instances')",
    n_users=74, first_message="Hello", turns=10,
    simulator="user_simulator_rlpa", judge_template="judge_rlpa", judge_reask="judge_rlpa_reask",
    scale=(0, 1), multiplier=100.0,
    criteria=("natural: fluent, short, conversational, like a real exchange",
              "relevant: fits the person's interests and needs",
              "logical: answers the person's last message sensibly",
              "engaging: makes the person want to go on talking, not bored",
              "informative: more than repeating the person or flattering them"),
    aggregate="each reply judged 1 (all five criteria met) or 0 (any one missed); AL(k) = 100 "
              "x the share of 1s at turn k over the users; AVG = the mean of AL(k) over the "
              "turns; N-IR, N-R2 from the normalised AL curve",
    assumptions=(
        "which 74: RLPA does not list them; the ALOE benchmark files hold 100 users, so the "
        "first 74 in benchmark order are taken (on a smaller benchmark, all of them)",
        "profiles: RLPA converts each profile to ten slots in Chinese with GPT-4o-mini; here the "
        "simulated user and the judge read the profile and personality as written",
        "the simulated user's and the judge's prompts are shown in RLPA only as images (Figures "
        "8-11); this project's wording carries the instructions the text and the released "
        "training prompts describe: reveal the profile gradually, short casual replies, cold at "
        "first; the judge role-plays the person and answers 1 (would keep chatting) or 0",
        "what the judge reads: Appendix C.3 names the persona, the message and the reply; the "
        "released prompt also gives the chat so far, so the transcript is included",
        "judge model: RLPA used gpt-4o-2024-11-20 for evaluation; here roles.judge",
        "the protocol brings its own simulated user and judge prompts: evaluation.prompt_style "
        "and evaluation.judge_context (ALOE's switches) do not apply to it",
        "the fixed first message 'Hello' is the user's turn 1; the model's first reply to it is "
        "judged as turn 1",
    ),
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (ALOE, RLPA)}


def get(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ProtocolError(f"unknown evaluation protocol '{name}': one of "
                            f"{', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def definitions_table() -> Any:
    """The protocols side by side, one row per aspect (a table of definitions, not results)."""
    import pandas as pd

    rows = {}
    for p in PROTOCOLS.values():
        rows[p.name] = {"version": p.version, "users": p.users,
                        "first message": p.first_message or "written by the simulated user",
                        "turns (documented)": p.turns,
                        "judgement": f"{p.scale[0]}-{p.scale[1]}",
                        "AL(k) range": f"{p.al_range[0]:g}-{p.al_range[1]:g}",
                        "criteria": "; ".join(p.criteria), "aggregation": p.aggregate,
                        "assumed": " | ".join(p.assumptions) or "-", "source": p.source}
    return pd.DataFrame(rows)


def variant_name(evaluation: Any, user_mode: str | None = None) -> str:
    """The name of an evaluation variant: what makes two sets of records different
    conversations, so that they are stored and measured apart (`RunLayout.variant_dir`).

    The protocol; a preference shift (its turn, what changes, a digest of a given text); and
    for replayed users the reference model. The number of turns is not part of it: a longer
    run continues the same conversations. `user_mode` overrides the configured one (the
    reference model of a replay talks live).
    """
    import hashlib

    parts = [evaluation.protocol]
    shift = evaluation.preference_shift
    if shift is not None:
        part = f"shift{shift.turn}-{shift.change}"
        if shift.text:
            part += "-" + hashlib.sha256(shift.text.encode()).hexdigest()[:8]
        parts.append(part)
    if (user_mode or evaluation.user_mode) == "replay":
        parts.append(f"replay-{evaluation.reference_model}")
    return "-".join(parts)


@dataclass(frozen=True)
class Source:
    """Where one model's conversations of this evaluation are: the variant's folder, and
    whether its user messages are live or replayed from the reference model."""

    model: str
    variant: str
    mode: str  # "live" or "replay"


def sources(params: Params) -> dict[str, Source]:
    """Per model under test, where its conversations are. Live: every model in the configured
    variant. Replay: the reference model talks live (in the live variant, whose records a live
    run of the same protocol shares), every other model replays its users."""
    e = params.evaluation
    variant = variant_name(e)
    if e.user_mode == "live":
        return {m.name: Source(m.name, variant, "live") for m in e.models}
    live = variant_name(e, "live")
    reference = e.reference_model
    return {m.name: Source(m.name, live, "live") if m.name == reference
            else Source(m.name, variant, "replay") for m in e.models}
