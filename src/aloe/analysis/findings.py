"""What a run's numbers say, in words: the findings of the report and of notebook 05.

Every sentence is computed from the run's products (`metrics.json`, the stage summaries, the
resolved parameters), never written ahead: a judge that gave every reply the same score, an
interval of zero width or none at all, too few benchmark personas for an interval, many
missing, inconsistent (position-biased), unreadable or truncated judgements, an empty training
set, and a run on the embedded toy model are each detected and said. Caveats come first: they
bound what the results after them can mean.

Pure functions of JSON-like dicts (as read from the run folder); nothing is read or written here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aloe.core import protocols
from aloe.core.local_model import EMBEDDED_NAME

SCORE_FLOOR, SCORE_CEILING = 1, 5  # the score judge's scale
MIN_UNITS = 10  # fewer resampled units than this and a bootstrap interval means little
HIGH_MISSING = 0.10  # judgements without a readable score
HIGH_TRUNCATED = 0.10  # replies cut at the token limit
HIGH_INCONSISTENT = 0.10  # preference verdicts that changed with the order of the replies
HIGH_UNREADABLE = 0.10  # preference verdicts or inducer answers that could not be read
ESTIMATES = {"mean_al": "mean AL", "ir": "IR", "n_ir": "N-IR", "n_r2": "N-R²"}

Summary = Mapping[str, Any]


@dataclass(frozen=True)
class Finding:
    """One sentence about a run. `kind` is stable (tests and pages select by it); a caveat
    limits what the other findings can mean."""

    kind: str
    text: str
    caveat: bool = False


# ------------------------------------------------------------------------------------------
# Reading the summaries
# ------------------------------------------------------------------------------------------
def _models(metrics: Summary | None) -> dict[str, dict[str, Any]]:
    return dict((metrics or {}).get("models") or {})


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _names(names: Iterable[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def unit(metrics: Summary | None) -> str:
    """What the bootstrap resamples: `metrics.json`'s `bootstrap_unit` (two-way, profile or
    persona), else persona (metrics written before the unit was recorded)."""
    metrics = metrics or {}
    return str(metrics.get("bootstrap_unit") or metrics.get("unit") or "persona")


def _plural(kind: str, n: int = 2) -> str:
    return kind if n == 1 else {"personality": "personalities"}.get(kind, f"{kind}s")


def unit_words(unit_name: str) -> str:
    """A bootstrap unit in a sentence ("intervals over ..."): 'profiles and personalities'
    for the two-way bootstrap, else the unit's plural."""
    return "profiles and personalities" if unit_name == "two-way" else _plural(unit_name)


def unit_sizes(model: Mapping[str, Any], unit_name: str) -> dict[str, int]:
    """How many of each unit a model's bootstrap resampled: {"profile": 20, "personality": 5}
    (metrics from before the sizes were recorded: the one unit's count)."""
    sizes = model.get("unit_sizes")
    kinds = {"profile", "personality"} if unit_name == "two-way" else {unit_name}
    if isinstance(sizes, dict) and set(sizes) == kinds:
        return {str(k): int(v) for k, v in sizes.items()}
    return {unit_name: unit_count(model, unit_name)}


def units_text(model: Mapping[str, Any], unit_name: str) -> str:
    """The units a model's bootstrap resampled, counted: '20 profiles x 5 personalities'."""
    return " x ".join(f"{n} {_plural(kind, n)}" for kind, n in unit_sizes(model, unit_name).items())


def unit_count(model: Mapping[str, Any], unit_name: str) -> int:
    """How many units a model's bootstrap resampled (the benchmark personas by default)."""
    for key in (f"n_{unit_name}s", "n_units", "n_clusters"):
        if isinstance(model.get(key), int):
            return int(model[key])
    return int(model.get("n_personas") or 0)


def truncated_share(model: Mapping[str, Any]) -> float | None:
    """The share of a model's replies cut at the token limit, where metrics.json has it
    (`truncated_rate`, else any other `truncated...` key: a number, or one per turn)."""
    keys = ["truncated_rate", *(k for k in model if k.startswith("truncated"))]
    for value in (model.get(key) for key in keys):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, list):
            present = [float(v) for v in value if isinstance(v, (int, float))]
            if present:
                return sum(present) / len(present)
    return None


