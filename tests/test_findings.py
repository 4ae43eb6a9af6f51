"""The findings say what happened, from hand-made metrics (made by the real `metrics.summarise`)
and stage summaries: a constant judge, zero-width and undefined intervals, too few personas,
missing and truncated rates, position bias, unreadable verdicts, an empty training set, and a
run on the embedded toy model."""

from __future__ import annotations

import pytest

from aloe.analysis import findings
from aloe.analysis.metrics import summarise
from tests.conftest import ROOT, tiny_dict


def records(model: str, scores: dict[str, list[int | None]]) -> list[dict]:
    return [{"model": model, "persona_id": p, "turn": k + 1, "score": s}
            for p, row in scores.items() for k, s in enumerate(row)]


def run_metrics(by_model: dict[str, dict[str, list[int | None]]]) -> dict:
    return summarise({m: records(m, s) for m, s in by_model.items()}, n_boot=200,
                     models=list(by_model))


def kinds(found: list[findings.Finding]) -> list[str]:
    return [f.kind for f in found]


def many(scores: list[int | None], n: int = 12) -> dict[str, list[int | None]]:
    """n personas with the same score row."""
    return {f"p{i}": list(scores) for i in range(n)}


def rising(n: int = 12) -> dict[str, list[int | None]]:
    return {f"p{i}": [1 + i % 2, 2 + i % 2, 4, 5] for i in range(n)}


# -- the judge's scores ---------------------------------------------------------------------
def test_a_judge_that_gives_every_reply_a_1_is_named() -> None:
    metrics = run_metrics({m: many([1, 1], n=4) for m in ("base", "sft", "dpo")})
    found = findings.run_findings(metrics)
    constant = [f for f in found if f.kind == "constant_scores"]
    assert len(constant) == 1 and constant[0].caveat
    assert "every one of the 24 scored replies a 1" in constant[0].text
    assert "lowest score" in constant[0].text
    # no trend or difference is read out of a constant: the caveat says why
    assert "trend" not in kinds(found) and "difference" not in kinds(found)


def test_a_ceiling_and_a_single_constant_model() -> None:
    ceiling = findings.constant_scores(run_metrics({"base": many([5, 5])}))
    assert "highest score" in ceiling[0].text
    one = findings.constant_scores(run_metrics({"base": many([3, 3]), "dpo": rising()}))
    assert len(one) == 1 and "**base**" in one[0].text and "a 3" in one[0].text
    assert "dpo" not in one[0].text


def test_metrics_without_score_counts_still_show_a_constant_judge() -> None:
    metrics = run_metrics({"base": many([1, 1]), "sft": many([1, 1])})
    for model in metrics["models"].values():
        del model["score_counts"]  # a metrics.json written before the counts existed
    assert kinds(findings.constant_scores(metrics)) == ["constant_scores"]


def test_varied_scores_give_trends_and_differences_not_a_constant() -> None:
    flat = {f"p{i}": [2 + i % 2] * 4 for i in range(12)}  # 2s and 3s, level over the turns
    metrics = run_metrics({"base": flat, "dpo": rising()})
    found = findings.run_findings(metrics)
    assert "constant_scores" not in kinds(found)
    base = next(f for f in found if f.kind == "trend" and "**base**" in f.text)
    assert "no trend distinguishable from zero" in base.text
    dpo = next(f for f in found if f.kind == "trend" and "**dpo**" in f.text)
    assert "AL rises over the turns" in dpo.text
    diff = next(f for f in found if f.kind == "difference")
    assert "dpo - base" in diff.text and "dpo scores higher" in diff.text


# -- intervals ------------------------------------------------------------------------------
def test_zero_width_and_undefined_figures_are_listed() -> None:
    metrics = run_metrics({"base": many([2, 2]), "sft": many([2, 2])})
    found = {f.kind: f.text for f in findings.intervals(metrics)}
    assert "mean AL, IR and N-IR of base and sft" in found["zero_width"]
    assert "N-R² of base and sft" in found["undefined"]
    varied = findings.intervals(run_metrics({"base": rising()}))
    assert "zero_width" not in kinds(varied)


