"""Every table the workbook shows: the figures of metrics.json with their intervals (the
report, notebooks 05 and 06, the results printed at the end of a run), and tables of text for
notebooks: LLM-written replies, transcripts and reasons shown in full (and `plain_table`, the
same frames as plain text for a terminal).

Every such table goes through `text_table`, which escapes each cell as HTML. A pandas Styler
renders cells as raw HTML by default, so a reply holding `<script>` ran in the notebook's HTML
export (nbconvert, the report's readers); escaped, it is shown as the text it is.
`script_json` makes data safe to inline for a page's own script (the transcript viewer).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from aloe.analysis import findings
from aloe.core import protocols

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler

TEXT_CELLS = {"white-space": "pre-wrap", "text-align": "left"}


def plain_table(frame: pd.DataFrame, *, index: bool = True) -> str:
    """`frame` as plain text for a terminal (its index the first column, unless `index` is
    False): left-aligned columns two spaces apart, a rule under the header."""
    named = frame.reset_index() if index else frame
    header = [str(c) for c in named.columns]
    rows = [["" if v is None else str(v) for v in row] for row in named.itertuples(index=False)]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def text_table(frame: pd.DataFrame, *, hide_index: bool = False) -> Styler:
    """`frame` for display: every cell and header escaped, long texts wrapped, left-aligned."""
    styled = frame.style.format(escape="html").format_index(escape="html", axis=0) \
        .format_index(escape="html", axis=1).set_properties(**TEXT_CELLS)
    return styled.hide(axis="index") if hide_index else styled


# In a <script> element only "</script" (any case) and "<!--" end or change the data; "<", ">"
# and "&" written as JSON escapes leave no such sequence, and JSON.parse reads them back.
_SCRIPT_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def script_json(data: Any) -> str:
    """`data` as JSON to inline in `<script type="application/json">`: no text in it (a reply
    holding `</script><script>...`) can close the element; non-finite numbers are refused."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).translate(_SCRIPT_ESCAPES)


# ------------------------------------------------------------------------------------------
# Tables of metrics.json: every figure with its interval (`findings.interval_text`)
# ------------------------------------------------------------------------------------------
def headline_table(metrics: Mapping[str, Any] | None) -> pd.DataFrame:
    """Per model: mean AL, IR and N-IR with their intervals; then each model's paired
    difference over the first (base) model."""
    models = dict((metrics or {}).get("models") or {})
    rows = []
    for name, m in models.items():
        rows.append({"": name, "mean AL (1-5)": findings.interval_text(m.get("mean_al")),
                     "IR (per turn)": findings.interval_text(m.get("ir"), "+.3f"),
                     "N-IR (per turn)": findings.interval_text(m.get("n_ir"), "+.3f"),
                     "n": f"{m.get('n_personas', 0)} personas"})
    reference = next(iter(models), None)
    for label, p in ((metrics or {}).get("paired") or {}).items():
        if p.get("a") != reference:
            continue
        rows.append({"": f"{p['b']} − {p['a']}",
                     "mean AL (1-5)": findings.interval_text(p.get("mean_diff"), "+.3f"),
                     "IR (per turn)": findings.interval_text(p.get("ir_diff"), "+.3f"),
                     "N-IR (per turn)": "",
                     "n": f"{p.get('n_personas', 0)} shared personas"})
    return pd.DataFrame(rows).set_index("") if rows else pd.DataFrame()


def metrics_table(metrics: Mapping[str, Any] | None) -> pd.DataFrame:
    """Every model figure with its interval, N-R² and the missing and truncated shares
    included, on the scale of the run's protocol."""
    scale = protocols.of_summary(metrics).scale_label
    rows = []
    for name, m in ((metrics or {}).get("models") or {}).items():
        units = findings.units_text(m, findings.unit(metrics))
        rows.append({"model": name, "personas": m.get("n_personas"), "turns": len(m["turns"]),
                     f"mean AL ({scale})": findings.interval_text(m.get("mean_al")),
                     "IR (per turn)": findings.interval_text(m.get("ir"), "+.3f"),
                     "N-IR (per turn)": findings.interval_text(m.get("n_ir"), "+.3f"),
                     "N-R²": findings.interval_text(m.get("n_r2")),
                     "no score": _share(m.get("missing_rate")),
                     "cut at the token limit": _share(m.get("truncated_rate")),
                     "bootstrap units": units})
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def paired_table(metrics: Mapping[str, Any] | None) -> pd.DataFrame:
    """Every paired comparison (later model minus earlier one, same personas)."""
    rows = [{"comparison": label.replace(" - ", " − "), "shared personas": p.get("n_personas"),
             "mean difference (per turn)": findings.interval_text(p.get("mean_diff"), "+.3f"),
             "IR difference (per turn)": findings.interval_text(p.get("ir_diff"), "+.3f")}
            for label, p in ((metrics or {}).get("paired") or {}).items()]
    return pd.DataFrame(rows).set_index("comparison") if rows else pd.DataFrame()