def all_scores(metrics: Summary | None) -> dict[str, int] | None:
    """The judge's scores of every model together ({"1": 24}), or None when metrics.json
    predates `score_counts`."""
    models = _models(metrics)
    if not models or any("score_counts" not in m for m in models.values()):
        return None
    total: dict[str, int] = {}
    for m in models.values():
        for score, count in m["score_counts"].items():
            total[score] = total.get(score, 0) + int(count)
    return total


def _constant(counts: Mapping[str, int]) -> str | None:
    scored = [s for s, n in counts.items() if s != "missing" and n > 0]
    return scored[0] if len(scored) == 1 else None


# ------------------------------------------------------------------------------------------
# Caveats
# ------------------------------------------------------------------------------------------
def _is_embedded(model: str | None, served_locally: bool, local_path: str | None) -> bool:
    """A model reference that is the embedded model: `base_url: local` without a
    local_model.path, or a folder or id named after it (served behind any URL)."""
    if served_locally or model is None:
        return not local_path
    return str(model).rstrip("/").rsplit("/", 1)[-1] == EMBEDDED_NAME


def demonstration(params: Summary | None) -> list[Finding]:
    """Every role and the policy on the embedded 135M model: the tiny profile."""
    if not params:
        return []
    local_path = (params.get("local_model") or {}).get("path")
    roles = [r for r in (params.get("roles") or {}).values() if r]  # optional roles: None
    embedded = (all(_is_embedded(r.get("model"), r.get("base_url") == "local", local_path)
                    for r in roles)
                and _is_embedded((params.get("sft") or {}).get("base_model"), False, local_path))
    if not embedded:
        return []
    return [Finding("demonstration", "Every LLM role and the trained policy is the embedded "
                    "SmolLM2-135M-Instruct (the tiny profile): this run **demonstrates the "
                    "machinery, not the method**, and its numbers say nothing about ALOE; "
                    "`params/paper.yaml` is the measurement.", caveat=True)]


def _scale_words(score: str) -> str:
    if score == str(SCORE_FLOOR):
        return f", the lowest score of its {SCORE_FLOOR}-{SCORE_CEILING} scale"
    if score == str(SCORE_CEILING):
        return f", the highest score of its {SCORE_FLOOR}-{SCORE_CEILING} scale"
    return ""


def constant_scores(metrics: Summary | None) -> list[Finding]:
    """The judge gave every reply (of all models, or of one) the same score."""
    models = _models(metrics)
    total = all_scores(metrics)
    if total is not None:
        score = _constant(total)
        if score is not None:
            n = total[score]
            return [Finding("constant_scores", f"**The judge gave every one of the {n} scored "
                            f"replies a {score}**{_scale_words(score)} (models "
                            f"{_names(models)}): it tells no reply from another, so AL, IR and "
                            "every difference below restate that constant, not the models.",
                            caveat=True)]
        return [Finding("constant_scores", f"The judge gave every reply of **{name}** a {score}"
                        f"{_scale_words(score)}: its AL and IR restate that constant.",
                        caveat=True)
                for name, m in models.items() if (score := _constant(m["score_counts"]))]
    flat = [name for name, m in models.items() if _flat_without_spread(m)]
    if models and len(flat) == len(models):
        return [Finding("constant_scores", "Every AL(k) of every model is the same value with "
                        "a zero-width interval: **the judge gave every reply the same score**, "
                        "so the figures below restate that constant.", caveat=True)]
    return []


def _flat_without_spread(model: Mapping[str, Any]) -> bool:
    values = [v for v in model.get("al") or [] if v is not None]
    return (bool(values) and len(set(values)) == 1 and model.get("al_low") == model.get("al")
            and model.get("al_high") == model.get("al") and not any(model.get("n_missing") or []))


def _estimates(metrics: Summary | None) -> Iterable[tuple[str, str, Mapping[str, Any]]]:
    """(figure, owner, estimate) for every model figure and every paired mean difference."""
    for name, m in _models(metrics).items():
        for key, label in ESTIMATES.items():
            if isinstance(m.get(key), Mapping):
                yield label, name, m[key]
    for label, p in ((metrics or {}).get("paired") or {}).items():
        if isinstance(p.get("mean_diff"), Mapping):
            yield "mean difference", label, p["mean_diff"]


