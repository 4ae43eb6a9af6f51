"""Defaults in one place, profiles as differences: the schema's defaults are one named profile
(params/defaults.yaml, written from the schema by scripts/params_defaults.py), and every other
file in params/ holds only what differs from what it would inherit (the schema's defaults, or
the file it `extends`)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aloe.core.config import Params, load_params, params_from_dict
from aloe.core.config.loading import extend
from aloe.core.config.schema import ConversationsConfig
from aloe.core.errors import ParamsError
from aloe.core.yaml_reading import parse_yaml
from tests.conftest import ROOT
from tests.support.scripts import load_script

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
                    " {name: dpo, adapter: dpo}, {name: grpo, adapter: grpo}]}\n")
    assert repeated_keys(mine) == ["run.seed", "conversations.turns", "sft.trainer.max_steps",
                                   "evaluation.models"]
    alone = tmp_path / "alone.yaml"
    alone.write_text("run: {name: alone, output_dir: outputs}\n"
                     "roles: {judge: {temperature: 0.0, max_tokens: 32}}\n"
                     "dpo: {trainer: {beta: 0.1, num_train_epochs: 1}}\n")
    # roles.judge given at all is validated from the role's field defaults (temperature 0.7),
    # so its 0.0 is a difference; num_train_epochs 1 is recorded as 1, not the default's 1.0
    assert repeated_keys(alone) == ["run.output_dir", "dpo.trainer.beta"]


def test_the_defaults_profile_is_the_schema() -> None:
    """params/defaults.yaml is what the schema gives a file that names nothing: loading it
    changes nothing, so it can be read (every default, with the schema's comments) and
    extended; and it is the file the script writes, so a changed default shows there."""
    script = load_script("params_defaults")
    assert script.main(["--check"]) == 0, "run python scripts/params_defaults.py (make docs)"
    assert load_params(DEFAULTS).model_dump(mode="json") == Params().model_dump(mode="json")
    assert load_params(DEFAULTS).run.name == "defaults"


def test_every_default_is_in_the_defaults_profile_with_its_comment() -> None:
    """Every key of every section, the trainer's default options included, is written out; a
    key the schema explains carries that explanation."""
    data = parse_yaml(DEFAULTS.read_text(), str(DEFAULTS))
    dumped = Params().model_dump(mode="json")
    assert set(data) == set(dumped)
    for section, values in dumped.items():
        assert set(data[section]) == set(values), section
    assert set(data["sft"]["trainer"]) >= {"learning_rate", "max_length", "save_steps"}
    text = DEFAULTS.read_text()
    assert "  # highest cosine similarity admitted\n  threshold: 0.6\n" in text
    assert "    # -1: train num_train_epochs\n    max_steps: -1\n" in text


def test_a_changed_default_makes_the_defaults_profile_stale(monkeypatch) -> None:
    """A default changed in the schema is written out, and until it is the check fails."""
    script = load_script("params_defaults")

    class Changed(Params):
        conversations: ConversationsConfig = ConversationsConfig(turns=4)

    monkeypatch.setattr(script, "Params", Changed)
    assert "\nconversations:\n" in script.profile() and "  turns: 4\n" in script.profile()
    assert script.main(["--check"]) == 1
