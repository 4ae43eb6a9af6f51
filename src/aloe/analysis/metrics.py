"""Stage 5 metrics: the ALOE alignment level per turn and how fast it rises, with bootstrap
confidence intervals that resample the benchmark's personas.

Notation (written once here, repeated next to each formula): a model's evaluation records give a
score s[p, k] in 1..5 for persona p = 1..P at turn k = 1..K, or no score (the judge's reply could
not be read, even when asked again). Missing scores are left out of every mean, never counted as
zero; how many are missing is reported next to each figure.

Confidence intervals are percentile bootstrap intervals: resample the benchmark's units with
replacement B times, recompute the statistic on each draw, and take the (1-c)/2 and (1+c)/2
quantiles. What is resampled follows the benchmark's design. The official benchmark crosses
20 profiles with the same 5 personalities, so its 100 personas are not independent in two ways:
personas of one profile share it, and personas of one personality share that. `unit="two-way"`
(the default for such a crossed benchmark) draws profiles and personalities independently, each
with replacement, and takes every persona at a drawn (profile, personality) pair: the interval
speaks for new users (new profiles and new personalities), not only for new profiles with these
5 personalities. `unit="profile"` (the default when personas name their profile but are not
crossed) draws profiles and takes every persona of each; `unit="persona"` draws personas. Never
single scores: the K turns of one conversation are not independent of each other either.

Everything here is a pure function of evaluation records: nothing is read from or written to a
file (stage 5 writes `metrics.json`, `aloe.stages.evaluation`).
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
UNITS = ("two-way", "profile", "persona")


@dataclass
class ScoreMatrix:
    """Scores of one model as a persona x turn array; NaN where a score is missing."""

    model: str
    personas: list[str]
    turns: list[int]
    scores: np.ndarray  # shape (P, K), float, NaN = missing (judge unreadable or turn not run)
    judged: np.ndarray  # shape (P, K), bool: the turn was run and judged (score or missing)
    profiles: list[str | None] = field(default_factory=list)  # per persona; None: not recorded
    personalities: list[str | None] = field(default_factory=list)  # likewise
    expected: np.ndarray | None = None  # (P, K) probability-weighted scores, NaN where none
    truncated: np.ndarray | None = None  # (P, K) 1/0 reply cut at the token limit, NaN: unknown

    def clusters(self, unit: str) -> list[str]:
        """The one-way bootstrap unit of each persona row: its profile, or itself."""
        if unit == "profile":
            return [p if p is not None else persona
                    for persona, p in zip(self.personas, self.profiles)]
        return list(self.personas)

    def _personality(self, row: int) -> str:
        known = self.personalities[row] if row < len(self.personalities) else None
        return known if known is not None else self.personas[row]

    def unit_sizes(self, unit: str) -> dict[str, int]:
        """How many of each resampled unit there are: {"profile": 20, "personality": 5}."""
        if unit == "two-way":
            return {"profile": len(set(self.clusters("profile"))),
                    "personality": len({self._personality(r) for r in range(len(self.personas))})}
        return {unit: len(set(self.clusters(unit)))}

    def draws(self, unit: str, n_boot: int, seed: int,
              rows: Sequence[int] | None = None) -> Draws:
        """The bootstrap draws of `unit` over the persona rows `rows` (default all), as
        indices into those rows."""
        picked = list(range(len(self.personas))) if rows is None else list(rows)
        if unit == "two-way":
            profiles = self.clusters("profile")
            return two_way_rows([profiles[r] for r in picked],
                                [self._personality(r) for r in picked], n_boot, seed)
        clusters = self.clusters(unit)
        return bootstrap_rows([clusters[r] for r in picked], n_boot, seed)


def default_unit(records: Iterable[Record]) -> str:
    """`two-way` when the records' personas cross profiles with personalities, else `profile`
    when every record names its profile, else `persona`."""
    rows = list(records)
    if not rows or not all(r.get("profile_id") for r in rows):
        return "persona"
    return "two-way" if is_crossed(rows) else "profile"


def is_crossed(records: Iterable[Record]) -> bool:
    """Whether profiles are crossed with personalities: every record names its personality,
    there are at least two of each, and every personality goes with at least two profiles (a
    personality of one profile only is nested in it: resampling profiles covers it)."""
    profiles_of: dict[str, set[str]] = {}
    for r in records:
        if not r.get("personality_id") or not r.get("profile_id"):
            return False
        profiles_of.setdefault(str(r["personality_id"]), set()).add(str(r["profile_id"]))
    profiles = set().union(*profiles_of.values()) if profiles_of else set()
    return (len(profiles) >= 2 and len(profiles_of) >= 2
            and all(len(p) >= 2 for p in profiles_of.values()))


def score_matrix(records: Iterable[Record], model: str | None = None,
                 multiplier: float = 1.0) -> ScoreMatrix:
    """Arrange one model's evaluation records by persona and turn.

    `multiplier` puts the judgements on the protocol's AL scale (RLPA's 0/1 x 100); the
    expected scores and truncation flags are left as they are. Raises ValueError when the
    records mix models (pass `model` to pick one) or hold the same (persona, turn) twice,
    which would count a turn double.
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
    shape = (len(personas), len(turns))
    scores, expected, truncated = (np.full(shape, np.nan) for _ in range(3))
    judged = np.zeros(shape, dtype=bool)
    profiles: list[str | None] = [None] * len(personas)
    personalities: list[str | None] = [None] * len(personas)
    for r in rows:
        i, k = p_index[str(r["persona_id"])], int(r["turn"]) - 1
        if judged[i, k]:
            raise ValueError(f"model {model}: persona {r['persona_id']} turn {r['turn']} "
                             "is recorded twice")
        judged[i, k] = True
        profiles[i] = str(r["profile_id"]) if r.get("profile_id") else profiles[i]
        personalities[i] = (str(r["personality_id"]) if r.get("personality_id")
                            else personalities[i])
        for target, value in ((scores, r.get("score")), (expected, r.get("expected_score")),
                              (truncated, r.get("truncated"))):
            if value is not None:
                target[i, k] = float(value) * (multiplier if target is scores else 1.0)
    return ScoreMatrix(model, personas, turns, scores, judged, profiles, personalities, expected,
                       truncated)


