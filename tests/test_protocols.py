"""A protocol is an object that behaves (`aloe.core.protocols`): the judge's request and the reading
of its answer, the simulated user's style, the rating form, the scale of tables and figures all
come from it, so a new protocol is a new module and one registry line. These tests register a
third protocol that exists only here and follow it through every place that asks."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from aloe.core import protocols
from aloe.core.config import params_from_dict
from aloe.core.errors import ParamsError
from aloe.core.protocols import ALOE, RLPA
from aloe.llm import Completion
from aloe.presentation import plots, ratings, tables
from aloe.roles.judges import score_reply
from tests.conftest import tiny_dict


def _ten_messages(persona: dict[str, Any], history: Any, reply: str,
                  context: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Out of ten, for {persona['profile']}: {reply}"}]


def _read_ten(text: str | None) -> int | None:
    return int(text) if text and text.strip().isdigit() and int(text) <= 10 else None


TEN = dataclasses.replace(
    ALOE, name="ten", version="ten-1", scale=(0, 10), multiplier=10.0,
    judge_messages=_ten_messages, read_judgement=_read_ten, expected_judgement=None,
    judge_reask="judge_rlpa_reask", simulator_style="reference",
    rating_labels={n: f"{n}/10" for n in range(11)}, rating_lead="Out of ten, how good?",
    al_axis="AL(k): ten times the mean mark")


@pytest.fixture
def with_ten(monkeypatch: pytest.MonkeyPatch) -> protocols.Protocol:
    monkeypatch.setitem(protocols.PROTOCOLS, TEN.name, TEN)
    return TEN


def test_the_registry_is_the_one_place_a_name_is_known(tmp_path, with_ten) -> None:
    params = params_from_dict(tiny_dict(tmp_path, evaluation={"protocol": "ten"}))
    assert protocols.get(params.evaluation.protocol) is TEN
    assert protocols.of_summary({"protocol": TEN.to_json()}) is TEN
    assert protocols.of_summary({}) is ALOE  # a summary from before protocols were recorded
    with pytest.raises(ParamsError, match="evaluation.protocol': not a known protocol: use one "
                                          "of aloe, rlpa, ten"):
        params_from_dict(tiny_dict(tmp_path, evaluation={"protocol": "eleven"}))


def test_the_judge_asks_and_reads_as_the_protocol_says(with_ten) -> None:
    asked: list[list[dict[str, str]]] = []

    async def chat(role: str, messages: list[dict[str, str]], **_: Any) -> Completion:
        asked.append(messages)
        return Completion(text="7", finish_reason="stop")

    persona = {"profile": "He keeps bees.", "personality": "He is shy."}
    history = [{"role": "user", "content": "Hi"}]
    judged = asyncio.run(score_reply(chat, persona, history, "Hello!", protocol=TEN,
                                     logprobs=True))
    assert (judged.score, judged.attempts, judged.expected) == (7, 1, None)
    assert asked == [[{"role": "user", "content": "Out of ten, for He keeps bees.: Hello!"}]]


def test_tables_figures_and_the_form_take_the_protocol_s_scale(with_ten) -> None:
    assert TEN.scale_label == "0-100" and ALOE.scale_label == "1-5"
    assert TEN.simulator_for("workbook") == "reference"
    assert ALOE.simulator_for("workbook") == "workbook" and RLPA.simulator_for("x") == "rlpa"
    summary = {"protocol": TEN.to_json(), "confidence": 0.95, "models": {"base": {
        "turns": [1, 2], "al": [50.0, 60.0], "al_low": [40.0, 50.0], "al_high": [60.0, 70.0],
        "n_personas": 3, "mean_al": {"value": 55.0, "low": 45.0, "high": 65.0}}}}
    assert "mean AL (0-100)" in tables.metrics_table(summary).columns
    figure = plots.plot_alignment_levels(summary)
    assert figure.axes[0].get_ylabel() == "AL(k): ten times the mean mark"
    assert "ten protocol" in figure.axes[0].get_title()
    page = ratings.render_form("kit", "ten", TEN, [{
        "item": "i1", "earlier": "", "message": "Hi", "reply": "Hello!",
        "profile": "He keeps bees.", "personality": "He is shy."}])
    assert "Out of ten, how good?" in page and "10/10" in page and "5 excellent" not in page


def test_a_definition_records_no_behaviour() -> None:
    """metrics.json holds the definition; the code that acts on it is not data."""
    for protocol in protocols.PROTOCOLS.values():
        recorded = protocol.to_json()
        assert not any(callable(v) for v in recorded.values())
        assert {"judge_messages", "rating_labels", "simulator_style"}.isdisjoint(recorded)
        assert recorded["al_range"] == list(protocol.al_range)