def _grouped(pairs: Iterable[tuple[str, str]]) -> str:
    """"mean AL and IR of base and sft; N-IR of base" out of (figure, owner) pairs: figures
    that concern the same owners are named together."""
    owners: dict[str, list[str]] = {}
    for figure, owner in pairs:
        owners.setdefault(figure, []).append(owner)
    figures: dict[tuple[str, ...], list[str]] = {}
    for figure, names in owners.items():
        figures.setdefault(tuple(names), []).append(figure)
    return "; ".join(f"{_names(names)} of {_names(group)}" for group, names in figures.items())


def intervals(metrics: Summary | None) -> list[Finding]:
    """Intervals of zero width, and figures that are undefined (or have no interval)."""
    zero, undefined, no_interval = [], [], []
    for figure, owner, est in _estimates(metrics):
        if est.get("value") is None:
            undefined.append((figure, owner))
        elif est.get("low") is None or est.get("high") is None:
            no_interval.append((figure, owner))
        elif est["low"] == est["high"]:
            zero.append((figure, owner))
    found = []
    if zero:
        found.append(Finding("zero_width", f"Zero-width intervals ({_grouped(zero)}): every "
                             "bootstrap draw gave the same value. That says the resampled "
                             "scores do not vary, not that the figure is exact.", caveat=True))
    if undefined:
        found.append(Finding("undefined", f"Undefined ({_grouped(undefined)}): N-R² needs AL "
                             "to vary over the turns, and a trend needs two scored turns.",
                             caveat=True))
    if no_interval:
        found.append(Finding("no_interval", f"No interval ({_grouped(no_interval)}): too few "
                             "draws had a value.", caveat=True))
    return found


def few_units(metrics: Summary | None) -> list[Finding]:
    """Too few resampled units (profiles, personalities or personas) for a bootstrap interval
    to mean much."""
    name = unit(metrics)
    counts = [(n, kind) for m in _models(metrics).values()
              for kind, n in unit_sizes(m, name).items()]
    if not counts or min(counts)[0] >= MIN_UNITS:
        return []
    n, kind = min(counts)
    if name == "two-way" and kind == "personality":
        return [Finding("few_units", f"Only {n} {_plural(kind, n)}, each shared by every "
                        "profile of the benchmark: the two-way interval draws them, so it speaks "
                        "for users of other personalities, but rests on few draws and is a rough "
                        "range (evaluation.bootstrap_unit: profile gives the narrower interval "
                        "for new profiles with these personalities only).", caveat=True)]
    return [Finding("few_units", f"Only {n} benchmark {_plural(kind, n)} to resample: "
                    f"a bootstrap over so few is no confidence interval (take at least "
                    f"{MIN_UNITS}; ALOE's benchmark has 100 personas).", caveat=True)]


def missing_and_truncated(metrics: Summary | None) -> list[Finding]:
    """Models with many unscored judgements or many replies cut at the token limit."""
    found = []
    for name, m in _models(metrics).items():
        missing = m.get("missing_rate")
        if missing is not None and missing > HIGH_MISSING:
            found.append(Finding("missing", f"{_pct(missing)} of **{name}**'s judgements held no "
                                 "readable score (after one re-ask): they are left out of its "
                                 "means, which rest on the rest.", caveat=True))
        truncated = truncated_share(m)
        if truncated is not None and truncated > HIGH_TRUNCATED:
            found.append(Finding("truncated", f"{_pct(truncated)} of **{name}**'s replies were "
                                 "cut at the token limit (evaluation.max_new_tokens): the judge "
                                 "scored unfinished replies.", caveat=True))
    return found


def conversation_quality(conversations: Summary | None) -> list[Finding]:
    """Position bias (inconsistent verdicts) and unreadable verdicts or inducer answers."""
    if not conversations:
        return []
    verdicts = conversations.get("verdicts") or {}
    judged = sum(int(v) for v in verdicts.values())
    turns = int(conversations.get("turns") or judged)
    found = []
    inconsistent = _share(int(verdicts.get("inconsistent", 0)), judged)
    if inconsistent > HIGH_INCONSISTENT:
        found.append(Finding("inconsistent", f"{_pct(inconsistent)} of the preference verdicts "
                             "changed when the two replies swapped places (position bias): "
                             "those turns are left out of the training data.", caveat=True))
    if conversations.get("judge_rule") == "single_random":
        found.append(Finding("position_bias_unseen", "The preference judge was asked once per "
                             "turn (judge_rule single_random), so position bias cannot show "
                             "in this run's data.", caveat=True))
    unparseable = _share(int(verdicts.get("unparseable", 0)), judged)
    if unparseable > HIGH_UNREADABLE:
        found.append(Finding("unreadable", f"{_pct(unparseable)} of the preference verdicts "
                             "named neither reply, even when asked again.", caveat=True))
    inducer = _share(int(conversations.get("inducer_unparseable") or 0), turns)
    if inducer > HIGH_UNREADABLE:
        found.append(Finding("unreadable_inducer", f"{_pct(inducer)} of the inducer's answers "
                             "could not be read: those hinted replies had no hint.",
                             caveat=True))
    return found


