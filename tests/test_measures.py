"""The measures beyond AL(k) (`aloe.analysis.measures`) against values worked out by hand: a
per-turn curve of any measure, recovery after a preference shift, the simulated user's
disclosure."""

from __future__ import annotations

import math

import pytest

from aloe.analysis import measures
from tests.support.score_tables import records


def test_turn_curve_of_a_side_measure() -> None:
    recs = [{"model": "m", "persona_id": p, "turn": k, "accuracy": v}
            for p, values in {"p1": [0.2, 0.4], "p2": [0.4, None], "p3": [0.0, 0.8]}.items()
            for k, v in enumerate(values, start=1)]
    curve = measures.turn_curve(recs, "accuracy", n_boot=300, seed=1)
    assert curve["turns"] == [1, 2] and curve["n"] == [3, 2]
    assert curve["value"] == pytest.approx([0.2, 0.6])  # (.2+.4+0)/3, (.4+.8)/2
    assert curve["mean"]["value"] == pytest.approx(0.4)
    for k in range(2):
        assert 0.0 <= curve["low"][k] <= curve["value"][k] <= curve["high"][k] <= 0.8 + 1e-9
    flags = [{"model": "m", "persona_id": p, "turn": 1, "c": c}
             for p, c in (("a", True), ("b", False), ("c", False), ("d", False))]
    assert measures.turn_curve(flags, "c", n_boot=50)["value"] == [0.25]  # True counts as 1


@pytest.mark.parametrize("al, shift, turns_to, drop", [
    # K = 3: pre-shift AL(2) = 4; AL(3) = 2 falls 2; AL(4) = 3 < 4; AL(5) = 4.5 >= 4: 2 turns
    ([3, 4, 2, 3, 4.5], 3, 2.0, 2.0),
    ([3, 4, 5, 5], 3, 0.0, -1.0),  # it never fell: recovered at once
    ([3, 4, 2, 2], 3, math.nan, 2.0),  # not within the turns run
    ([3, math.nan, 2, 4], 3, math.nan, math.nan),  # no pre-shift level
])
def test_recovery_turns_hand_worked(al, shift, turns_to, drop):
    got_turns, got_drop = measures.recovery_turns(al, shift)
    assert (math.isnan(got_turns) and math.isnan(turns_to)) or got_turns == turns_to
    assert (math.isnan(got_drop) and math.isnan(drop)) or got_drop == pytest.approx(drop)


def test_recovery_with_intervals() -> None:
    # AL = 3, 4, 2, 3.5, 4.5 (each persona the same): recovers 2 turns after the shift
    recs = records("m", {p: [3, 4, 2, 3.5, 4.5] for p in ("p1", "p2", "p3")})
    result = measures.recovery(recs, 3, n_boot=100)
    assert result["pre_shift_level"] == 4.0 and result["at_shift"] == 2.0
    assert result["turns_to_recover"] == {"value": 2.0, "low": 2.0, "high": 2.0}
    assert result["recovered"] and result["recovered_share"] == 1.0
    never = measures.recovery(records("m", {"p1": [3, 4, 2], "p2": [3, 4, 1]}), 3, n_boot=50)
    assert not never["recovered"] and never["recovered_share"] == 0.0
    assert never["turns_to_recover"]["value"] is None and never["drop"]["value"] == 2.5


def test_lexical_reveal_counts_the_personas_words_said() -> None:
    persona = "She is a nurse in Leeds who grows tomatoes and sings in a choir."
    # content words: nurse, leed(s), grow(s), tomatoe(s), sing(s), choir -> 6
    assert measures.content_words(persona) == {"nurse", "leed", "grow", "tomatoe", "sing", "choir"}
    assert measures.lexical_reveal(persona, ["hi there"]) == 0.0
    assert measures.lexical_reveal(persona, ["I'm a nurse", "back from choir"]) == \
        pytest.approx(2 / 6)
    assert measures.lexical_reveal(persona, [persona]) == 1.0  # the pasted profile


def test_simulator_summary_flags_a_user_who_reveals_everything_at_once() -> None:
    persona = {"x": "a nurse in Leeds who grows tomatoes"}
    pasted = [{"model": "m", "persona_id": "x", "turn": 1,
               "user": "I am a nurse in Leeds and I grow tomatoes"},
              {"model": "m", "persona_id": "x", "turn": 2, "user": "anyway"}]
    lexical = measures.lexical_reveal_records(pasted, persona)
    assert [r["lexical"] for r in lexical] == [1.0, 1.0]
    summary = measures.simulator_summary([], lexical, reveal_flag=0.5, n_boot=50)
    assert summary["reveals_at_once"] and summary["flag_source"] == "lexical"
    assert summary["first_message_share"] == 1.0 and summary.get("revealed") is None
    slow = [{"model": "m", "persona_id": "x", "turn": k, "revealed": v, "contradiction": c}
            for k, v, c in ((1, 0.1, False), (2, 0.3, True))]
    judged = measures.simulator_summary(slow, lexical, reveal_flag=0.5, n_boot=50)
    assert judged["flag_source"] == "revealed" and not judged["reveals_at_once"]
    assert judged["contradiction_rate"] == 0.5
    assert judged["revealed"]["value"] == pytest.approx([0.1, 0.3])


def test_the_reveal_flag_reads_the_simulators_first_message_not_a_fixed_one() -> None:
    """Issue 22: under RLPA the first user message is the protocol's "Hello": the flag read
    turn 1 and never fired. The simulator's first message is turn 2 there."""
    lexical = [{"persona_id": f"p{i}", "turn": turn, "lexical": value}
               for i in range(6) for turn, value in ((1, 0.0), (2, 0.9), (3, 0.95))]
    fixed = measures.simulator_summary([], lexical, reveal_flag=0.5, n_boot=50, first_turn=2)
    assert fixed["reveals_at_once"] and fixed["turn1_disclosure"] == pytest.approx(0.9)
    assert fixed["first_message_share"] == 1.0 and fixed["first_simulated_turn"] == 2
    simulated = measures.simulator_summary([], lexical, reveal_flag=0.5, n_boot=50)
    assert not simulated["reveals_at_once"] and simulated["first_message_share"] == 0.0
