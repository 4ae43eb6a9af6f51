"""The evaluation protocols, by name and version (`evaluation.protocol`): one module each
(`aloe.py`, `rlpa.py`; what a protocol is: `base.py`), registered here by name. A new protocol
is a new module, its prompt files and its tests, and one line in `PROTOCOLS`.

A protocol fixes what stage 5 measures: which users, how the first user message is written, how
many turns, what the judge is asked (its scale, its criteria, in this project's own words in
`aloe/prompts/`) and how the judgements are aggregated into the alignment level AL(k). Two
protocols give numbers on different scales: the report never puts them in one table, and
`metrics.json` names the protocol and its version.

Each protocol's module describes it. Where a paper leaves a detail open, the definition's
`assumptions` say what this project assumed. A change to a definition that moves its numbers
bumps its version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aloe.core.protocols.aloe import ALOE
from aloe.core.protocols.base import Protocol, ProtocolError
from aloe.core.protocols.rlpa import RLPA

__all__ = ["ALOE", "PROTOCOLS", "RLPA", "Protocol", "ProtocolError", "Source",
           "definitions_table", "get", "of_summary", "sources", "variant_name"]

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (ALOE, RLPA)}


def get(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ProtocolError(f"unknown evaluation protocol '{name}': one of "
                            f"{', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def of_summary(summary: Mapping[str, Any] | None) -> Protocol:
    """The protocol a metrics summary was measured under (ALOE's for a summary from before
    protocols were recorded)."""
    return get(str(((summary or {}).get("protocol") or {}).get("name", ALOE.name)))


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


def of_variant(variant: str) -> Protocol:
    """The protocol whose records a variant's folder holds (its name's first part,
    `variant_name`)."""
    return get(variant.split("-")[0])


@dataclass(frozen=True)
class Source:
    """Where one model's conversations of this evaluation are: the variant's folder, and
    whether its user messages are live or replayed from the reference model."""

    model: str
    variant: str
    mode: str  # "live" or "replay"


def sources(e: Any) -> dict[str, Source]:
    """Per model under test of the evaluation section `e`, where its conversations are. Live:
    every model in the configured variant. Replay: the reference model talks live (in the live
    variant, whose records a live run of the same protocol shares), every other model replays
    its users."""
    variant = variant_name(e)
    if e.user_mode == "live":
        return {m.name: Source(m.name, variant, "live") for m in e.models}
    live = variant_name(e, "live")
    reference = e.reference_model
    return {m.name: Source(m.name, live, "live") if m.name == reference
            else Source(m.name, variant, "replay") for m in e.models}
