"""Stage 5 metrics against values worked out by hand."""

from __future__ import annotations

import json
import math

import pytest

from aloe.analysis import metrics
from aloe.analysis.metrics import (
    alignment_levels,
    improvement_rate,
    normalized_improvement_rate,
    paired_difference,
    summarise,
)
from aloe.presentation import tables
from tests.support.score_tables import records


# -- IR: least-squares slope over k = 1..K --------------------------------------------------
@pytest.mark.parametrize("al, slope", [
    ([1, 2, 3], 1.0),
    # k_mean 2, AL_mean 3: sum (k-2)(AL-3) = (-1)(-1) + 0 + (1)(0) = 1; sum (k-2)^2 = 2
    ([2, 4, 3], 0.5),
    ([5, 4, 3, 2], -1.0),
    # k_mean 2.5, AL_mean 3.425: dk = -1.5 -.5 .5 1.5, dAL = -.425 .075 -.225 .575
    # sum dk dAL = .6375 - .0375 - .1125 + .8625 = 1.35; sum dk^2 = 5 -> 0.27
    ([3.0, 3.5, 3.2, 4.0], 0.27),
    ([2.0, 3.0, 2.4, 4.0], 0.54),  # the same shape on twice the range: twice the slope
    ([3, 3, 3], 0.0),
])
def test_improvement_rate_hand_worked(al, slope):
    assert improvement_rate(al) == pytest.approx(slope)


def test_improvement_rate_skips_turns_without_scores():
    # the fit uses the turns present: points (1, 1) and (3, 3)
    assert improvement_rate([1.0, math.nan, 3.0]) == pytest.approx(1.0)
    assert math.isnan(improvement_rate([4.0]))
    assert math.isnan(improvement_rate([math.nan, 2.0, math.nan]))


# -- N-IR, N-R^2: the same fit after min-max normalisation -----------------------------------
@pytest.mark.parametrize("al, n_ir, n_r2", [
    ([1, 2, 3], 0.5, 1.0),  # normalised 0, .5, 1: slope .5, a perfect line
    # normalised 0, 1, .5: slope .25; fit .25 .5 .75, residuals -.25 .5 -.25,
    # SS_res = .375, SS_tot = .25 + .25 + 0 = .5 -> R^2 = .25
    ([2, 4, 3], 0.25, 0.25),
    # both normalise to 0, .5, .2, 1: slope .27, SS_tot = .5675, SS_reg = .27^2 * 5 = .3645
    ([3.0, 3.5, 3.2, 4.0], 0.27, 0.3645 / 0.5675),
    ([2.0, 3.0, 2.4, 4.0], 0.27, 0.3645 / 0.5675),
    ([3, 1], -1.0, 1.0),
])
def test_normalized_improvement_rate_hand_worked(al, n_ir, n_r2):
    got_ir, got_r2 = normalized_improvement_rate(al)
    assert got_ir == pytest.approx(n_ir)
    assert got_r2 == pytest.approx(n_r2)


def test_normalized_improvement_rate_of_a_constant_series():
    n_ir, n_r2 = normalized_improvement_rate([3.2, 3.2, 3.2, 3.2])
    assert n_ir == 0.0 and math.isnan(n_r2)


# -- AL(k) with bootstrap CIs over personas ---------------------------------------------------
def test_alignment_levels_excludes_missing_scores_and_counts_them():
    recs = records("m", {"p1": [2, 4], "p2": [3, None], "p3": [4, 5]})
    al = alignment_levels(recs, n_boot=500, seed=1)
    assert al.turns == [1, 2]
    assert al.al == pytest.approx([3.0, 4.5])  # (2+3+4)/3, (4+5)/2: the missing one is no 0
    assert al.n_scored == [3, 2] and al.n_missing == [0, 1]
    assert al.missing_rate == pytest.approx(1 / 6)
    assert al.n_personas == 3
    for k in range(2):  # each interval holds the estimate and stays inside the observed range
        assert 2.0 <= al.al_low[k] <= al.al[k] <= al.al_high[k] <= 5.0
    assert al.ir.value == pytest.approx(1.5)
    assert al.mean_al.value == pytest.approx(3.75)
    assert al.n_ir.value == pytest.approx(1.0)  # two points normalise to 0, 1