def nanmean_columns(scores: np.ndarray) -> np.ndarray:
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
Draws = np.ndarray | list[np.ndarray]  # row indices per draw: a (B, n) array, or B arrays


def bootstrap_rows(clusters: Sequence[str], n_boot: int, seed: int) -> Draws:
    """B draws of row indices: each draw takes G of the G clusters with replacement and every
    row of each cluster it takes. With one row per cluster (unit persona) a draw is n rows drawn
    with replacement; with equal clusters the draws form one (B, n) array."""
    groups: dict[str, list[int]] = {}
    for row, cluster in enumerate(clusters):
        groups.setdefault(cluster, []).append(row)
    members = list(groups.values())
    picks = np.random.default_rng(seed).integers(0, len(members), size=(n_boot, len(members)))
    if len({len(m) for m in members}) == 1:
        return np.asarray(members)[picks].reshape(n_boot, -1)
    return [np.concatenate([members[j] for j in row]) for row in picks]


def two_way_rows(profiles: Sequence[str], personalities: Sequence[str], n_boot: int,
                 seed: int) -> Draws:
    """B draws of row indices for a crossed design: each draw takes G of the G profiles and H
    of the H personalities, each with replacement and independently, and every row at each
    drawn (profile, personality) pair (a pair drawn twice over counts twice). A complete cross
    with one row a pair gives one (B, G x H) array."""
    g_index = {g: i for i, g in enumerate(dict.fromkeys(profiles))}
    h_index = {h: j for j, h in enumerate(dict.fromkeys(personalities))}
    cells: dict[tuple[int, int], list[int]] = {}
    for row, (g, h) in enumerate(zip(profiles, personalities)):
        cells.setdefault((g_index[g], h_index[h]), []).append(row)
    rng = np.random.default_rng(seed)
    g_picks = rng.integers(0, len(g_index), size=(n_boot, len(g_index)))
    h_picks = rng.integers(0, len(h_index), size=(n_boot, len(h_index)))
    if len(cells) == len(g_index) * len(h_index) and all(len(c) == 1 for c in cells.values()):
        grid = np.empty((len(g_index), len(h_index)), dtype=int)
        for (i, j), (row,) in cells.items():
            grid[i, j] = row
        return grid[g_picks[:, :, None], h_picks[:, None, :]].reshape(n_boot, -1)
    return [np.array([row for i in g_picks[b] for j in h_picks[b] for row in cells.get((i, j), ())],
                     dtype=int) for b in range(n_boot)]


