"""How far two raters agree: Cohen's kappa, weighted kappa, Spearman's rank correlation, with
percentile bootstrap intervals. Pure functions: pairs of ratings in, figures out.

Used for the judge measured (stage 5): the main judge against a second judge of another model
family on a sample of replies, and against people who rated a blinded sample (the human-rating
kit, `aloe.presentation.ratings`). Notation: n items, rater a gave a_i and rater b gave b_i, both
from the same ordered categories c_1 < ... < c_m (1..5 for the ALOE judge, 0/1 for RLPA's).

- observed agreement  p_o = (1/n) sum_i [a_i = b_i]
- Cohen's kappa       k = (p_o - p_e) / (1 - p_e),  p_e = sum_c p_a(c) p_b(c)
  (p_a(c): the share of items rater a put in category c): agreement beyond what two raters
  with these marginals would reach by chance; 1 perfect, 0 chance, below 0 worse than chance.
- weighted kappa      k_w = 1 - sum_ij w_ij O_ij / sum_ij w_ij E_ij
  O_ij: the share of items with a in c_i and b in c_j; E_ij = p_a(c_i) p_b(c_j); disagreement
  weights w_ij = ((i - j) / (m - 1))^2 (quadratic) or |i - j| / (m - 1) (linear), so that a 4
  against a 5 costs less than a 1 against a 5. With two categories both equal Cohen's kappa.
- Spearman's rho      the Pearson correlation of the ranks (ties take their mean rank).

Every statistic is NaN where it is undefined (a rater who used one category only leaves kappa
at 0/0; a constant rater has no ranks to correlate), never a made-up 0 or 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from aloe.analysis.metrics import bootstrap_rows, finite_or_none

WEIGHTS = ("quadratic", "linear")


def _pairs(a: Sequence[Any], b: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    if len(a) != len(b):
        raise ValueError(f"two raters must rate the same items: {len(a)} and {len(b)} ratings")
    return np.asarray(a, dtype=float), np.asarray(b, dtype=float)


def observed_agreement(a: Sequence[Any], b: Sequence[Any]) -> float:
    """p_o: the share of items both raters put in the same category."""
    x, y = _pairs(a, b)
    return float(np.mean(x == y)) if len(x) else math.nan


def _table(x: np.ndarray, y: np.ndarray, categories: Sequence[Any]) -> np.ndarray:
    """O: the m x m table of shares, rows rater a, columns rater b."""
    index = {float(c): i for i, c in enumerate(categories)}
    unknown = sorted({v for v in np.concatenate([x, y]) if v not in index})
    if unknown:
        raise ValueError(f"rating {unknown[0]:g} is not one of the categories "
                         f"{', '.join(str(c) for c in categories)}")
    table = np.zeros((len(categories), len(categories)))
    for i, j in zip(x, y):
        table[index[i], index[j]] += 1
    return table / max(len(x), 1)


def cohen_kappa(a: Sequence[Any], b: Sequence[Any],
                categories: Sequence[Any] | None = None) -> float:
    """k = (p_o - p_e) / (1 - p_e); NaN when p_e = 1 or there are no items."""
    x, y = _pairs(a, b)
    if not len(x):
        return math.nan
    cats = sorted(set(x) | set(y)) if categories is None else list(categories)
    table = _table(x, y, cats)
    p_o = float(np.trace(table))
    p_e = float(table.sum(axis=1) @ table.sum(axis=0))
    return (p_o - p_e) / (1.0 - p_e) if p_e < 1.0 else math.nan


def weighted_kappa(a: Sequence[Any], b: Sequence[Any], categories: Sequence[Any],
                   weights: str = "quadratic") -> float:
    """k_w = 1 - sum w O / sum w E over the ordered `categories`; NaN when sum w E = 0."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    x, y = _pairs(a, b)
    m = len(categories)
    if not len(x) or m < 2:
        return math.nan
    observed = _table(x, y, categories)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices((m, m))
    distance = np.abs(i - j) / (m - 1)
    w = distance ** 2 if weights == "quadratic" else distance
    chance = float((w * expected).sum())
    return 1.0 - float((w * observed).sum()) / chance if chance > 0 else math.nan


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n; tied values share the mean of the ranks they span."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    result = np.empty(len(v))
    start = 0
    while start < len(v):
        end = start
        while end + 1 < len(v) and v[order[end + 1]] == v[order[start]]:
            end += 1
        result[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return result


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the (mean-tied) ranks; NaN when either side
    is constant or there are fewer than two items."""
    x, y = _pairs(a, b)
    if len(x) < 2:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum()) / denominator if denominator > 0 else math.nan


def _estimate(value: float, draws: np.ndarray, confidence: float) -> dict[str, float | None]:
    alpha = (1.0 - confidence) / 2.0
    finite = draws[np.isfinite(draws)]
    low = float(np.quantile(finite, alpha)) if len(finite) else math.nan
    high = float(np.quantile(finite, 1.0 - alpha)) if len(finite) else math.nan
    return {"value": finite_or_none(value), "low": finite_or_none(low),
            "high": finite_or_none(high)}


def agreement(a: Sequence[Any], b: Sequence[Any], categories: Sequence[Any], *,
              clusters: Sequence[str] | None = None, weights: str = "quadratic",
              n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Every agreement figure of two raters with percentile bootstrap intervals.

    A bootstrap draw resamples the items' `clusters` with replacement (default: each item its
    own), taking every item of a drawn cluster (e.g. all sampled replies of one profile), and
    recomputes each statistic; draws where one is undefined are left out of its interval.
    """
    x, y = _pairs(a, b)
    cats = list(categories)
    ordinal = len(cats) > 2

    def figures(rows: np.ndarray) -> tuple[float, float, float, float]:
        xa, yb = x[rows], y[rows]
        return (observed_agreement(xa, yb), cohen_kappa(xa, yb, cats),
                weighted_kappa(xa, yb, cats, weights) if ordinal else math.nan,
                spearman(xa, yb))

    everything = np.arange(len(x))
    point = figures(everything)
    result: dict[str, Any] = {"n": int(len(x)), "categories": cats,
                              "weights": weights if ordinal else None,
                              "confidence": confidence, "bootstrap_samples": n_boot}
    if len(x):
        units = list(clusters) if clusters is not None else [str(i) for i in everything]
        result["n_units"] = len(set(units))
        draws = np.array([figures(np.asarray(rows)) for rows in bootstrap_rows(units, n_boot,
                                                                               seed)])
    else:
        result["n_units"] = 0
        draws = np.full((1, 4), math.nan)
    for column, name in enumerate(("agreement", "kappa", "weighted_kappa", "spearman")):
        if name == "weighted_kappa" and not ordinal:
            continue
        result[name] = _estimate(point[column], draws[:, column], confidence)
    return result


