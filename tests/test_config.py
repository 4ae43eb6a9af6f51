"""The parameter schema: every bad input is one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from aloe.config import ParamsError, load_params, notebook_params, params_from_dict
from tests.conftest import ROOT


def test_shipped_profiles_validate() -> None:
    for name in ("tiny.yaml", "paper.yaml", "vllm.yaml"):
        params = load_params(ROOT / "params" / name)
        assert params.run.name == name.removesuffix(".yaml")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"nowhere\.yaml: parameter file not found"):
        load_params(tmp_path / "nowhere.yaml")


@pytest.mark.parametrize("text, message", [
    ("roles:\n  judge:\n    temprature: 0.1\n", "unknown key 'roles.judge.temprature'"),
    ("colour: blue\n", "unknown key 'colour'"),
    ("conversations:\n  turns: many\n", "key 'conversations.turns': Input should be a valid integer"),
    ("sft:\n  lora_r: 0\n", "key 'sft.lora_r': Input should be greater than or equal to 1"),
    ("personas:\n  import_profiles: no/such/file.jsonl\n",
     "personas.import_profiles: file not found: no/such/file.jsonl"),
    ("run: [1, 2\n", "not valid YAML at line"),
])
def test_bad_parameters_give_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_several_base_urls_and_defaults() -> None:
    params = params_from_dict({"roles": {"user": {"base_url": ["http://a/v1", "http://b/v1"]}}})
    assert params.roles.user.base_urls == ["http://a/v1", "http://b/v1"]
    assert not params.roles.user.is_local and params.roles.judge.is_local
    assert params.cache_path.name == "llm.sqlite"


def test_notebook_params_reads_papermills_injected_cell() -> None:
    injected = "# Parameters\nrun = {'name': 'nb'}\nparams_file = 'x.yaml'\n"
    namespace = {"In": ["", "params_file = None", injected], "run": {"name": "nb"},
                 "params_file": "x.yaml", "roles": None}
    assert notebook_params(namespace).run.name == "nb"
    namespace["In"].append("# Parameters\ncolour = 'blue'\n")
    with pytest.raises(ParamsError, match="x.yaml: unknown key 'colour'"):
        notebook_params(namespace)


def test_notebook_params_without_injection_runs_the_default_profile() -> None:
    assert notebook_params({"In": ["params_file = None"], "params_file": None}).run.name == "tiny"