def boot_means(values: np.ndarray, draws: Draws) -> np.ndarray:
    """Per draw, the column means over the rows it drew (NaN left out): shape (B, K)."""
    if isinstance(draws, np.ndarray):
        return nanmean_columns(values[draws])
    return np.array([nanmean_columns(values[rows]) for rows in draws])


def _shares(flags: np.ndarray | None, judged: np.ndarray) -> list[float | None]:
    """Per turn, the share of 1s among the judged rows that say (None: none says)."""
    if flags is None:
        return []
    shares: list[float | None] = []
    for k in range(flags.shape[1]):
        known = flags[judged[:, k] & ~np.isnan(flags[:, k]), k]
        shares.append(float(known.mean()) if len(known) else None)
    return shares


def percentile_interval(draws: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
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
        return {"value": finite_or_none(self.value), "low": finite_or_none(self.low),
                "high": finite_or_none(self.high)}


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
    unit: str = "persona"  # what the bootstrap resamples: "two-way", "profile" or "persona"
    n_units: int = 0  # how many of them (two-way: the fewer of profiles and personalities)
    unit_sizes: dict[str, int] = field(default_factory=dict)  # {"profile": 20, ...}
    mean_al: Estimate = field(default_factory=lambda: Estimate(math.nan, math.nan, math.nan))
    ir: Estimate = field(default_factory=lambda: Estimate(math.nan, math.nan, math.nan))
    n_ir: Estimate = field(default_factory=lambda: Estimate(math.nan, math.nan, math.nan))
    n_r2: Estimate = field(default_factory=lambda: Estimate(math.nan, math.nan, math.nan))
    # mean probability-weighted score per turn (from the judge's log-probabilities), with CIs;
    # empty when no record has one
    expected_al: list[float] = field(default_factory=list)
    expected_al_low: list[float] = field(default_factory=list)
    expected_al_high: list[float] = field(default_factory=list)
    # share of replies cut at the token limit per turn; None where no record says
    truncated: list[float | None] = field(default_factory=list)

    @property
    def missing_rate(self) -> float:
        """Missing scores / judged turns, over all turns."""
        judged = sum(self.n_scored) + sum(self.n_missing)
        return sum(self.n_missing) / judged if judged else math.nan

    @property
    def truncated_rate(self) -> float | None:
        """Replies cut at the token limit / replies that say, over all turns."""
        known = [v for v in self.truncated if v is not None]
        return float(np.mean(known)) if known else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("al", "al_low", "al_high", "truncated"):
            data[key] = [finite_or_none(v) for v in data[key]]
        for key in ("mean_al", "ir", "n_ir", "n_r2"):
            data[key] = getattr(self, key).to_json()
        data["missing_rate"] = finite_or_none(self.missing_rate)
        data["truncated_rate"] = finite_or_none(self.truncated_rate)
        expected = [data.pop(key) for key in ("expected_al", "expected_al_low",
                                               "expected_al_high")]
        if expected[0]:
            data["expected_al"] = {name: [finite_or_none(v) for v in values] for name, values
                                   in zip(("value", "low", "high"), expected)}
        return data


def alignment_levels(records: Iterable[Record], n_boot: int = DEFAULT_BOOT,
                     confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                     model: str | None = None, unit: str | None = None,
                     multiplier: float = 1.0) -> AlignmentLevels:
    """AL(k) for k = 1..K with bootstrap CIs, and IR, N-IR, N-R^2 with theirs.

    AL(k) = (1 / |P_k|) sum_{p in P_k} s[p, k], P_k = the personas with a score at turn k
    (missing scores excluded, not zero). mean AL = (1/K) sum_k AL(k). On each of `n_boot`
    draws of the units (`unit`: "two-way" draws profiles and personalities and takes the
    personas at the pairs drawn; "profile" takes all personas of each profile drawn; "persona"
    draws personas; the default follows the records, `default_unit`) with replacement,
    AL*(k) is recomputed, and IR, N-IR, N-R^2 and mean AL are recomputed from that AL* curve;
    the CI is the percentile interval of the draws. The expected AL (from the judge's
    log-probabilities, where given) gets its intervals from the same draws.
    """
    rows = list(records)
    unit = unit or default_unit(rows)
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    matrix = score_matrix(rows, model, multiplier)
    al = nanmean_columns(matrix.scores)
    n_scored = (~np.isnan(matrix.scores)).sum(axis=0)
    n_missing = (matrix.judged & np.isnan(matrix.scores)).sum(axis=0)
    sizes = matrix.unit_sizes(unit)
    result = AlignmentLevels(
        model=matrix.model, turns=matrix.turns, al=al.tolist(), al_low=[math.nan] * len(al),
        al_high=[math.nan] * len(al), n_scored=n_scored.tolist(), n_missing=n_missing.tolist(),
        n_personas=len(matrix.personas), confidence=confidence, n_boot=n_boot, unit=unit,
        n_units=min(sizes.values(), default=0), unit_sizes=sizes,
        truncated=_shares(matrix.truncated, matrix.judged))
    if not matrix.personas:
        return result
    point = _curve_stats(al)
    draws = matrix.draws(unit, n_boot, seed)
    if matrix.expected is not None and not np.isnan(matrix.expected).all():
        e_low, e_high = percentile_interval(boot_means(matrix.expected, draws), confidence)
        result.expected_al = nanmean_columns(matrix.expected).tolist()
        result.expected_al_low, result.expected_al_high = e_low.tolist(), e_high.tolist()
    boot_al = boot_means(matrix.scores, draws)  # (B, K)
    low, high = percentile_interval(boot_al, confidence)
    result.al_low, result.al_high = low.tolist(), high.tolist()
    stats = np.array([[s[name] for name in ("mean_al", "ir", "n_ir", "n_r2")]
                      for s in map(_curve_stats, boot_al)])
    s_low, s_high = percentile_interval(stats, confidence)
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
    unit: str = "persona"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("diff", "diff_low", "diff_high"):
            data[key] = [finite_or_none(v) for v in data[key]]
        data["mean_diff"] = self.mean_diff.to_json()
        data["ir_diff"] = self.ir_diff.to_json()
        return data


def paired_difference(records_a: Iterable[Record], records_b: Iterable[Record],
                      n_boot: int = DEFAULT_BOOT, confidence: float = DEFAULT_CONFIDENCE,
                      seed: int = 0, unit: str | None = None,
                      multiplier: float = 1.0) -> PairedDifference:
    """How much better model b scores than model a on the same personas, with bootstrap CIs.

    d[p, k] = s_b[p, k] - s_a[p, k] where both scores are present (else missing).
    diff(k) = mean_p d[p, k];  mean diff = (1/K) sum_k diff(k);
    IR diff = IR(AL_b) - IR(AL_a), both AL curves taken over the shared personas.
    One bootstrap draw resamples the shared personas' units (profiles, or personas: see
    `alignment_levels`) once for both models (paired), so the spread between users that both
    models share cancels out of the interval.
    """
    rows_a = list(records_a)
    unit = unit or default_unit(rows_a)
    a, b = score_matrix(rows_a, multiplier=multiplier), score_matrix(records_b,
                                                                     multiplier=multiplier)
    shared = [p for p in a.personas if p in set(b.personas)]
    turns = list(range(1, min(len(a.turns), len(b.turns)) + 1))
    k = len(turns)
    sa = a.scores[[a.personas.index(p) for p in shared]][:, :k]
    sb = b.scores[[b.personas.index(p) for p in shared]][:, :k]
    d = sb - sa  # NaN where either is missing

    def stats(rows_a: np.ndarray, rows_b: np.ndarray,
              rows_d: np.ndarray) -> tuple[np.ndarray, float, float]:
        per_turn = nanmean_columns(rows_d)
        mean_diff = float(np.nanmean(per_turn)) if np.any(~np.isnan(per_turn)) else math.nan
        ir = improvement_rate(nanmean_columns(rows_b)) - improvement_rate(nanmean_columns(rows_a))
        return per_turn, mean_diff, ir

    per_turn, mean_diff, ir_diff = stats(sa, sb, d)
    nan_k = [math.nan] * k
    if not shared or not k:
        empty = Estimate(math.nan, math.nan, math.nan)
        return PairedDifference(a.model, b.model, turns, len(shared), per_turn.tolist(), nan_k,
                                nan_k, empty, empty, confidence, n_boot)
    draws = a.draws(unit, n_boot, seed, rows=[a.personas.index(p) for p in shared])
    boot = [stats(sa[i], sb[i], d[i]) for i in draws]
    low, high = percentile_interval(np.array([t for t, _, _ in boot]), confidence)
    s_low, s_high = percentile_interval(np.array([[m, ir] for _, m, ir in boot]), confidence)
    return PairedDifference(a.model, b.model, turns, len(shared), per_turn.tolist(), low.tolist(),
                            high.tolist(), Estimate(mean_diff, float(s_low[0]), float(s_high[0])),
                            Estimate(ir_diff, float(s_low[1]), float(s_high[1])), confidence,
                            n_boot, unit)


# ------------------------------------------------------------------------------------------
# Everything a run computes (what stage 5 writes to metrics.json)
# ------------------------------------------------------------------------------------------
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
              models: Sequence[str] | None = None, unit: str | None = None,
              multiplier: float = 1.0) -> dict[str, Any]:
    """Every figure of stage 5, as one JSON-ready dict (the content of `metrics.json`).

    `by_model` maps each model's name to its evaluation records. `models` fixes the order
    (default: as given); paired differences are computed for every later model minus every
    earlier one (e.g. sft - base, dpo - base, dpo - sft). `unit` is what the bootstrap
    resamples (None: profiles when every record names its profile, else personas), the same for
    every model, and named in the summary.
    """
    order = [m for m in (models or []) if m in by_model] + \
            [m for m in by_model if m not in (models or [])]
    unit = unit or default_unit(r for rows in by_model.values() for r in rows)
    summary: dict[str, Any] = {"confidence": confidence, "bootstrap_samples": n_boot,
                               "bootstrap_unit": unit, "seed": seed, "models": {},
                               "paired": {}}
    for name in order:
        levels = alignment_levels(by_model[name], n_boot=n_boot, confidence=confidence,
                                  seed=seed, model=name, unit=unit,
                                  multiplier=multiplier).to_json()
        levels["score_counts"] = score_counts(by_model[name])
        summary["models"][name] = levels
    for a, b in combinations(order, 2):
        diff = paired_difference(by_model[a], by_model[b], n_boot=n_boot,
                                 confidence=confidence, seed=seed, unit=unit,
                                 multiplier=multiplier)
        summary["paired"][f"{b} - {a}"] = diff.to_json()
    return summary


def finite_or_none(value: Any) -> float | None:
    """JSON has no NaN: a missing figure is written as null."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value