def test_alignment_levels_turn_without_any_score_is_missing_not_zero():
    recs = records("m", {"p1": [3, None, 4], "p2": [5, None, 4]})
    al = alignment_levels(recs, n_boot=100)
    assert al.al[0] == pytest.approx(4.0) and al.al[2] == pytest.approx(4.0)
    assert math.isnan(al.al[1])
    assert al.n_missing == [0, 2, 0]
    data = al.to_json()
    assert data["al"][1] is None and data["al_low"][1] is None  # JSON null, not NaN or 0
    assert al.ir.value == pytest.approx(0.0)  # fitted on turns 1 and 3


def test_bootstrap_interval_collapses_when_every_persona_agrees():
    recs = records("m", {p: [2, 3, 4] for p in ("a", "b", "c", "d")})
    al = alignment_levels(recs, n_boot=200)
    assert al.al_low == pytest.approx([2, 3, 4]) and al.al_high == pytest.approx([2, 3, 4])
    assert (al.ir.low, al.ir.value, al.ir.high) == pytest.approx((1.0, 1.0, 1.0))


def test_bootstrap_is_reproducible_and_widens_with_spread():
    recs = records("m", {"a": [1, 2], "b": [5, 5], "c": [3, 1], "d": [2, 4], "e": [4, 3]})
    first = alignment_levels(recs, n_boot=300, seed=7)
    again = alignment_levels(recs, n_boot=300, seed=7)
    assert first.al_low == again.al_low and first.ir.high == again.ir.high
    narrow = alignment_levels(recs, n_boot=300, seed=7, confidence=0.5)
    assert narrow.al_high[0] - narrow.al_low[0] < first.al_high[0] - first.al_low[0]


def test_records_of_one_turn_twice_are_refused():
    recs = records("m", {"a": [3, 4]}) + records("m", {"a": [5]})
    with pytest.raises(ValueError, match="recorded twice"):
        alignment_levels(recs)


def test_mixed_models_need_a_choice():
    recs = records("a", {"p": [3]}) + records("b", {"p": [4]})
    with pytest.raises(ValueError, match="several models"):
        alignment_levels(recs)
    assert alignment_levels(recs, model="b", n_boot=10).al == [4.0]


# -- paired differences -----------------------------------------------------------------------
def test_paired_difference_hand_worked():
    a = records("base", {"p1": [1, 2], "p2": [2, 3], "only_a": [5, 5]})
    b = records("dpo", {"p1": [2, 4], "p2": [3, 5], "only_b": [1, 1]})
    diff = paired_difference(a, b, n_boot=200)
    assert diff.n_personas == 2  # only the shared personas
    assert diff.diff == pytest.approx([1.0, 2.0])  # both personas gain 1 then 2
    assert diff.mean_diff.value == pytest.approx(1.5)
    assert diff.ir_diff.value == pytest.approx(1.0)  # IR(dpo) = 2, IR(base) = 1
    # both personas differ identically, so every paired draw gives the same numbers
    assert diff.diff_low == pytest.approx([1.0, 2.0])
    assert diff.diff_high == pytest.approx([1.0, 2.0])
    assert (diff.ir_diff.low, diff.ir_diff.high) == pytest.approx((1.0, 1.0))


def test_paired_difference_leaves_out_turns_missing_on_either_side():
    a = records("a", {"p1": [3, None], "p2": [3, 3]})
    b = records("b", {"p1": [4, 5], "p2": [5, 2]})
    diff = paired_difference(a, b, n_boot=50)
    assert diff.diff == pytest.approx([1.5, -1.0])  # turn 2: only p2 has both


