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
    ("sft:\n  trainer:\n    learnig_rate: 0.1\n",
     "key 'sft.trainer': 'learnig_rate' is not an option of TRL's SFTConfig"),
    ("dpo:\n  trainer:\n    beta: high\n", "key 'dpo.trainer': 'beta' takes float, got 'high'"),
    ("dpo:\n  trainer:\n    max_steps: true\n", "'max_steps' takes int, got True"),
    ("sft:\n  trainer:\n    seed: 3\n", "'seed' is not set here: set run.seed"),
    ("sft:\n  learning_rate: 0.1\n", "unknown key 'sft.learning_rate'"),
    ("extends: nowhere.yaml\n", "key 'extends': parameter file not found"),
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
    assert params.layout.cache_path.name == "llm.sqlite"


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


def test_trainer_options_pass_through_with_defaults_filled() -> None:
    params = params_from_dict({"dpo": {"trainer": {"beta": 0.9, "report_to": "tensorboard",
                                                   "loss_type": ["sigmoid"]}}})
    trainer = params.dpo.trainer
    assert trainer["beta"] == 0.9 and trainer["report_to"] == "tensorboard"
    assert trainer["learning_rate"] == 5e-5 and trainer["max_length"] == 1024  # defaults
    assert params.sft.trainer["learning_rate"] == 2e-4 and "beta" not in params.sft.trainer
    with pytest.raises(ParamsError, match="'beta' is not an option of TRL's SFTConfig"):
        params_from_dict({"sft": {"trainer": {"beta": 0.9}}})


def test_renamed_trainer_options_load_under_their_current_names() -> None:
    """transformers 5 renamed gradient checkpointing: the old names still load, and TRL is
    handed only the current ones (so it warns about nothing); the defaults use them too."""
    params = params_from_dict({"sft": {"trainer": {"gradient_checkpointing": False,
                                                   "gradient_checkpointing_kwargs": {"x": 1}}}})
    trainer = params.sft.trainer
    assert trainer["activation_checkpointing"] is False
    assert trainer["activation_checkpointing_kwargs"] == {"x": 1}
    assert "gradient_checkpointing" not in trainer and "gradient_checkpointing_kwargs" not in trainer
    assert params.dpo.trainer["activation_checkpointing"] is True  # the default, new name
    with pytest.raises(ParamsError, match="'gradient_checkpointing' and 'activation_checkpointing'"
                                          " disagree"):
        params_from_dict({"dpo": {"trainer": {"gradient_checkpointing": True,
                                              "activation_checkpointing": False}}})


def test_trainer_options_are_trls_own() -> None:
    """The option names read from TRL's source are exactly its config dataclasses' fields."""
    import dataclasses

    import trl

    from aloe.trainer_options import trainer_options

    for stage, config in (("sft", trl.SFTConfig), ("dpo", trl.DPOConfig)):
        assert set(trainer_options(stage)) == {f.name for f in dataclasses.fields(config)
                                               if not f.name.startswith("_")}


def test_a_profile_extends_another_and_lists_only_what_changes(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "run: {name: base, seed: 3}\n"
        "roles:\n  judge: {model: big, temperature: 0.0, max_tokens: 16}\n"
        "dpo:\n  trainer: {beta: 0.2, learning_rate: 1.0e-5}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text(
        "extends: ../base.yaml\nrun: {name: child}\nroles:\n  judge: {max_tokens: 4}\n"
        "dpo:\n  trainer: {beta: 0.9}\n")
    child = load_params(tmp_path / "sub" / "child.yaml")
    assert (child.run.name, child.run.seed) == ("child", 3)
    assert (child.roles.judge.model, child.roles.judge.max_tokens) == ("big", 4)
    assert child.dpo.trainer["beta"] == 0.9 and child.dpo.trainer["learning_rate"] == 1e-5
    (tmp_path / "loop.yaml").write_text("extends: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ParamsError, match="extends itself"):
        load_params(tmp_path / "loop.yaml")


def test_the_vllm_profile_is_the_paper_profile_with_other_roles() -> None:
    paper, vllm = load_params(ROOT / "params" / "paper.yaml"), load_params(ROOT / "params" /
                                                                           "vllm.yaml")
    same = {"personas", "conversations", "sft", "dpo", "local_model"}
    for section in same:
        assert getattr(vllm, section) == getattr(paper, section), section
    for role in vllm.roles.as_mapping().values():
        assert role.base_urls == ["http://127.0.0.1:8000/v1"] and role.api_key_env is None
        assert role.price_input_per_1m == role.price_output_per_1m == 0.0
    text = (ROOT / "params" / "vllm.yaml").read_text()
    assert "extends: paper.yaml" in text and "sft:" not in text


def test_the_run_layout_names_every_file_in_one_place(tmp_path: Path) -> None:
    params = params_from_dict({"run": {"name": "r", "output_dir": str(tmp_path)}})
    layout = params.layout
    assert layout.run_dir == tmp_path / "r"
    assert layout.cache_path == tmp_path / "cache" / "llm.sqlite"
    assert layout.eval_records("dpo") == tmp_path / "r" / "eval" / "dpo.jsonl"
    assert layout.adapter("sft") == tmp_path / "r" / "adapters" / "sft"
    with pytest.raises(ValueError, match="unknown training stage 'ppo'"):
        layout.adapter("ppo")


def test_notebook_params_follow_an_injected_extends(tmp_path: Path) -> None:
    """papermill -f params/vllm.yaml injects `extends` like any other key."""
    injected = "# Parameters\nextends = 'paper.yaml'\nrun = {'name': 'vllm'}\n"
    namespace = {"In": [injected], "extends": "paper.yaml", "run": {"name": "vllm"}}
    params = notebook_params(namespace)
    assert params.run.name == "vllm" and params.conversations.n_conversations == 3000
