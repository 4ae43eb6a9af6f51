"""Agreement statistics (aloe.analysis.agreement) against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from aloe.analysis.agreement import (
    agreement,
    cohen_kappa,
    observed_agreement,
    ranks,
    spearman,
    weighted_kappa,
)


def two_by_two(yy: int, yn: int, ny: int, nn: int) -> tuple[list[int], list[int]]:
    """Ratings of two raters from a 2x2 table: yy items both said 1, yn a said 1 and b 0..."""
    a = [1] * yy + [1] * yn + [0] * ny + [0] * nn
    b = [1] * yy + [0] * yn + [1] * ny + [0] * nn
    return a, b


def test_cohen_kappa_hand_worked() -> None:
    # 50 items: both yes 20, a yes b no 5, a no b yes 10, both no 15.
    # p_o = 35/50 = .7; p_a(yes) = 25/50 = .5, p_b(yes) = 30/50 = .6;
    # p_e = .5 * .6 + .5 * .4 = .5; kappa = (.7 - .5) / (1 - .5) = .4
    a, b = two_by_two(20, 5, 10, 15)
    assert observed_agreement(a, b) == pytest.approx(0.7)
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    # perfect agreement, and agreement exactly at chance level
    assert cohen_kappa([1, 2, 3, 1], [1, 2, 3, 1]) == pytest.approx(1.0)
    # a: 1 1 0 0, b: 1 0 1 0: p_o = .5, p_e = .5 * .5 + .5 * .5 = .5 -> 0
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.0)
    # systematic disagreement: below zero. a 1 1 0 0, b 0 0 1 1: p_o 0, p_e .5 -> -1
    assert cohen_kappa([1, 1, 0, 0], [0, 0, 1, 1]) == pytest.approx(-1.0)


def test_kappa_is_undefined_when_both_raters_use_one_category() -> None:
    # p_e = 1: 0/0, never a made-up 1
    assert math.isnan(cohen_kappa([3, 3, 3], [3, 3, 3]))
    assert math.isnan(cohen_kappa([], []))
    assert math.isnan(weighted_kappa([3, 3], [3, 3], [1, 2, 3, 4, 5]))


def test_weighted_kappa_hand_worked() -> None:
    # a = 1 2 3, b = 1 3 3 over categories 1..3.
    # O: (1,1) (2,3) (3,3), 1/3 each. p_a = 1/3 each; p_b = (1/3, 0, 2/3).
    # quadratic w = (i-j)^2 / 4: sum w O = w(2,3) / 3 = 1/12.
    # sum w E = (1/3)(1/4) sum_j p_b(j) sum_i (i-j)^2, sum_i (i-j)^2 = 5, 2, 5 for j = 1, 2, 3
    #         = (1/12) (5/3 + 0 + 10/3) = 5/12  ->  k_w = 1 - (1/12)/(5/12) = .8
    assert weighted_kappa([1, 2, 3], [1, 3, 3], [1, 2, 3]) == pytest.approx(0.8)
    # linear w = |i-j| / 2: sum w O = (1/2)(1/3) = 1/6; sum_i |i-j| = 3, 2, 3;
    # sum w E = (1/3)(1/2)(3 * 1/3 + 3 * 2/3) = 1/2  ->  k_w = 1 - (1/6)/(1/2) = 2/3
    assert weighted_kappa([1, 2, 3], [1, 3, 3], [1, 2, 3], "linear") == pytest.approx(2 / 3)
    # a near miss costs less than a far one: 4 vs 5 keeps more agreement than 1 vs 5
    near = weighted_kappa([1, 2, 3, 4, 5, 5], [1, 2, 3, 4, 5, 4], [1, 2, 3, 4, 5])
    far = weighted_kappa([1, 2, 3, 4, 5, 5], [1, 2, 3, 4, 5, 1], [1, 2, 3, 4, 5])
    assert 0 < far < near < 1
    with pytest.raises(ValueError, match="rating 6 is not one of the categories"):
        weighted_kappa([1, 6], [1, 2], [1, 2, 3, 4, 5])


def test_weighted_kappa_of_two_categories_is_cohens() -> None:
    a, b = two_by_two(20, 5, 10, 15)
    assert weighted_kappa(a, b, [0, 1]) == pytest.approx(cohen_kappa(a, b)) == \
        pytest.approx(0.4)


def test_spearman_hand_worked() -> None:
    # no ties: d = 0 1 1 0, rho = 1 - 6 * 2 / (4 * 15) = .8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties take their mean rank: x ranks 1 2.5 2.5 4, y ranks 1 2 3.5 3.5;
    # dx = -1.5 0 0 1.5, dy = -1.5 -.5 1 1: sum dx dy = 3.75, sum dx^2 = sum dy^2 = 4.5
    assert list(ranks([1, 2, 2, 3])) == [1.0, 2.5, 2.5, 4.0]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(3.75 / 4.5)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([2, 2, 2], [1, 2, 3]))  # a constant rater has no ranks
    assert math.isnan(spearman([1], [1]))


def test_agreement_gives_intervals_that_hold_the_estimate() -> None:
    a = [1, 2, 3, 4, 5, 3, 4, 2, 5, 1, 3, 4]
    b = [1, 2, 4, 4, 5, 3, 3, 2, 4, 2, 3, 5]
    result = agreement(a, b, [1, 2, 3, 4, 5], n_boot=400, seed=3)
    assert result["n"] == 12 and result["n_units"] == 12 and result["weights"] == "quadratic"
    for key in ("agreement", "kappa", "weighted_kappa", "spearman"):
        est = result[key]
        assert est["low"] <= est["value"] <= est["high"], key
    assert result["agreement"]["value"] == pytest.approx(7 / 12)
    assert result["weighted_kappa"]["value"] > result["kappa"]["value"]  # near misses count
    # clusters: both items of a cluster are drawn together; 2 units, not 4
    clustered = agreement([1, 1, 0, 0], [1, 1, 0, 1], [0, 1], clusters=["p", "p", "q", "q"],
                          n_boot=200)
    assert clustered["n_units"] == 2 and "weighted_kappa" not in clustered
    # p_o = .75; p_a(1) = .5, p_b(1) = .75: p_e = .5 * .75 + .5 * .25 = .5 -> (.75-.5)/.5
    assert clustered["kappa"]["value"] == pytest.approx(0.5)


def test_agreement_of_no_items_is_all_undefined() -> None:
    result = agreement([], [], [0, 1], n_boot=50)
    assert result["n"] == 0 and result["kappa"]["value"] is None