# -- metrics.json ---------------------------------------------------------------------------
def test_summarise_is_strict_json_and_reads_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be read from or written to the working folder
    by_model = {"base": records("base", {"p1": [2, 3], "p2": [3, 3]}),
                "dpo": records("dpo", {"p1": [3, 5], "p2": [None, 4]})}
    summary = summarise(by_model, n_boot=100, models=["base", "dpo"])
    assert list(tmp_path.iterdir()) == []

    def no_nan(name):
        raise AssertionError(f"metrics.json would hold {name}")

    data = json.loads(json.dumps(summary), parse_constant=no_nan)
    assert list(data["models"]) == ["base", "dpo"]
    base = data["models"]["base"]
    assert base["turns"] == [1, 2] and base["al"] == pytest.approx([2.5, 3.0])
    assert base["ir"]["value"] == pytest.approx(0.5)
    assert set(base) >= {"al_low", "al_high", "n_ir", "n_r2", "mean_al", "missing_rate"}
    assert data["models"]["dpo"]["missing_rate"] == pytest.approx(0.25)
    assert data["paired"]["dpo - base"]["diff"] == pytest.approx([1.0, 1.5])
    table = tables.metrics_table(data)
    assert list(table.index) == ["base", "dpo"] and table.loc["base", "N-R²"].startswith("1.000 [")
    assert table.loc["dpo", "no score"] == "25%" and table.loc["base", "IR (per turn)"] \
        .startswith("+0.500 [")


# -- the bootstrap unit, expected AL and truncation ------------------------------------------
def clustered(model: str, profiles: int = 4, per_profile: int = 5) -> list[dict]:
    """Personas of one profile score alike (as the official benchmark's 5 personalities of a
    profile may): the profile, not the persona, is the independent unit."""
    rows = []
    for p in range(profiles):
        for q in range(per_profile):
            for k in (1, 2):
                rows.append({"model": model, "persona_id": f"p{p}-{q}", "profile_id": f"p{p}",
                             "turn": k, "score": 1 + p, "expected_score": 1.5 + p,
                             "truncated": q == 0 and k == 2})
    return rows


def test_profiles_are_the_default_unit_and_give_honest_intervals():
    records = clustered("m")
    by_profile = alignment_levels(records, n_boot=400)
    by_persona = alignment_levels(records, n_boot=400, unit="persona")
    assert (by_profile.unit, by_profile.n_units, by_profile.n_personas) == ("profile", 4, 20)
    assert by_persona.unit == "persona" and by_persona.n_units == 20
    width = lambda e: e.high - e.low  # noqa: E731
    # 4 independent profiles, not 20 independent personas: a wider interval
    assert width(by_profile.mean_al) > 1.5 * width(by_persona.mean_al)
    without_profiles = [{k: v for k, v in r.items() if k != "profile_id"} for r in records]
    assert alignment_levels(without_profiles, n_boot=50).unit == "persona"


def test_metrics_name_the_unit_and_give_expected_al_and_paired_intervals():
    summary = summarise({"a": clustered("a"), "b": clustered("b")}, n_boot=200)
    assert summary["bootstrap_unit"] == "profile"
    model = summary["models"]["a"]
    assert (model["unit"], model["n_units"]) == ("profile", 4)
    expected = model["expected_al"]
    assert expected["value"] == pytest.approx([3.0, 3.0])
    assert all(lo < v < hi for lo, v, hi in zip(expected["low"], expected["value"],
                                                   expected["high"]))
    assert summary["paired"]["b - a"]["unit"] == "profile"
    assert summarise({"a": clustered("a")}, n_boot=50, unit="persona")["bootstrap_unit"] == \
        "persona"


def test_truncated_replies_are_counted_per_turn():
    model = summarise({"m": clustered("m")}, n_boot=20)["models"]["m"]
    assert model["truncated"] == pytest.approx([0.0, 0.2])  # 1 of 5 personas, at turn 2
    assert model["truncated_rate"] == pytest.approx(0.1)
    old = [{k: v for k, v in r.items() if k != "truncated"} for r in clustered("m")]
    assert summarise({"m": old}, n_boot=20)["models"]["m"]["truncated"] == [None, None]
    table = tables.truncation_table(summarise({"m": clustered("m")}, n_boot=20))
    assert table.loc["m", 2] == pytest.approx(0.2)


def test_persona_unit_draws_are_the_same_as_before():
    """One row per cluster: the draws are n rows with replacement, as the persona bootstrap
    always drew them (results of the persona unit did not change)."""
    import numpy as np

    from aloe.analysis.metrics import bootstrap_rows

    draws = bootstrap_rows([f"p{i}" for i in range(7)], 50, seed=3)
    assert np.array_equal(draws, np.random.default_rng(3).integers(0, 7, size=(50, 7)))


