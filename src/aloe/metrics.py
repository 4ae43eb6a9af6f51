"""Stage 5 metrics: the ALOE alignment level per turn and how fast it rises, with bootstrap
confidence intervals that resample the benchmark's personas.

Notation (written once here, repeated next to each formula): a model's evaluation records give a
score s[p, k] in 1..5 for persona p = 1..P at turn k = 1..K, or no score (the judge's reply could
not be read, even when asked again). Missing scores are left out of every mean, never counted as
zero; how many are missing is reported next to each figure.

Confidence intervals are percentile bootstrap intervals: draw P personas with replacement B
times, recompute the statistic on each draw, and take the (1-c)/2 and (1+c)/2 quantiles. The
personas, not the single scores, are resampled because the K turns of one conversation are not
independent of each other.

Everything here is a pure function of evaluation records: nothing is read from or written to a
file (stage 5 writes `metrics.json`, `aloe.evaluation`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

Record = dict[str, Any]

DEFAULT_BOOT = 1000
DEFAULT_CONFIDENCE = 0.95


# ------------------------------------------------------------------------------------------
# The score matrix
# ------------------------------------------------------------------------------------------
@dataclass
class ScoreMatrix:
    """Scores of one model as a persona x turn array; NaN where a score is missing."""

    model: str
    personas: list[str]
    turns: list[int]
    scores: np.ndarray  # shape (P, K), float, NaN = missing (judge unreadable or turn not run)
    judged: np.ndarray  # shape (P, K), bool: the turn was run and judged (score or missing)


def score_matrix(records: Iterable[Record], model: str | None = None) -> ScoreMatrix:
    """Arrange one model's evaluation records by persona and turn.

    Raises ValueError when the records mix models (pass `model` to pick one) or hold the same
    (persona, turn) twice, which would count a turn double.
    """
    rows = list(records)
    models = sorted({str(r.get("model")) for r in rows})
    if model is None:
        if len(models) > 1:
            raise ValueError(f"records of several models ({', '.join(models)}): pass model=")
        model = models[0] if models else ""
    rows = [r for r in rows if str(r.get("model")) == model]
    personas = list(dict.fromkeys(str(r["persona_id"]) for r in rows))
    turns = sorted({int(r["turn"]) for r in rows})
    if turns:
        turns = list(range(1, max(turns) + 1))
    p_index = {p: i for i, p in enumerate(personas)}
    scores = np.full((len(personas), len(turns)), np.nan)
    judged = np.zeros((len(personas), len(turns)), dtype=bool)
    for r in rows:
        i, k = p_index[str(r["persona_id"])], int(r["turn"]) - 1
        if judged[i, k]:
            raise ValueError(f"model {model}: persona {r['persona_id']} turn {r['turn']} "
                             "is recorded twice")
        judged[i, k] = True
        score = r.get("score")
        if score is not None:
            scores[i, k] = float(score)
    return ScoreMatrix(model, personas, turns, scores, judged)


def _nanmean_columns(scores: np.ndarray) -> np.ndarray:
    """Column means over the scores present; NaN for a column with none (no warning)."""
    present = ~np.isnan(scores)
    count = present.sum(axis=-2)
    total = np.where(present, scores, 0.0).sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ------------------------------------------------------------------------------------------
# Trend statistics of an AL curve
# ------------------------------------------------------------------------------------------
def _fit(values: Sequence[float]) -> tuple[float, float]:
    """Least-squares line through (k, y_k), k = 1..K, over the y_k that are not NaN.

    slope = sum_k (k - k_mean)(y_k - y_mean) / sum_k (k - k_mean)^2
    R^2   = 1 - SS_res / SS_tot,  SS_res = sum_k (y_k - yhat_k)^2,  SS_tot = sum_k (y_k - y_mean)^2
    Returns (slope, R^2); slope is NaN with fewer than two points, R^2 is NaN when SS_tot = 0.
    """
    y = np.asarray(values, dtype=float)
    k = np.arange(1, len(y) + 1, dtype=float)
    keep = ~np.isnan(y)
    k, y = k[keep], y[keep]
    if len(y) < 2:
        return math.nan, math.nan
    dk, dy = k - k.mean(), y - y.mean()
    slope = float((dk * dy).sum() / (dk * dk).sum())
    ss_tot = float((dy * dy).sum())
    residual = dy - slope * dk  # y - yhat, since yhat = y_mean + slope (k - k_mean)
    ss_res = float((residual * residual).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return slope, r2


def improvement_rate(al: Sequence[float]) -> float:
    """IR: the least-squares slope of AL(k) over k = 1..K (score points gained per turn).

    IR = sum_k (k - k_mean)(AL(k) - AL_mean) / sum_k (k - k_mean)^2
    Turns whose AL is NaN (no score at all) are left out of the fit; NaN below two points.
    """
    return _fit(al)[0]


def normalized_improvement_rate(al: Sequence[float]) -> tuple[float, float]:
    """(N-IR, N-R^2): slope and R^2 of the least-squares fit to the min-max normalised AL.

    AL'(k) = (AL(k) - min_j AL(j)) / (max_j AL(j) - min_j AL(j)), so AL' runs from 0 to 1 and
    N-IR = sum_k (k - k_mean)(AL'(k) - AL'_mean) / sum_k (k - k_mean)^2
    N-R^2 = 1 - sum_k (AL'(k) - fit(k))^2 / sum_k (AL'(k) - AL'_mean)^2
    N-IR compares the shape of curves on different scales; N-R^2 says how steady (linear) the
    rise is. A constant series has no shape: (0.0, NaN).
    """
    y = np.asarray(al, dtype=float)
    present = y[~np.isnan(y)]
    if len(present) == 0:
        return math.nan, math.nan
    low, high = float(present.min()), float(present.max())
    if high == low:
        return (0.0, math.nan) if len(present) >= 2 else (math.nan, math.nan)
    return _fit((y - low) / (high - low))


def _curve_stats(al: np.ndarray) -> dict[str, float]:
    """The per-model figures computed from one AL curve (also on each bootstrap draw)."""
    ir = improvement_rate(al)
    n_ir, n_r2 = normalized_improvement_rate(al)
    with np.errstate(invalid="ignore"):
        mean_al = float(np.nanmean(al)) if np.any(~np.isnan(al)) else math.nan
    return {"mean_al": mean_al, "ir": ir, "n_ir": n_ir, "n_r2": n_r2}


# ------------------------------------------------------------------------------------------
# Bootstrap
# ------------------------------------------------------------------------------------------
def _resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    """B x n persona indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _interval(draws: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 0, ignoring NaN draws."""
    alpha = (1.0 - confidence) / 2.0
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            low = np.nanquantile(draws, alpha, axis=0)
            high = np.nanquantile(draws, 1.0 - alpha, axis=0)
    return low, high


@dataclass
class Estimate:
    """A statistic with its bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def to_json(self) -> dict[str, float | None]:
        return {"value": _num(self.value), "low": _num(self.low), "high": _num(self.high)}


@dataclass
class AlignmentLevels:
    """AL(k) of one model with its CI, the trend statistics with theirs, and missing counts."""

    model: str
    turns: list[int]
    al: list[float]  # AL(k), NaN where no persona has a score at turn k
    al_low: list[float]
    al_high: list[float]
    n_scored: list[int]  # scores present at turn k
    n_missing: list[int]  # turns judged but without a readable score
    n_personas: int
    confidence: float
    n_boot: int
    mean_al: Estimate = field(default_factory=lambda: Estimate(math.nan, math.nan, math.nan))
    ir: Estimate = field(default_factory=lambda: Estimate(math.nan, math.nan, math.nan))
    n_ir: Estimate = field(default_factory=lambda: Estimate(math.nan, math.nan, math.nan))
    n_r2: Estimate = field(default_factory=lambda: Estimate(math.nan, math.nan, math.nan))

    @property
    def missing_rate(self) -> float:
        """Missing scores / judged turns, over all turns."""
        judged = sum(self.n_scored) + sum(self.n_missing)
        return sum(self.n_missing) / judged if judged else math.nan

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("al", "al_low", "al_high"):
            data[key] = [_num(v) for v in data[key]]
        for key in ("mean_al", "ir", "n_ir", "n_r2"):
            data[key] = getattr(self, key).to_json()
        data["missing_rate"] = _num(self.missing_rate)
        return data


def alignment_levels(records: Iterable[Record], n_boot: int = DEFAULT_BOOT,
                     confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                     model: str | None = None) -> AlignmentLevels:
    """AL(k) for k = 1..K with bootstrap CIs that resample personas, and IR, N-IR, N-R^2.

    AL(k) = (1 / |P_k|) sum_{p in P_k} s[p, k], P_k = the personas with a score at turn k
    (missing scores excluded, not zero). mean AL = (1/K) sum_k AL(k). On each of `n_boot`
    draws of P personas with replacement, AL*(k) is recomputed, and IR, N-IR, N-R^2 and mean AL
    are recomputed from that AL* curve; the CI is the percentile interval of the draws.
    """
    matrix = score_matrix(records, model)
    al = _nanmean_columns(matrix.scores)
    n_scored = (~np.isnan(matrix.scores)).sum(axis=0)
    n_missing = (matrix.judged & np.isnan(matrix.scores)).sum(axis=0)
    result = AlignmentLevels(
        model=matrix.model, turns=matrix.turns, al=al.tolist(), al_low=[math.nan] * len(al),
        al_high=[math.nan] * len(al), n_scored=n_scored.tolist(), n_missing=n_missing.tolist(),
        n_personas=len(matrix.personas), confidence=confidence, n_boot=n_boot)
    if not matrix.personas:
        return result
    point = _curve_stats(al)
    draws = _resample(len(matrix.personas), n_boot, seed)
    boot_al = _nanmean_columns(matrix.scores[draws])  # (B, K)
    low, high = _interval(boot_al, confidence)
    result.al_low, result.al_high = low.tolist(), high.tolist()
    stats = np.array([[s[name] for name in ("mean_al", "ir", "n_ir", "n_r2")]
                      for s in map(_curve_stats, boot_al)])
    s_low, s_high = _interval(stats, confidence)
    for j, name in enumerate(("mean_al", "ir", "n_ir", "n_r2")):
        setattr(result, name, Estimate(point[name], float(s_low[j]), float(s_high[j])))
    return result


# ------------------------------------------------------------------------------------------
# Paired differences between two models on the same personas
# ------------------------------------------------------------------------------------------
@dataclass
class PairedDifference:
    """Model b minus model a, on the personas both were evaluated on."""

    a: str
    b: str
    turns: list[int]
    n_personas: int
    diff: list[float]  # mean over personas of s_b[p, k] - s_a[p, k] (both scores present)
    diff_low: list[float]
    diff_high: list[float]
    mean_diff: Estimate
    ir_diff: Estimate
    confidence: float
    n_boot: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("diff", "diff_low", "diff_high"):
            data[key] = [_num(v) for v in data[key]]
        data["mean_diff"] = self.mean_diff.to_json()
        data["ir_diff"] = self.ir_diff.to_json()
        return data


def paired_difference(records_a: Iterable[Record], records_b: Iterable[Record],
                      n_boot: int = DEFAULT_BOOT, confidence: float = DEFAULT_CONFIDENCE,
                      seed: int = 0) -> PairedDifference:
    """How much better model b scores than model a on the same personas, with bootstrap CIs.

    d[p, k] = s_b[p, k] - s_a[p, k] where both scores are present (else missing).
    diff(k) = mean_p d[p, k];  mean diff = (1/K) sum_k diff(k);
    IR diff = IR(AL_b) - IR(AL_a), both AL curves taken over the shared personas.
    One bootstrap draw resamples the shared personas once for both models (paired), so the
    persona-to-persona spread that both models share cancels out of the interval.
    """
    a, b = score_matrix(records_a), score_matrix(records_b)
    shared = [p for p in a.personas if p in set(b.personas)]
    turns = list(range(1, min(len(a.turns), len(b.turns)) + 1))
    k = len(turns)
    sa = a.scores[[a.personas.index(p) for p in shared]][:, :k]
    sb = b.scores[[b.personas.index(p) for p in shared]][:, :k]
    d = sb - sa  # NaN where either is missing

    def stats(rows_a: np.ndarray, rows_b: np.ndarray,
              rows_d: np.ndarray) -> tuple[np.ndarray, float, float]:
        per_turn = _nanmean_columns(rows_d)
        mean_diff = float(np.nanmean(per_turn)) if np.any(~np.isnan(per_turn)) else math.nan
        ir = improvement_rate(_nanmean_columns(rows_b)) - improvement_rate(_nanmean_columns(rows_a))
        return per_turn, mean_diff, ir

    per_turn, mean_diff, ir_diff = stats(sa, sb, d)
    nan_k = [math.nan] * k
    if not shared or not k:
        empty = Estimate(math.nan, math.nan, math.nan)
        return PairedDifference(a.model, b.model, turns, len(shared), per_turn.tolist(), nan_k,
                                nan_k, empty, empty, confidence, n_boot)
    draws = _resample(len(shared), n_boot, seed)
    boot = [stats(sa[i], sb[i], d[i]) for i in draws]
    low, high = _interval(np.array([t for t, _, _ in boot]), confidence)
    s_low, s_high = _interval(np.array([[m, ir] for _, m, ir in boot]), confidence)
    return PairedDifference(a.model, b.model, turns, len(shared), per_turn.tolist(), low.tolist(),
                            high.tolist(), Estimate(mean_diff, float(s_low[0]), float(s_high[0])),
                            Estimate(ir_diff, float(s_low[1]), float(s_high[1])), confidence,
                            n_boot)


# ------------------------------------------------------------------------------------------
# Everything a run computes (what stage 5 writes to metrics.json)
# ------------------------------------------------------------------------------------------
def _expected_al(records: list[Record]) -> list[float | None] | None:
    """Mean probability-weighted judge score per turn, where the judge gave log-probabilities."""
    values: dict[int, list[float]] = {}
    for r in records:
        if r.get("expected_score") is not None:
            values.setdefault(int(r["turn"]), []).append(float(r["expected_score"]))
    if not values:
        return None
    turns = range(1, max(int(r["turn"]) for r in records) + 1)
    return [float(np.mean(values[k])) if k in values else None for k in turns]


def score_counts(records: Iterable[Record]) -> dict[str, int]:
    """How many judgements gave each score ("1".."5"), and how many gave none ("missing").

    A count per score says what a mean hides: a mean AL of 1.0 is every reply scored 1."""
    counts: dict[str, int] = {}
    for r in records:
        key = "missing" if r.get("score") is None else str(int(r["score"]))
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def summarise(by_model: Mapping[str, list[Record]], *, n_boot: int = DEFAULT_BOOT,
              confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
              models: Sequence[str] | None = None) -> dict[str, Any]:
    """Every figure of stage 5, as one JSON-ready dict (the content of `metrics.json`).

    `by_model` maps each model's name to its evaluation records. `models` fixes the order
    (default: as given); paired differences are computed for every later model minus every
    earlier one (e.g. sft - base, dpo - base, dpo - sft).
    """
    order = [m for m in (models or []) if m in by_model] + \
            [m for m in by_model if m not in (models or [])]
    summary: dict[str, Any] = {"confidence": confidence, "bootstrap_samples": n_boot,
                               "seed": seed, "models": {}, "paired": {}}
    for name in order:
        levels = alignment_levels(by_model[name], n_boot=n_boot, confidence=confidence,
                                  seed=seed, model=name).to_json()
        levels["score_counts"] = score_counts(by_model[name])
        expected = _expected_al(by_model[name])
        if expected is not None:
            levels["expected_al"] = expected
        summary["models"][name] = levels
    for a, b in combinations(order, 2):
        diff = paired_difference(by_model[a], by_model[b], n_boot=n_boot,
                                 confidence=confidence, seed=seed)
        summary["paired"][f"{b} - {a}"] = diff.to_json()
    return summary


def summary_table(summary: dict[str, Any]) -> "Any":
    """One row per model: mean AL, IR, N-IR, N-R^2 with their CIs, and the missing rate."""
    import pandas as pd

    rows = []
    for name, m in summary["models"].items():
        row: dict[str, Any] = {"model": name, "personas": m["n_personas"],
                               "turns": len(m["turns"])}
        for key, label in (("mean_al", "mean AL"), ("ir", "IR"), ("n_ir", "N-IR"),
                           ("n_r2", "N-R²")):
            est = m[key]
            row[label] = math.nan if est["value"] is None else est["value"]
            row[f"{label} CI"] = _format_ci(est["low"], est["high"])
        row["missing rate"] = math.nan if m["missing_rate"] is None else m["missing_rate"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def paired_table(summary: dict[str, Any]) -> "Any":
    """One row per model pair: mean per-turn difference and IR difference with CIs."""
    import pandas as pd

    rows = []
    for label, p in summary.get("paired", {}).items():
        mean_diff, ir_diff = p["mean_diff"]["value"], p["ir_diff"]["value"]
        rows.append({"comparison": label, "personas": p["n_personas"],
                     "mean diff": math.nan if mean_diff is None else mean_diff,
                     "mean diff CI": _format_ci(p["mean_diff"]["low"], p["mean_diff"]["high"]),
                     "IR diff": math.nan if ir_diff is None else ir_diff,
                     "IR diff CI": _format_ci(p["ir_diff"]["low"], p["ir_diff"]["high"])})
    return pd.DataFrame(rows).set_index("comparison") if rows else pd.DataFrame()


def _format_ci(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "n/a"
    return f"[{low:.3f}, {high:.3f}]"


def _num(value: Any) -> float | None:
    """JSON has no NaN: a missing figure is written as null."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value