def empty_training_set(export: Summary | None) -> list[Finding]:
    """No decided turn was exported: SFT and DPO had nothing to learn from."""
    if not export:
        return []
    train = int((export.get("train") or {}).get("examples", export.get("examples") or 0))
    if train > 0:
        return []
    left = export.get("left_out") or {}
    why = ", ".join(f"{n} {k}" for k, n in left.items() if n) or "none decided"
    return [Finding("empty_dpo", f"**The DPO (and SFT) training set is empty**: of "
                    f"{export.get('turns', 0)} judged turns none was exported ({why}); the "
                    "adapters, if any, learned nothing from this run.", caveat=True)]


# ------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------
def bracket(low: float | None, high: float | None, spec: str = ".3f") -> str:
    """An interval alone: "[1.100, 1.350]", or "n/a" without one. Every interval the workbook
    shows (tables, findings, cards, the comparison page) is written by this function."""
    return "n/a" if low is None or high is None else \
        f"[{format(low, spec)}, {format(high, spec)}]"


def interval_text(est: Mapping[str, Any] | None, spec: str = ".3f") -> str:
    """"1.234 [1.100, 1.350]", "1.234 (no interval)" or "n/a"."""
    if not est or est.get("value") is None:
        return "n/a"
    value = format(est["value"], spec)
    if est.get("low") is None or est.get("high") is None:
        return f"{value} (no interval)"
    return f"{value} {bracket(est['low'], est['high'], spec)}"


def direction(est: Mapping[str, Any], up: str, down: str, neither: str) -> str:
    """`up` when the interval lies above zero, `down` below it, `neither` otherwise."""
    low, high = est.get("low"), est.get("high")
    if low is not None and low > 0:
        return up
    if high is not None and high < 0:
        return down
    return neither


def trends(metrics: Summary | None) -> list[Finding]:
    """Each model's AL level and trend; a model whose scores are all equal has none to tell."""
    found = []
    for name, m in _models(metrics).items():
        counts = m.get("score_counts")
        if counts and _constant(counts):
            continue  # said by the constant-score caveat
        ir = m.get("ir") or {}
        if ir.get("value") is None:
            found.append(Finding("trend", f"**{name}**: too few scored turns for a trend."))
            continue
        words = direction(ir, "AL rises over the turns", "AL falls over the turns",
                           "no trend distinguishable from zero")
        found.append(Finding("trend", f"**{name}**: mean AL {interval_text(m.get('mean_al'))}, "
                             f"IR {interval_text(ir, '+.3f')} per turn: {words}."))
    return found


def published_comparison(params: Summary | None, metrics: Summary | None) -> list[Finding]:
    """A protocol with a published table (RLPA's): what in this run differs from the setup of
    that table, so that its figures are not put beside the published ones."""
    if not metrics or not metrics.get("models"):
        return []
    protocol = protocols.of_summary(metrics)
    if protocol.published_judge is None:
        return []
    judge = ((params or {}).get("roles") or {}).get("judge") or {}
    benchmark = ((params or {}).get("evaluation") or {}).get("benchmark")
    differs = ["the models under test are this run's own"]
    if judge.get("model") != protocol.published_judge:
        differs.append(f"its judge is {judge.get('model') or 'another model'}, not "
                       f"{protocol.published_judge}")
    if protocol.defined_on and benchmark and benchmark != protocol.defined_on:
        differs.append(f"its users are the run's own benchmark personas, not the "
                       f"{protocol.defined_on} benchmark's users the protocol is defined on")
    return [Finding("published_comparison", f"The {protocol.name} protocol's procedure, not its "
                    f"published setup: {'; '.join(differs)}. Read these figures against each "
                    "other, not beside the published table (the protocol's assumptions list the "
                    "remaining differences).", caveat=True)]