def crossed(model: str, profiles: int = 20, personalities: int = 5,
            personality_effect: float = 2.0, seed: int = 0) -> list[dict]:
    """The official benchmark's design: every profile with the same personalities. Scores
    move with the personality (some people are harder to please) and a little with the
    profile, as they may on the real benchmark."""
    import numpy as np

    rng = np.random.default_rng(seed)
    by_personality = rng.normal(0, personality_effect, personalities)
    by_profile = rng.normal(0, 0.3, profiles)
    return [{"model": model, "persona_id": f"p{p}-q{q}", "profile_id": f"p{p}",
             "personality_id": f"q{q}", "turn": k,
             "score": float(3 + by_personality[q] + by_profile[p] + rng.normal(0, 0.1))}
            for p in range(profiles) for q in range(personalities) for k in (1, 2)]


def test_a_crossed_benchmark_resamples_profiles_and_personalities_by_default():
    records = crossed("m")
    two_way = alignment_levels(records, n_boot=400)
    by_profile = alignment_levels(records, n_boot=400, unit="profile")
    assert two_way.unit == "two-way" and two_way.unit_sizes == {"profile": 20, "personality": 5}
    assert two_way.n_units == 5  # the fewer: what limits the interval
    width = lambda e: e.high - e.low  # noqa: E731
    # resampling profiles only holds the 5 personalities fixed: far too narrow for new users
    assert width(two_way.mean_al) > 3 * width(by_profile.mean_al)
    summary = summarise({"a": records, "b": crossed("b", seed=1)}, n_boot=100)
    assert summary["bootstrap_unit"] == "two-way" and summary["paired"]["b - a"]["unit"] == \
        "two-way"
    # personalities nested in profiles (each profile its own) are not a cross: profiles
    nested = [{**r, "personality_id": r["persona_id"]} for r in records]
    assert metrics.default_unit(nested) == "profile"
    assert metrics.default_unit([{k: v for k, v in r.items() if k != "personality_id"}
                                 for r in records]) == "profile"


def test_two_way_draws_take_every_persona_at_the_pairs_drawn():
    from aloe.analysis.metrics import two_way_rows

    profiles = [f"p{p}" for p in range(3) for _ in range(2)]
    personalities = [f"q{q}" for _ in range(3) for q in range(2)]
    draws = two_way_rows(profiles, personalities, 200, seed=5)
    assert draws.shape == (200, 6)  # 3 profiles x 2 personalities a draw
    for rows in draws[:20]:
        drawn = [(profiles[r], personalities[r]) for r in rows]
        picked_p = list(dict.fromkeys(p for p, _ in drawn))
        picked_q = list(dict.fromkeys(q for _, q in drawn))
        # a product: every drawn profile with every drawn personality, as often as both drawn
        assert len(drawn) == 6 and {(p, q) for p in picked_p for q in picked_q} == set(drawn)
    ragged = two_way_rows(profiles[:5], personalities[:5], 50, seed=5)  # one pair missing
    assert isinstance(ragged, list) and all(len(rows) <= 6 for rows in ragged)


# -- protocols on another scale --------------------------------------------------------------
def test_rlpa_judgements_are_scaled_to_100() -> None:
    # 0/1 judgements: AL(k) = 100 x the share of 1s; N-IR does not depend on the scale
    recs = records("m", {"p1": [0, 1, 1], "p2": [0, 0, 1], "p3": [1, 0, 1], "p4": [0, 1, 1]})
    al = alignment_levels(recs, n_boot=200, multiplier=100.0)
    assert al.al == pytest.approx([25.0, 50.0, 100.0])
    assert al.ir.value == pytest.approx(37.5)  # slope of 25, 50, 100 over k = 1, 2, 3
    plain = alignment_levels(recs, n_boot=200)
    assert al.n_ir.value == pytest.approx(plain.n_ir.value)
    assert all(0 <= low <= high <= 100 for low, high in zip(al.al_low, al.al_high))
