"""The fidelity declaration (`aloe.core.fidelity`): paper.yaml takes every released value it pins,
docs/fidelity.md's table is the one the code writes from the two profiles, and a profile's value
cannot be stated wrongly in it."""

from __future__ import annotations

from types import ModuleType

import pytest

from aloe.core import fidelity
from aloe.core.config import load_params, params_from_dict
from tests.conftest import ROOT
from tests.support.scripts import load_script

PAPER, PLUS = ROOT / "params" / "paper.yaml", ROOT / "params" / "paper_plus.yaml"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script("fidelity_table")


def test_paper_yaml_takes_every_released_value_and_paper_plus_the_corrections() -> None:
    paper, plus = load_params(PAPER), load_params(PLUS)
    pinned = fidelity.pinned_switches()
    assert {"dpo.trainer.beta", "sft.trainer.max_length", "dpo.trainer.max_length",
            "roles.judge.temperature", "roles.judge.max_tokens", "roles.judge.model",
            "evaluation.max_new_tokens", "conversations.judge_reading"} <= set(pinned)
    wrong = {k: fidelity.value(paper, k) for k, v in pinned.items()
             if fidelity.value(paper, k) != v}
    assert not wrong, wrong
    assert all(row["as released"] for row in fidelity.switch_rows(paper))
    corrected = {row["switch"] for row in fidelity.switch_rows(plus) if not row["as released"]}
    assert {"conversations.judge_reading", "conversations.judge_rule", "dpo.start_from",
            "dpo.trainer.max_length", "sft.trainer.max_length"} <= corrected


def test_the_docs_table_is_the_one_the_code_writes(script: ModuleType) -> None:
    assert script.main(["--check"]) == 0, "run python scripts/fidelity_table.py"
    page = (ROOT / "docs" / "fidelity.md").read_text()
    main, full = script.table().split("\n`params/paper_full.yaml`")
    assert script.table() in page and len(fidelity.DIFFERENCES) == main.count("\n") - 2
    differing = [d for d in fidelity.DIFFERENCES if d.full != fidelity.SAME]
    assert differing and full.count("\n| ") == len(differing) + 2  # header, rule and rows


def test_a_profile_s_value_is_what_the_table_says(tmp_path) -> None:
    """The profiles' columns are filled from the files: a changed value changes the table."""
    data = load_params(PAPER).model_dump(mode="json")  # every key, inherited ones included
    data["dpo"]["trainer"]["learning_rate"] = 3.0e-5
    data["sft"]["trainer"]["max_length"] = 4096
    changed = params_from_dict(data)
    table = fidelity.markdown_table(changed, load_params(PLUS))
    row = next(line for line in table.splitlines() if line.startswith("| learning rates"))
    assert "SFT 1e-4, DPO 3e-5 |" in row
    assert "SFT 4,096, DPO 512;" in table
    assert not any(row["as released"] for row in fidelity.switch_rows(changed)
                   if row["switch"] == "sft.trainer.max_length")


@pytest.mark.parametrize("value, shown", [(1e-4, "1e-4"), (5e-6, "5e-6"), (8192, "8,192"),
                                          (512, "512"), (None, "null"), (True, "true"),
                                          (1.0, "1.0"), (0.05, "0.05"), ("exact", "exact")])
def test_values_are_written_as_a_reader_expects(value, shown) -> None:
    assert fidelity.shown(value) == shown