@pytest.mark.parametrize("unit, key, expected", [
    ("persona", None, "Only 3 benchmark personas"),
    ("profile", "n_units", "Only 2 benchmark profiles"),
])
def test_too_few_units_for_an_interval(unit, key, expected) -> None:
    metrics = run_metrics({"base": rising(3)})
    if key:  # the bootstrap resampled profiles (metrics.json names its unit)
        metrics["bootstrap_unit"] = unit
        metrics["models"]["base"][key] = 2
    found = findings.few_units(metrics)
    assert len(found) == 1 and found[0].text.startswith(expected)
    assert findings.few_units(run_metrics({"base": rising(12)})) == []


def test_a_two_way_bootstrap_names_both_units_and_its_few_personalities() -> None:
    metrics = run_metrics({"base": rising(12)})
    metrics["bootstrap_unit"] = "two-way"
    metrics["models"]["base"]["unit_sizes"] = {"profile": 20, "personality": 5}
    assert findings.units_text(metrics["models"]["base"], "two-way") == \
        "20 profiles x 5 personalities"
    assert findings.unit_words("two-way") == "profiles and personalities"
    (caveat,) = findings.few_units(metrics)
    assert caveat.text.startswith("Only 5 personalities, each shared by every profile")
    assert "intervals over profiles and personalities" in findings.to_markdown(
        findings.trends(metrics), 0.95, "two-way")


# -- missing, truncated ---------------------------------------------------------------------
def test_high_missing_and_truncated_rates() -> None:
    metrics = run_metrics({"base": {f"p{i}": [None if i < 4 else 3, 3] for i in range(12)},
                           "dpo": rising()})
    metrics["models"]["dpo"]["truncated_share"] = [0.5, 0.25]  # per turn, when recorded
    found = findings.missing_and_truncated(metrics)
    assert [(f.kind, f.text.split(" ")[0]) for f in found] == [("missing", "17%"),
                                                                ("truncated", "38%")]
    assert "**base**" in found[0].text and "**dpo**" in found[1].text
    del metrics["models"]["dpo"]["truncated_share"]  # absent: nothing said about it
    assert kinds(findings.missing_and_truncated(metrics)) == ["missing"]


# -- conversations and data -----------------------------------------------------------------
def test_position_bias_unreadable_and_an_unseen_bias() -> None:
    summary = {"judge_rule": "both_orders", "turns": 10, "inducer_unparseable": 3,
               "verdicts": {"hinted": 4, "plain": 2, "inconsistent": 3, "unparseable": 1}}
    found = {f.kind: f.text for f in findings.conversation_quality(summary)}
    assert found["inconsistent"].startswith("30% of the preference verdicts changed")
    assert "position bias" in found["inconsistent"]
    assert found["unreadable_inducer"].startswith("30% of the inducer's answers")
    assert "unreadable" not in found  # 10% is not above the threshold
    single = findings.conversation_quality({**summary, "judge_rule": "single_random",
                                            "inducer_unparseable": 0,
                                            "verdicts": {"hinted": 5, "plain": 5}})
    assert kinds(single) == ["position_bias_unseen"]


def test_an_empty_dpo_set_is_said() -> None:
    export = {"conversations": 4, "turns": 8, "examples": 0,
              "left_out": {"inconsistent": 8, "unparseable": 0},
              "train": {"examples": 0, "personas": 0}}
    found = findings.empty_training_set(export)
    assert kinds(found) == ["empty_dpo"] and "8 inconsistent" in found[0].text
    assert findings.empty_training_set({**export, "train": {"examples": 6}}) == []


def test_the_tiny_profile_demonstrates_the_machinery_not_the_method(tmp_path) -> None:
    from aloe.core.config import load_params, params_from_dict

    tiny = params_from_dict(tiny_dict(tmp_path)).model_dump(mode="json")
    found = findings.demonstration(tiny)
    assert found and "demonstrates the machinery, not the method" in found[0].text
    for role in filter(None, tiny["roles"].values()):  # the embedded model behind a URL
        role.update(base_url="http://127.0.0.1:8000/v1",
                    model="/srv/outputs/models/SmolLM2-135M-Instruct")
    assert findings.demonstration(tiny)
    tiny["roles"]["judge"]["model"] = "gpt-4o-mini"  # one real judge: no longer a toy run
    assert findings.demonstration(tiny) == []
    paper = load_params(ROOT / "params" / "paper.yaml").model_dump(mode="json")
    assert findings.demonstration(paper) == []


