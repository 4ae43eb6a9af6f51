"""The parameter schema: every bad input is one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from aloe.core.config import load_params, notebook_params, params_from_dict
from aloe.core.errors import ParamsError
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
    ("conversations:\n  turns: many\n",
     "key 'conversations.turns': Input should be a valid integer"),
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
    # nothing silent (issue 16): each of these used to load
    ("", "the file is empty (no sections)"),
    ("# a comment and nothing else\n", "the file is empty (no sections)"),
    ("{}\n", "the file is empty (no sections)"),
    ("run: {name: a}\nconversations: {turns: 2}\nrun: {name: b}\n",
     "key 'run' is given twice (lines 1 and 3); keep one"),
    ("conversations:\n  turns: 2\n  n_conversations: 4\n  turns: 3\n",
     "key 'conversations.turns' is given twice (lines 2 and 4)"),
    ("evaluation:\n  models:\n    - {name: a, name: b}\n",
     "key 'evaluation.models.0.name' is given twice"),
    ("conversations:\n  turns: true\n",
     "key 'conversations.turns': Input should be a valid integer (got True)"),
    ("conversations:\n  n_conversations: 2.5\n",
     "key 'conversations.n_conversations': Input should be a valid integer (got 2.5)"),
    ("conversations:\n  n_conversations: 100000000000000\n",
     "key 'conversations.n_conversations': Input should be less than or equal to 10000000"),
    ("conversations:\n  n_conversations: 1.0e14\n",
     "key 'conversations.n_conversations': Input should be a valid integer"),
    ("roles:\n  judge:\n    max_tokens: 10000000\n",
     "key 'roles.judge.max_tokens': Input should be less than or equal to 131072"),
    ("evaluation:\n  max_new_tokens: 10000000\n",
     "key 'evaluation.max_new_tokens': Input should be less than or equal to 131072"),
    ("sft:\n  trainer:\n    max_length: 100000000\n",
     "key 'sft.trainer': 'max_length' must be at most 131,072 (got 100000000)"),
    ("roles:\n  judge:\n    temperature: true\n",
     "key 'roles.judge.temperature': Input should be a valid number (got True)"),
    ("roles:\n  judge:\n    base_url: 'htp:/x'\n",
     "key 'roles.judge.base_url': base_url 'htp:/x' is neither 'local' nor an http(s) URL"),
    ("roles:\n  user:\n    base_url: ['http://a:1/v1', 'ftp://b/v1']\n",
     "key 'roles.user.base_url': base_url 'ftp://b/v1' is neither 'local' nor an http(s) URL"),
    ("evaluation:\n  models:\n    - {name: x, model: m, base_url: 'localhost:8000'}\n",
     "key 'evaluation.models.0.base_url': base_url 'localhost:8000' is neither"),
])
def test_bad_parameters_give_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_floats_take_whole_numbers(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("run: {name: r}\nroles:\n  judge: {temperature: 1, timeout: 30}\n")
    params = load_params(path)
    assert params.roles.judge.temperature == 1.0 and params.roles.judge.timeout == 30.0


def test_bytes_that_are_not_utf8_give_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run:\n  name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value) == (f"{path}: not UTF-8 text (byte 0xe9 at line 2); save the file "
                                "as UTF-8")


@pytest.mark.parametrize("key, where", [("output_dir", "{file}"), ("output_dir", "{file}/sub"),
                                        ("cache_path", "{file}/llm.sqlite")])
def test_a_folder_that_is_a_file_is_refused(tmp_path: Path, key: str, where: str) -> None:
    file = tmp_path / "taken"
    file.write_text("a file, not a folder\n")
    path = tmp_path / "p.yaml"
    path.write_text(f"run: {{name: r, {key}: '{where.format(file=file)}'}}\n")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert str(error.value) == (f"{path}: key 'run.{key}': {file} is a file, not a folder; "
                                f"choose another run.{key} or move the file away")


@pytest.mark.parametrize("section, key, message", [
    ("personas", "import_profiles", "personas.import_profiles: cannot be looked up"),
    ("local_model", "path", "local_model.path: cannot be looked up"),
    ("run", "output_dir", "key 'run.output_dir': 'xxx"),
    ("local_model", "cache_dir", "key 'local_model.cache_dir': 'xxx")])
def test_a_path_too_long_to_look_up_is_one_short_line(tmp_path: Path, section: str, key: str,
                                                     message: str) -> None:
    """A path no file system can hold (a pasted 5,000-character value) is refused by key in a
    short line, not an OSError traceback from looking it up."""
    path = tmp_path / "p.yaml"
    path.write_text(f"{section}: {{{key}: {'x' * 5000}}}\n")
    with pytest.raises(ParamsError) as error:
        load_params(path)
    assert message in str(error.value) and len(str(error.value)) < 400, str(error.value)[:500]


def test_api_keys_are_checked_for_the_stages_that_use_them(monkeypatch) -> None:
    """paper.yaml loads without its key (the schema does not need it); a command refuses it
    for the stages that send requests, naming the role and the variable."""
    from aloe.core.config import check_api_keys

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    params = load_params(ROOT / "params" / "paper.yaml")
    for stages in ([0], [1, 2], [5]):
        with pytest.raises(ParamsError) as error:
            check_api_keys(params, stages)
        message = str(error.value)
        assert "needs the environment variable OPENAI_API_KEY (its API key): it is not set" \
            in message and message.startswith(f"{params.source}: roles.") and "\n" not in message
    check_api_keys(params, [3, 4, 6])  # training and the report send no request
    monkeypatch.setenv("OPENAI_API_KEY", "sk-anything")
    check_api_keys(params, [0, 1, 2, 5])
    endpoint = params_from_dict({"run": {"name": "e"}, "evaluation": {"models": [
        {"name": "api", "model": "m", "base_url": "http://127.0.0.1:9/v1",
         "api_key_env": "ALOE_TEST_UNSET"}]}})
    monkeypatch.delenv("ALOE_TEST_UNSET", raising=False)
    with pytest.raises(ParamsError, match=r"evaluation.models\[api\] needs the environment "
                       "variable ALOE_TEST_UNSET"):
        check_api_keys(endpoint, [5])


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
    assert "gradient_checkpointing" not in trainer
    assert "gradient_checkpointing_kwargs" not in trainer
    assert params.dpo.trainer["activation_checkpointing"] is True  # the default, new name
    with pytest.raises(ParamsError, match="'gradient_checkpointing' and 'activation_checkpointing'"
                                          " disagree"):
        params_from_dict({"dpo": {"trainer": {"gradient_checkpointing": True,
                                              "activation_checkpointing": False}}})


def test_trainer_options_are_trls_own() -> None:
    """The option names read from TRL's source are exactly its config dataclasses' fields."""
    import dataclasses

    import trl

    from aloe.core.trainer_options import trainer_options

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


# ------------------------------------------------------------------------------------------
# Files that would hang or crash the loader are refused in one line (issue 27)
# ------------------------------------------------------------------------------------------
def _lists_bomb(indent: str = "") -> str:
    """The classic: nine levels of nine aliases each, 9**9 values once expanded."""
    names = "abcdefghij"
    lines = [f"{indent}a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip(names, names[1:]):
        lines.append(f"{indent}{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _merge_bomb() -> str:
    names = "abcdefghij"
    lines = ["a: &a {k0: 1, k1: 1}"]
    for i, (prev, name) in enumerate(zip(names, names[1:])):
        lines.append(f"{name}: &{name} {{<<: [*{prev}], x{i}: [" +
                     ", ".join([f"*{prev}"] * 8) + "]}")
    return "\n".join(lines) + "\n"


REFUSED = {
    "a classic alias bomb": (_lists_bomb(), "expands through its aliases to more than"),
    "a merge-key bomb": (_merge_bomb(), "expands through its aliases to more than"),
    "a bomb under sft.trainer": ("extends: tiny.yaml\nsft:\n  trainer:\n" + _lists_bomb("    "),
                                 "expands through its aliases to more than"),
    "a recursive alias": ("run: &r\n  name: [*r]\n", "refers to itself through an alias"),
    "deep nesting": ("run: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
    "deep nesting within the limit of the reader": (
        "run: " + "[" * 80 + "]" * 80 + "\n", "nested more than 64 levels deep"),
    "a NUL character": ("run:\n  name: a\x00b\n", "line 2 (character U+0000 is not allowed)"),
    "a form feed": ("run:\n  name: a\x0cb\n", "line 2 (character U+000C is not allowed)"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_file_that_would_hang_or_crash_the_loader_is_refused_in_one_line(
        tmp_path: Path, case: str) -> None:
    import threading

    text, expected = REFUSED[case]
    path = tmp_path / "params.yaml"
    path.write_text(text)
    (tmp_path / "tiny.yaml").write_text((ROOT / "params" / "tiny.yaml").read_text())
    outcome: dict[str, BaseException] = {}

    def load() -> None:
        try:
            load_params(path)
        except BaseException as error:  # noqa: BLE001 - what the loader raised, to look at
            outcome["error"] = error

    worker = threading.Thread(target=load, daemon=True)  # a hang must fail, not stall the suite
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the loader hung"
    error = outcome.get("error")
    assert isinstance(error, ParamsError), repr(error)
    assert str(error).startswith(f"{path}: ") and expected in str(error)
    assert "\n" not in str(error)


def test_shared_anchors_within_reason_still_load(tmp_path: Path) -> None:
    """Aliases are fine: one anchor used a few times is a few values."""
    path = tmp_path / "params.yaml"
    (tmp_path / "tiny.yaml").write_text((ROOT / "params" / "tiny.yaml").read_text())
    text = ("extends: tiny.yaml\nsft:\n  trainer: &t {learning_rate: 0.001}\n"
            "dpo:\n  trainer: {<<: *t, beta: 0.2}\n")
    path.write_text(text)
    params = load_params(path)
    assert params.dpo.trainer["learning_rate"] == 0.001 and params.dpo.trainer["beta"] == 0.2


@pytest.mark.parametrize("stage,key,value,expected", [
    ("sft", "max_steps", -5, "'max_steps' must be at least 1 (or -1: train num_train_epochs)"),
    ("sft", "max_steps", 0, "'max_steps' must be at least 1"),
    ("dpo", "num_train_epochs", -1, "'num_train_epochs' must be above 0"),
    ("sft", "num_train_epochs", 0, "'num_train_epochs' must be above 0"),
    ("dpo", "learning_rate", float("nan"), "'learning_rate' must be a finite number"),
    ("sft", "learning_rate", float("inf"), "'learning_rate' must be a finite number"),
    ("dpo", "beta", -0.1, "'beta' must be above 0"),
    ("sft", "per_device_train_batch_size", 0, "must be at least 1"),
    ("sft", "push_to_hub", True, "'push_to_hub' is not set here: the workbook never uploads"),
    ("dpo", "hub_token", "hf_secret", "'hub_token' is not set here"),
    ("sft", "hub_model_id", "me/model", "'hub_model_id' is not set here"),
])
def test_trainer_options_that_would_train_nothing_or_leak_a_token_are_refused(
        tmp_path: Path, stage: str, key: str, value: object, expected: str) -> None:
    """Issue 27: a negative max_steps saved an untrained adapter with exit 0, NaN passed, and a
    hub_token landed in manifest.json; now each is refused when the file loads."""
    from tests.conftest import tiny_dict

    data = tiny_dict(tmp_path)
    data[stage]["trainer"] = {**data[stage].get("trainer", {}), key: value}
    with pytest.raises(ParamsError) as error:
        params_from_dict(data, source="test")
    assert expected in str(error.value) and "hf_secret" not in str(error.value)


def test_max_steps_minus_one_still_means_train_the_epochs(tmp_path: Path) -> None:
    from tests.conftest import tiny_dict

    data = tiny_dict(tmp_path)
    data["sft"]["trainer"] = {**data["sft"].get("trainer", {}), "max_steps": -1}
    assert params_from_dict(data, source="test").sft.trainer["max_steps"] == -1


@pytest.mark.parametrize("key,flaw", [("sk-abc\n", "holds a line break (character 7)"),
                                      ("sk-ab\u00e9c", "holds the character U+00E9 (character 6)"),
                                      ("sk-ab c", "holds a space (character 6)")])
def test_a_key_no_http_header_can_carry_is_refused_without_showing_it(
        monkeypatch: pytest.MonkeyPatch, key: str, flaw: str) -> None:
    """Issue 27: such keys passed the load check and failed at the first request."""
    from aloe.core.config import check_api_keys

    monkeypatch.setenv("OPENAI_API_KEY", key)
    params = load_params(ROOT / "params" / "paper.yaml")
    with pytest.raises(ParamsError) as error:
        check_api_keys(params, [2])
    message = str(error.value)
    assert f"the key in OPENAI_API_KEY {flaw}" in message and key.strip() not in message
    assert "\n" not in message


def test_an_endpoint_under_test_takes_its_own_timeout_and_retries(tmp_path: Path) -> None:
    """Issue 27: the model under test had a fixed 120 s timeout and 5 retries (a trickling
    server made stage 5 take 609 s)."""
    from aloe.stages.policy import endpoint_role
    from tests.conftest import tiny_dict

    data = tiny_dict(tmp_path, evaluation={"models": [
        {"name": "api", "model": "m", "base_url": "http://127.0.0.1:9/v1", "timeout": 20,
         "max_retries": 1}]})
    params = params_from_dict(data, source="test")
    role = endpoint_role(params, params.evaluation.models[0])
    assert (role.timeout, role.max_retries) == (20, 1)


# ------------------------------------------------------------------------------------------
# A key that is nearly right says which one was meant (issue 23)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, message", [
    ({"sft": {"trainer": {"learnig_rate": 1e-4}}},
     "key 'sft.trainer': 'learnig_rate' is not an option of TRL's SFTConfig (trl {trl}); did "
     "you mean sft.trainer.learning_rate?"),
    ({"dpo": {"trainer": {"bta": 0.5}}}, "did you mean dpo.trainer.beta?"),
    ({"run": {"nmae": "x"}}, "unknown key 'run.nmae'; did you mean run.name?"),
    ({"runn": {"name": "x"}}, "unknown key 'runn'; did you mean run?"),
    ({"roles": {"second_judge": {"modle": "x"}}},
     "unknown key 'roles.second_judge.modle'; did you mean roles.second_judge.model?"),
    ({"evaluation": {"models": [{"name": "base", "limt": 3}]}},
     "unknown key 'evaluation.models.0.limt'"),
    ({"conversations": {"turnz": 2}},
     "unknown key 'conversations.turnz'; did you mean conversations.turns?"),
])
def test_a_mistyped_key_gets_a_did_you_mean(data: dict, message: str) -> None:
    from importlib import metadata

    with pytest.raises(ParamsError) as error:
        params_from_dict(data, source="p.yaml")
    said = str(error.value)
    assert said.startswith("p.yaml: ") and message.format(trl=metadata.version("trl")) in said
    assert "\n" not in said


def test_a_key_nothing_resembles_gets_no_guess() -> None:
    for data in ({"colour": "blue"}, {"sft": {"trainer": {"zzzzzz": 1}}},
                 {"run": {"qqqq": 1}}):
        with pytest.raises(ParamsError) as error:
            params_from_dict(data, source="p.yaml")
        assert "did you mean" not in str(error.value), data
    with pytest.raises(ParamsError, match=r"'zzzzzz' is not an option of TRL's SFTConfig .*; see "
                                          "its documentation for the options$"):
        params_from_dict({"sft": {"trainer": {"zzzzzz": 1}}}, source="p.yaml")


def test_an_injected_section_that_is_nearly_right_is_named() -> None:
    injected = "# Parameters\nrunn = {'name': 'nb'}\nparams_file = 'x.yaml'\n"
    namespace = {"In": [injected], "runn": {"name": "nb"}, "params_file": "x.yaml"}
    with pytest.raises(ParamsError, match=r"^x.yaml: unknown key 'runn'; did you mean run\?$"):
        notebook_params(namespace)


# ------------------------------------------------------------------------------------------
# A run named by its folder (issue 23): the parameters it was made with
# ------------------------------------------------------------------------------------------
def test_a_run_folder_gives_the_parameters_it_was_made_with(tmp_path: Path) -> None:
    import shutil

    from aloe.core import manifest
    from aloe.core.config import load_run_folder, parse_set
    from aloe.core.records import write_json
    from tests.conftest import tiny_dict

    params = params_from_dict(tiny_dict(tmp_path, conversations={"turns": 3}), source="p.yaml")
    run_dir = params.layout.run_dir
    with pytest.raises(ParamsError, match="no such run folder"):
        load_run_folder(run_dir)
    run_dir.mkdir(parents=True)
    with pytest.raises(ParamsError, match=r"a folder but not a run folder \(no manifest.json"):
        load_run_folder(run_dir)
    write_json(params.layout.manifest, manifest.build(params, "p.yaml"))

    again = load_run_folder(run_dir, source="outputs/tiny")
    assert again.model_dump(mode="json") == params.model_dump(mode="json")
    assert again.layout == params.layout and again.source == "outputs/tiny"
    renamed = load_run_folder(run_dir, [parse_set("dpo.trainer.beta=0.5"),
                                        parse_set("run.name=tiny-beta")])
    assert renamed.layout.run_dir == run_dir.parent / "tiny-beta"
    assert renamed.dpo.trainer["beta"] == 0.5 and renamed.conversations.turns == 3
    with pytest.raises(ParamsError, match=r"^--set: key 'dpo.trainer': 'bta' is not an option"):
        load_run_folder(run_dir, [parse_set("dpo.trainer.bta=0.5")])

    moved = tmp_path / "elsewhere" / "copy"  # a folder moved or copied: read where it is now
    shutil.copytree(run_dir, moved)
    copy = load_run_folder(moved)
    assert copy.layout.run_dir == moved and copy.run.name == "copy"
    assert copy.conversations.turns == 3

    params.layout.manifest.write_text("{not json")
    with pytest.raises(ParamsError, match="not a run manifest with its parameters"):
        load_run_folder(run_dir)
