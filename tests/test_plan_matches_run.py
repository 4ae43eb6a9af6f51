"""`aloe plan`'s request counts are the requests a run sends, per stage and role (issue 21).

A tiny run's request-sending stages (personas, conversations, evaluation with every side
measure and a model under test behind an endpoint) run against the stub server
(tests/support/stub_server.py: real HTTP, real client, cache and usage ledger; a model is not
what is tested here), and the requests its usage ledgers record are compared with the plan's
first attempts for the same parameters.

Where the plan is an upper bound by design, the parameters pin the case where it is exact:
stage 1 counts `max_rounds` rounds per pool (growth stops earlier at the target or at
saturation), so the targets are out of reach and the saturation window longer than the
rounds; re-asks and retries are outside the first attempts (the stub answers every request
readably, at once); the judge check samples no more replies than are scored; conversations
the reference prompts drop are not counted (workbook prompts here).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from aloe.core.config import Params, params_from_dict
from aloe.llm import load_usage_history
from aloe.operations import plan as planning
from aloe.stages import conversations, evaluation, personas
from aloe.stages.policy import POLICY_ROLE
from tests.conftest import stub_roles, tiny_dict


def _params(tmp_path: Path, base_url: str) -> Params:
    """Two seeds of each kind and few items a round, so that the embedding model (the novelty
    filter, the leakage screen) has little to encode; every target out of reach of two rounds
    (2 seeds + 2 rounds x 2 items), the saturation window longer than the rounds."""
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "profiles.jsonl").write_text(json.dumps(
        "She is a 34-year-old nurse in Leeds who bakes bread.") + "\n" + json.dumps(
        "He is a 61-year-old retired pilot in Cork who keeps bees.") + "\n")
    (seeds / "personalities.jsonl").write_text(json.dumps(
        "She is patient, dry-humoured and blunt.") + "\n" + json.dumps(
        "He is restless, warm and easily distracted.") + "\n")
    roles = stub_roles(base_url, max_retries=0)
    roles["second_judge"] = {**roles["judge"]}
    data = tiny_dict(
        tmp_path, roles=roles,
        personas={"seeds": str(seeds), "profiles_target": 50, "personalities_target": 50,
                  "benchmark_profiles": 20, "benchmark_personalities": 20, "generate_n": 2,
                  "sample_k": 2, "calls_per_round": 1, "max_rounds": 2,
                  "saturation_window": 3, "pairings_per_profile": 1},
        conversations={"n_conversations": 3, "turns": 2, "judge_rule": "both_orders",
                       "concurrency": 4},
        evaluation={"turns": 2, "limit": 3, "bootstrap_samples": 50,
                    "inference_probe": True, "simulator_check": True,
                    "judge_check": {"sample": 4},
                    "models": [{"name": "served", "model": "stub", "base_url": base_url}]},
        # GRPO's count is a bound (the policy's sampled replies may repeat and hit the cache):
        # tests/test_grpo.py checks the bound itself
        grpo={"enabled": False})
    return params_from_dict(data, source="plan-matches-run(test)")


def _asked(params: Params) -> Counter[tuple[str, str]]:
    """Requests the stages asked, as the ledgers recorded them, by the plan's (stage, role):
    sent to a backend, or answered by the cache when identical to an earlier one of the run
    (the plan counts first attempts as if with an empty cache; here round 0 of a training pool
    and of its benchmark pool can show the same two seeds). A model under test behind an
    endpoint is recorded as role `policy` under the stage `evaluate-NAME`."""
    asked: Counter[tuple[str, str]] = Counter()
    for entry in load_usage_history(params.layout):
        stage = entry["stage"]
        for role, usage in entry["roles"].items():
            assert usage["retries"] == 0 and usage["failures"] == 0, (stage, role, usage)
            if role == POLICY_ROLE:
                stage, role = "evaluate", f"policy:{stage.split('-', 1)[1]}"
            asked[(stage, role)] += usage["requests"] + usage["cache_hits"]
    return asked


def test_the_plans_requests_are_the_requests_a_tiny_run_sends(tmp_path: Path, stub) -> None:
    params = _params(tmp_path, stub.base_url)
    planned = {(stage, role): entry["requests"]
               for stage, value in planning.make_plan(params).to_json()["stages"].items()
               for role, entry in value["roles"].items() if stage != "preflight"}
    summary = personas.run_stage(params)
    assert {name: pool.stop_reason for name, pool in summary.pools.items()} == dict.fromkeys(
        ["profiles", "personalities", "benchmark_profiles", "benchmark_personalities"],
        "max_rounds")  # the case where stage 1's count is exact
    conversations.run_stage(params)
    evaluation.run_stage(params)
    assert dict(_asked(params)) == planned
    assert {stage for stage, _ in planned} == {"personas", "conversations", "evaluate"}
    assert planned[("evaluate", "second_judge")] == 4
    assert planned[("evaluate", "policy:served")] == 3 * 2 * 2  # replies and probes


@pytest.mark.parametrize("rule,votes", [("both_orders", 2), ("logprobs", 2),
                                        ("single_random", 1), ("hinted_first", 1)])
def test_the_plan_counts_the_judges_votes_of_each_rule(tmp_path: Path, rule: str,
                                                       votes: int) -> None:
    """The plan's judge requests of stage 2 follow the rule's votes (both orders: two)."""
    data = tiny_dict(tmp_path, conversations={"judge_rule": rule})
    plan = planning.make_plan(params_from_dict(data)).to_json()["stages"]
    c = data["conversations"]
    assert plan["conversations"]["roles"]["judge"]["requests"] == \
        c["n_conversations"] * c["turns"] * votes