def replay_bias(metrics: Summary | None) -> list[Finding]:
    """Replayed users: only their messages are the same for every model; each later message
    answers the reference model's own replies, so a comparison with it leans its way."""
    reference = (metrics or {}).get("replay_from")
    if not reference:
        return []
    return [Finding("replay_bias", f"Users replayed from **{reference}**: every model got the "
                    f"same user messages, but each message after the first answered "
                    f"{reference}'s own replies, so a paired difference with {reference} "
                    f"favours it (marked below); differences between the other models do not "
                    "carry that bias.", caveat=True)]


def differences(metrics: Summary | None) -> list[Finding]:
    """Each paired comparison (later model minus earlier one on the same personas); with
    replayed users, one that involves the reference model is marked as favouring it."""
    found = []
    models = _models(metrics)
    reference = (metrics or {}).get("replay_from")
    for label, p in ((metrics or {}).get("paired") or {}).items():
        if all(_constant(models.get(p.get(side), {}).get("score_counts") or {}) for side in "ab"):
            continue  # two constants: said by the constant-score caveat
        d = p.get("mean_diff") or {}
        if d.get("value") is None:
            found.append(Finding("difference", f"**{label}**: no turn scored on both sides."))
            continue
        words = direction(d, f"{p['b']} scores higher", f"{p['b']} scores lower",
                           "no difference distinguishable from zero")
        biased = (f" (biased toward {reference}: the users answered its replies)"
                  if reference in (p.get("a"), p.get("b")) else "")
        found.append(Finding("difference", f"**{label}**: {interval_text(d, '+.3f')} per turn "
                             f"over {p.get('n_personas', 0)} shared personas: {words}{biased}."))
    return found


def hinted_by_turn(wins: Mapping[int, tuple[int, int]]) -> list[Finding]:
    """How often the hinted reply won the decided turns, at the first turn and at the last
    (`wins`: turn -> (hinted wins, decided turns))."""
    turns = sorted(k for k, (_, n) in wins.items() if n)
    if not turns:
        return [Finding("hinted_wins", "No turn was decided: nothing says whether the hinted "
                        "reply wins.")]

    def at(turn: int) -> str:
        won, n = wins[turn]
        return f"{_pct(won / n)} of the {n} decided turns at turn {turn}"
    text = at(turns[0]) if len(turns) == 1 else f"{at(turns[0])} and {at(turns[-1])}"
    return [Finding("hinted_wins", f"The hinted reply won {text} (the premise: this share "
                    "rises as the user reveals more).")]


def training(stats: Mapping[str, Mapping[str, Any]] | None) -> list[Finding]:
    """What each training stage did: steps, examples, final loss; for GRPO, the share of
    sampled replies a reward's judge could not score (they moved nothing)."""
    found = []
    for stage, s in (stats or {}).items():
        loss = s.get("final_loss")
        loss_text = f", final loss {loss:.3f}" if isinstance(loss, (int, float)) else ""
        found.append(Finding("training", f"**{stage.upper()}** trained {s.get('steps', 0)} "
                             f"optimiser steps on {s.get('train_examples', 0)} examples"
                             f"{loss_text}.{_unreadable_text(s.get('unreadable_replies'))}"))
    return found


def _unreadable_text(shares: Mapping[str, float] | None) -> str:
    unread = {name: share for name, share in (shares or {}).items() if share > 0}
    if not unread:
        return ""
    parts = ", ".join(f"{_pct(share)} for {name}" for name, share in unread.items())
    return (f" Its judges' answers were unreadable for part of the sampled replies ({parts}); "
            "a reply no reward scored got no advantage.")


# ------------------------------------------------------------------------------------------
# Everything, and as text
# ------------------------------------------------------------------------------------------
def run_findings(metrics: Summary | None, *, conversations: Summary | None = None,
                 export: Summary | None = None, params: Summary | None = None,
                 training_stats: Mapping[str, Mapping[str, Any]] | None = None) -> list[Finding]:
    """Every finding of a run, caveats first. Each input may be None (a stage not run)."""
    caveats = [*demonstration(params), *constant_scores(metrics), *few_units(metrics),
               *intervals(metrics), *missing_and_truncated(metrics), *replay_bias(metrics),
               *published_comparison(params, metrics),
               *conversation_quality(conversations), *empty_training_set(export)]
    results = [*trends(metrics), *differences(metrics), *training(training_stats)]
    return caveats + results


