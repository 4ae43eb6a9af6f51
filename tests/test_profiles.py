"""Defaults in one place, profiles as differences: every file in params/ holds only what
differs from what it would inherit (the schema's defaults, or the file it `extends`)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aloe.config import params_from_dict
from aloe.config.loading import extend
from aloe.errors import ParamsError
from aloe.yaml_reading import parse_yaml
from tests.conftest import ROOT

PARAMS = ROOT / "params"
DEFAULTS = PARAMS / "defaults.yaml"
PROFILES = sorted(path for path in PARAMS.glob("*.yaml") if path != DEFAULTS)


def resolved(data: dict[str, Any], folder: Path) -> str | None:
    """The parameters a file's mapping resolves to, as a run records them (the JSON the stage
    stamps digest): two mappings are the same profile exactly when these are equal. None: the
    mapping is no valid profile (a key it cannot do without was deleted)."""
    try:
        params = params_from_dict(extend(data, folder, "<test>"))
    except ParamsError:
        return None
    return json.dumps(params.model_dump(mode="json"), sort_keys=True)


def leaves(data: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path of a file's mapping down to a value that is not a mapping (`extends`
    aside): a list or an empty mapping is one value."""
    for key, value in data.items():
        if not path and key == "extends":
            continue
        if isinstance(value, dict) and value:
            yield from leaves(value, (*path, key))
        else:
            yield (*path, key)


def without(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The mapping with the key at `path` deleted, and a mapping it leaves empty deleted too
    (what a person removing that line would write)."""
    kept = copy.deepcopy(data)
    chain = [kept]
    for key in path[:-1]:
        chain.append(chain[-1][key])
    del chain[-1][path[-1]]
    for depth in range(len(path) - 1, 0, -1):
        if chain[depth]:
            break
        del chain[depth - 1][path[depth - 1]]
    return kept


def repeated_keys(file: Path) -> list[str]:
    """The keys of `file` whose line could be deleted without changing the parameters it
    resolves to: each repeats what the schema or the file it extends gives anyway."""
    data = parse_yaml(file.read_text(encoding="utf-8"), str(file))
    whole = resolved(data, file.parent)
    return [".".join(path) for path in leaves(data)
            if resolved(without(data, path), file.parent) == whole]


def test_the_shipped_profiles_are_found() -> None:
    assert {path.name for path in PROFILES} >= {"tiny.yaml", "paper.yaml", "paper_plus.yaml",
                                                 "paper_full.yaml", "vllm.yaml"}


@pytest.mark.parametrize("file", PROFILES, ids=lambda path: path.name)
def test_no_profile_repeats_a_value_it_inherits(file: Path) -> None:
    repeated = repeated_keys(file)
    parent = parse_yaml(file.read_text(encoding="utf-8"), str(file)).get("extends")
    assert not repeated, (f"params/{file.name} repeats what it inherits (from "
                          f"{parent or 'the schema defaults, params/defaults.yaml'}): "
                          f"delete {', '.join(repeated)}")


def test_a_repeated_default_is_found_and_named(tmp_path: Path) -> None:
    """The check itself: a line equal to the schema's default (at any depth, a role's and a
    trainer option's included) or to the extended file's value is named; a line that changes
    the resolved parameters, even to the same number written as another type, is not."""
    (tmp_path / "tiny.yaml").write_text((PARAMS / "tiny.yaml").read_text())
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: tiny.yaml\nrun: {name: mine, seed: 0}\n"
                    "conversations: {turns: 2, n_conversations: 5}\n"
                    "sft: {trainer: {max_steps: 4, learning_rate: 1.0e-3}}\n"
                    "evaluation: {models: [{name: base}, {name: sft, adapter: sft},"
                    " {name: dpo, adapter: dpo}]}\n")
    assert repeated_keys(mine) == ["run.seed", "conversations.turns", "sft.trainer.max_steps",
                                   "evaluation.models"]
    alone = tmp_path / "alone.yaml"
    alone.write_text("run: {name: alone, output_dir: outputs}\n"
                     "roles: {judge: {temperature: 0.0, max_tokens: 32}}\n"
                     "dpo: {trainer: {beta: 0.1, num_train_epochs: 1}}\n")
    # roles.judge given at all is validated from the role's field defaults (temperature 0.7),
    # so its 0.0 is a difference; num_train_epochs 1 is recorded as 1, not the default's 1.0
    assert repeated_keys(alone) == ["run.output_dir", "dpo.trainer.beta"]