def test_caveats_come_first_in_the_text() -> None:
    metrics = run_metrics({"base": many([1, 1], n=2), "dpo": many([1, 1], n=2)})
    text = findings.to_markdown(findings.run_findings(
        metrics, training_stats={"sft": {"steps": 4, "train_examples": 6, "final_loss": 1.5}}))
    assert text.index("**Caveats**") < text.index("**Results**")
    assert "**SFT** trained 4 optimiser steps on 6 examples, final loss 1.500." in text


def test_hinted_wins_first_and_last_turn() -> None:
    found = findings.hinted_by_turn({1: (1, 4), 2: (2, 4), 3: (3, 4)})
    assert "25% of the 4 decided turns at turn 1 and 75% of the 4 decided turns at turn 3" \
        in found[0].text
    assert "No turn was decided" in findings.hinted_by_turn({})[0].text


# -- beyond the paper -------------------------------------------------------------------------
def test_beyond_the_paper_names_the_protocol_and_each_measure_that_ran() -> None:
    summary = {"protocol": {"name": "rlpa", "version": "rlpa-1", "al_range": [0, 100]},
               "variant": "rlpa-shift", "user_mode": "replayed", "replay_from": "base",
               "preference_shift": {"turn": 4, "change": "personality"},
               "recovery": {"dpo": {"recovered": False, "turns_run": 6, "shift_turn": 4,
                                    "turns_to_recover": {"value": None}}},
               "simulator": {"base": {"flag_source": "lexical", "reveals_at_once": True,
                                      "turn1_disclosure": 0.8, "reveal_flag": 0.5,
                                      "contradiction_rate": None}},
               "judge_agreement": {"kappa": {"value": 0.41, "low": 0.2, "high": 0.6}, "n": 30,
                                   "same_model": True}}
    text = findings.beyond_the_paper(summary)
    lines = text.splitlines()
    assert lines[0].startswith("- protocol **rlpa** (rlpa-1); variant `rlpa-shift`; users "
                               "replayed (replayed from base); the personality changes at "
                               "turn 4; AL on 0-100")
    assert "**dpo** does not regain its pre-shift AL within the 6 turns run" in text
    assert "gives away 80% of the persona by word overlap" in text
    assert "kappa 0.41 [0.200, 0.600] over 30 replies" in text and "self-consistency" in text
    assert findings.beyond_the_paper({}).startswith("- protocol **aloe** (aloe-1 (assumed")


def test_replayed_users_mark_the_differences_with_the_reference_model() -> None:
    """Issue 22: with replayed users only the user turns are identical: later user messages
    answered the reference model's replies, so its paired differences lean its way."""
    flat = {f"p{i}": [2 + i % 2] * 4 for i in range(12)}
    metrics = run_metrics({"base": flat, "sft": rising(), "dpo": rising()})
    live = findings.run_findings(metrics)
    assert "replay_bias" not in kinds(live)
    assert not any("biased" in f.text for f in live)
    replayed = findings.run_findings({**metrics, "replay_from": "base"})
    caveat = next(f for f in replayed if f.kind == "replay_bias")
    assert caveat.caveat and "favours it" in caveat.text
    texts = {f.text.split("**")[1]: f.text for f in replayed if f.kind == "difference"}
    assert "biased toward base" in texts["sft - base"]
    assert "biased toward base" in texts["dpo - base"]
    assert "biased" not in texts["dpo - sft"]


def test_grpo_says_which_share_of_its_replies_no_judge_could_score() -> None:
    stats = {"sft": {"steps": 4, "train_examples": 6, "final_loss": 1.5},
             "grpo": {"steps": 2, "train_examples": 4, "final_loss": 0.01,
                      "unreadable_replies": {"judge": 0.25, "inference": 0.0}}}
    sft, grpo = findings.training(stats)
    assert "unreadable" not in sft.text
    assert grpo.text.endswith("Its judges' answers were unreadable for part of the sampled "
                              "replies (25% for judge); a reply no reward scored got no "
                              "advantage.")
    stats["grpo"]["unreadable_replies"] = {"judge": 0.0}
    assert "unreadable" not in findings.training(stats)[1].text