def to_markdown(found: list[Finding], confidence: float = 0.95, unit_name: str = "persona") -> str:
    """Caveats, then results, as markdown bullets."""
    caveats = [f for f in found if f.caveat]
    results = [f for f in found if not f.caveat]
    parts = []
    if caveats:
        parts.append("**Caveats**\n\n" + "\n".join(f"- {f.text}" for f in caveats))
    if results:
        level = f"{round(100 * confidence)}%"
        measured = any(f.kind in ("trend", "difference") for f in results)
        header = (f"**Results** ({level} bootstrap intervals over {unit_words(unit_name)})"
                  if measured else "**Results**")
        parts.append(header + "\n\n" + "\n".join(f"- {f.text}" for f in results))
    return "\n\n".join(parts) or "_Nothing to report: no stage has written its summary yet._"


# ------------------------------------------------------------------------------------------
# Beyond the paper's evaluation (protocols, preference shifts, probes, simulator, agreement)
# ------------------------------------------------------------------------------------------
def protocol_line(summary: Mapping[str, Any]) -> str:
    """One line naming the protocol, its version, the variant and where the users came from."""
    p = summary.get("protocol") or {"name": "aloe", "version": "aloe-1 (assumed: no record)"}
    shift = summary.get("preference_shift")
    parts = [f"protocol **{p['name']}** ({p['version']})",
             f"variant `{summary.get('variant', 'aloe')}`",
             f"users {summary.get('user_mode', 'live')}"
             + (f" (replayed from {summary['replay_from']})" if summary.get("replay_from")
                else "")]
    if shift:
        parts.append(f"the {shift['change']} changes at turn {shift['turn']}")
    if p.get("al_range"):
        parts.append(f"AL on {p['al_range'][0]:g}-{p['al_range'][1]:g}")
    return "; ".join(parts) + "."


def beyond_the_paper(summary: Mapping[str, Any]) -> str:
    """The measures beyond the paper's evaluation, in words (markdown): the protocol, recovery
    after a preference shift, inference accuracy, the simulated user, the judge's agreement."""
    lines = [f"- {protocol_line(summary)}"]
    for name, r in (summary.get("recovery") or {}).items():
        t = r["turns_to_recover"]
        if r["recovered"]:
            lines.append(f"- **{name}** after the shift at turn {r['shift_turn']}: back at its "
                         f"pre-shift AL after {t['value']:.0f} turn(s) "
                         f"{bracket(t['low'], t['high'])}; "
                         f"{_number(100 * (r['recovered_share'] or 0), '.0f')}% of bootstrap "
                         "draws recover within the turns run.")
        else:
            lines.append(f"- **{name}** does not regain its pre-shift AL within the "
                         f"{r['turns_run']} turns run.")
    for name, c in (summary.get("inference") or {}).items():
        m = c["mean"]
        if m["value"] is not None:
            lines.append(f"- **{name}** states what it learned about the user with accuracy "
                         f"{m['value']:.2f} {bracket(m['low'], m['high'])} on average "
                         f"(turn 1: {_number(c['value'][0], '.2f')}, turn {c['turns'][-1]}: "
                         f"{_number(c['value'][-1], '.2f')}).")
    for name, s in (summary.get("simulator") or {}).items():
        source = "the judge" if s.get("flag_source") == "revealed" else "word overlap"
        if s.get("reveals_at_once"):
            lines.append(f"- **Simulator flag** ({name}'s conversations): the first user "
                         f"message already gives away {_number(s['turn1_disclosure'], '.0%')} of "
                         f"the persona by {source} (flag at {s['reveal_flag']:.0%}): the "
                         "simulated user reveals most of itself at once.")
        elif s.get("turn1_disclosure") is not None:
            disclosed = _number(s['turn1_disclosure'], '.0%')
            lines.append(f"- Simulator ({name}'s conversations): {disclosed} "
                         f"of the persona given away in the first message by {source}.")
        if s.get("contradiction_rate") is not None:
            lines.append(f"  Contradictions with the persona: {s['contradiction_rate']:.0%} of "
                         "user messages.")
    for key, label in (("judge_agreement", "second judge"), ("human_agreement", "people")):
        a = summary.get(key)
        if a and a.get("kappa", {}).get("value") is not None:
            k = a["kappa"]
            note = " (the same model: a self-consistency check only)" if a.get("same_model") \
                else ""
            lines.append(f"- Judge vs {label}{note}: kappa {k['value']:.2f} "
                         f"{bracket(k['low'], k['high'])} over {a['n']} replies.")
    return "\n".join(lines)




def _number(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)