def truncation_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Share of the model's replies cut at the token limit, per model (rows) and turn."""
    rows = {name: {turn: (math.nan if share is None else share)
                   for turn, share in zip(m["turns"], m.get("truncated") or [])}
            for name, m in summary.get("models", {}).items()}
    return pd.DataFrame(rows).T.rename_axis(index="model", columns="turn")


def _est(row: dict[str, Any], label: str, est: dict[str, Any] | None, spec: str = ".3f") -> None:
    est = est or {}
    value = est.get("value")
    row[label] = math.nan if value is None else value
    row[f"{label} CI"] = findings.bracket(est.get("low"), est.get("high"))


def recovery_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Per model: AL just before the shift, at the shift, the drop and the turns until AL
    regains its pre-shift level, with CIs; empty without a preference shift."""
    rows = []
    for name, r in (summary.get("recovery") or {}).items():
        row: dict[str, Any] = {"model": name, "shift turn": r["shift_turn"],
                               "AL before": r["pre_shift_level"], "AL at shift": r["at_shift"]}
        _est(row, "drop", r["drop"])
        _est(row, "turns to recover", r["turns_to_recover"])
        row["recovered"] = r["recovered"]
        row["draws that recover"] = r["recovered_share"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def curve_table(curves: dict[str, Any], label: str) -> pd.DataFrame:
    """Per model (rows) and turn: a per-turn measure as 'value [low, high]'."""
    rows = {}
    for name, c in (curves or {}).items():
        if not c:
            continue
        rows[name] = {turn: ("n/a" if v is None else f"{v:.2f} {findings.bracket(lo, hi)}")
                      for turn, v, lo, hi in zip(c["turns"], c["value"], c["low"], c["high"])}
        mean = c.get("mean") or {}
        rows[name]["mean"] = ("n/a" if mean.get("value") is None else
                              f"{mean['value']:.2f} {findings.bracket(mean['low'], mean['high'])}")
    return pd.DataFrame(rows).T.rename_axis(index="model", columns=f"{label} at turn")


def simulator_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Per model's conversations: disclosure at turn 1 and over the run (judge, word overlap),
    contradictions, and whether the simulator gives most of the persona away at once."""
    rows = []
    for name, s in (summary.get("simulator") or {}).items():
        row: dict[str, Any] = {"conversations of": name}
        for key, label in (("revealed", "revealed (judge)"), ("lexical", "revealed (words)"),
                           ("contradiction", "contradiction rate")):
            curve = s.get(key)
            if curve:
                row[f"{label}, turn 1"] = curve["value"][0] if curve["value"] else math.nan
                _est(row, f"{label}, mean", curve["mean"])
        row["first messages over the flag"] = s.get("first_message_share")
        row["reveals most at once"] = s.get("reveals_at_once")
        rows.append(row)
    return pd.DataFrame(rows).set_index("conversations of") if rows else pd.DataFrame()


def agreement_table(summary: dict[str, Any]) -> pd.DataFrame:
    """The main judge against the second judge and against people: agreement, kappa, weighted
    kappa, Spearman, each with its CI."""
    rows = []
    for key, label in (("judge_agreement", "second judge"), ("human_agreement", "people")):
        a = summary.get(key)
        if not a:
            continue
        other = a.get("second_judge") if key == "judge_agreement" else \
            f"{len(a.get('raters', []))} rater(s)"
        row: dict[str, Any] = {"judge vs": label, "who": other, "pairs": a["n"],
                               "units": a.get("n_units")}
        for stat, name in (("agreement", "exact agreement"), ("kappa", "kappa"),
                           ("weighted_kappa", "weighted kappa"), ("spearman", "Spearman")):
            if stat in a:
                _est(row, name, a[stat])
        if key == "judge_agreement":
            row["same model as the judge"] = a.get("same_model")
        rows.append(row)
    return pd.DataFrame(rows).set_index("judge vs") if rows else pd.DataFrame()


# ------------------------------------------------------------------------------------------
# Tables behind figures and the report: the usage ledger, the scores' distribution
# ------------------------------------------------------------------------------------------
def usage_table(history: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per stage session and role: requests, cache hits, retries, tokens, cost."""
    rows = []
    for entry in history:
        for role, usage in entry.get("roles", {}).items():
            rows.append({"stage": entry["stage"], "role": role, **usage})
    columns = ["stage", "role", "model", "requests", "cache_hits", "retries", "failures",
               "prompt_tokens", "completion_tokens", "cost_usd"]
    return pd.DataFrame(rows, columns=columns)


def score_distribution_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Share of each score (1-5, or missing) per model and turn."""
    rows = [{"model": r["model"], "turn": int(r["turn"]),
             "score": "missing" if r.get("score") is None else str(r["score"])} for r in records]
    table = pd.DataFrame(rows, columns=["model", "turn", "score"])
    if table.empty:
        return table
    counts = table.groupby(["model", "turn", "score"]).size().rename("count").reset_index()
    counts["share"] = counts["count"] / counts.groupby(["model", "turn"])["count"].transform("sum")
    return counts
