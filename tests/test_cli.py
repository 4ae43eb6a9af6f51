"""The `aloe` command as a person meets it: `--version`, `--help`, `--set` for one run (checked
like the file, recorded in the run), and where it runs from (the project is found from the
parameter file; with no project, exit 2 and one line, nothing written)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
import yaml

from aloe.core.config import load_params, parse_set
from aloe.core.errors import ParamsError
from aloe.operations import cli
from tests.conftest import ROOT, tiny_dict

ALOE = [sys.executable, "-m", "aloe"]


def _aloe(cwd: Path, *args: str, root: Path | None = None,
          timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`aloe ARGS` started in `cwd`; ALOE_ROOT only when `root` is given (the tests' own
    process sets it for everything else)."""
    env = {k: v for k, v in os.environ.items() if k != "ALOE_ROOT"}
    if root is not None:
        env["ALOE_ROOT"] = str(root)
    return subprocess.run([*ALOE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _project(tmp_path: Path, data: dict | None = None) -> tuple[Path, Path]:
    """A project folder (params/p.yaml, notebooks/) and an empty folder elsewhere to start from."""
    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    (root / "notebooks").symlink_to(ROOT / "notebooks")
    (root / "params" / "p.yaml").write_text(yaml.safe_dump(data or tiny_dict(tmp_path)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return root, elsewhere


def test_version_is_the_installed_packages(tmp_path: Path) -> None:
    version = metadata.version("aloe")
    assert version == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for flag in ("--version", "-V"):
        result = _aloe(tmp_path, flag)  # anywhere, even outside a project
        assert (result.returncode, result.stdout, result.stderr) == (0, f"aloe {version}\n", "")
    import aloe

    assert aloe.__version__ == version


def test_help_lists_each_command_on_one_line_and_the_exit_codes(tmp_path: Path) -> None:
    result = _aloe(tmp_path, "--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    for command in ("run", "train", "evaluate"):
        [line] = [line for line in lines if line.split()[:1] == [command]]
        assert len(line.split()) > 3  # the command and its one-line description
    assert "exit codes:" in lines
    assert [line.split()[0] for line in lines[lines.index("exit codes:") + 1:]
            if line.split() and line.split()[0].isdigit()] == ["0", "1", "2"]

    run_help = _aloe(tmp_path, "run", "--help").stdout
    for option in ("--stages", "--run-name", "--limit", "--set", "--quiet"):
        assert re.search(rf"^\s+{option}\b", run_help, re.M), option
    assert "--set conversations.turns=1" in run_help and "exit codes:" in run_help


def test_set_changes_the_mapping_before_validation(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """What the CLI resolves (the function it calls): values are YAML, merged key by key over
    the file like `extends`, the shorthand options are the same mechanism, and the record
    names every change as typed."""
    root, _ = _project(tmp_path)
    args = cli._parser().parse_args([
        "run", str(root / "params" / "p.yaml"), "--run-name", "one-off",
        "--set", "conversations.turns=1", "--set", "roles.judge.model=gpt-4o",
        "--set", "dpo.trainer.beta=0.5", "--set", "report.title=Run #2: beta 0.5, 2024-01-01",
        "--set", "roles.user.base_url=[http://a:1/v1, http://b:1/v1]",
        "--set", "evaluation.limit=null", "--limit", "3"])
    monkeypatch.setenv("ALOE_ROOT", str(root))
    params, shown = cli.resolve_params(args)
    assert shown == "params/p.yaml"
    assert params.conversations.turns == 1 and params.conversations.n_conversations == 4
    assert (params.roles.judge.model, params.roles.judge.max_tokens) == ("gpt-4o", 8)
    assert params.dpo.trainer["beta"] == 0.5 and params.dpo.trainer["learning_rate"] == 5e-5
    assert params.report.title == "Run #2: beta 0.5, 2024-01-01"  # text as typed
    assert params.roles.user.base_urls == ["http://a:1/v1", "http://b:1/v1"]
    assert params.run.name == "one-off" and params.evaluation.limit == 3  # the options win
    assert params.layout.run_dir == Path(tiny_dict(tmp_path)["run"]["output_dir"]) / "one-off"
    assert params.overrides == (
        "--set conversations.turns=1", "--set roles.judge.model=gpt-4o",
        "--set dpo.trainer.beta=0.5", "--set 'report.title=Run #2: beta 0.5, 2024-01-01'",
        "--set 'roles.user.base_url=[http://a:1/v1, http://b:1/v1]'",
        "--set evaluation.limit=null", "--run-name one-off", "--limit 3")
    assert params.source.startswith(f"{root / 'params' / 'p.yaml'} --set conversations.turns=1 ")
    # what every notebook is given: the resolved values
    assert params.model_dump(mode="json")["conversations"]["turns"] == 1


@pytest.mark.parametrize("texts, message", [
    (["conversations.turnz=1"], "--set: unknown key 'conversations.turnz'"),
    (["conversations.turns=1", "colour.hue=blue"], "--set: unknown key 'colour'"),
    (["conversations.turns=many"], "--set: key 'conversations.turns': Input should be a valid "
                                   "integer"),
    (["dpo.trainer.betta=0.5"], "--set: key 'dpo.trainer': 'betta' is not an option of TRL's"),
    (["roles.judge={temprature: 0}"], "--set: unknown key 'roles.judge.temprature'"),
    (["extends=paper.yaml"], "--set: unknown key 'extends'"),
    (["turns"], "--set: expected section.key=value"),
    (["conversations..turns=1"], "--set: expected section.key=value"),
    (["report.title=[unclosed"], "--set: the value of 'report.title' is not valid YAML"),
])
def test_a_bad_set_names_the_option_and_the_key(tmp_path: Path, texts: list[str],
                                                message: str) -> None:
    root, _ = _project(tmp_path)
    with pytest.raises(ParamsError) as error:
        load_params(root / "params" / "p.yaml", [parse_set(text) for text in texts])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_an_error_of_the_file_itself_still_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("conversations:\n  turnz: 2\n")
    with pytest.raises(ParamsError, match=rf"^{re.escape(str(bad))}: unknown key "
                                          r"'conversations.turnz'; did you mean "
                                          r"conversations.turns\?$"):
        load_params(bad, [parse_set("conversations.turns=1")])


def test_unknown_set_key_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    root, _ = _project(tmp_path)
    result = _aloe(root, "run", "params/p.yaml", "--set", "conversations.turnz=1",
                   "--stages", "0", root=root)
    assert (result.returncode, result.stderr) == (
        2, "aloe: --set: unknown key 'conversations.turnz'; did you mean "
        "conversations.turns?\n")
    assert result.stdout == ""
    assert not (tmp_path / "outputs").exists() and not (root / "outputs").exists()


def test_outside_any_project_exit_2_with_one_line_and_nothing_written(tmp_path: Path) -> None:
    """From a folder with no project above it, with a parameter file outside any project too
    (today's silent case: an empty stage table, exit 0, outputs/ made in the current folder),
    and with no file at all."""
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "p.yaml").write_text(yaml.safe_dump({"run": {"name": "lone"}}))
    for args in (["run", str(lone / "p.yaml")], ["run"]):
        result = _aloe(lone, *args)
        assert result.returncode == 2, result
        assert result.stderr.startswith("aloe: no ALOE project (a folder holding params/ and "
                                        f"notebooks/) at or above {lone}")
        assert "ALOE_ROOT" in result.stderr and result.stderr.count("\n") == 1
        assert result.stdout == ""
    assert sorted(p.name for p in lone.iterdir()) == ["p.yaml"]


def test_a_project_without_notebooks_is_refused_not_an_empty_run(tmp_path: Path) -> None:
    """ALOE_ROOT wins, so it must hold the notebooks: zero notebooks is an error."""
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "p.yaml").write_text(yaml.safe_dump(tiny_dict(tmp_path)))
    result = _aloe(tmp_path, "run", "params/p.yaml", root=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"aloe: no numbered notebooks (NN_*.ipynb) in {tmp_path}/notebooks: "
                             "run aloe from the repository's folder, or set ALOE_ROOT to it\n")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_run_from_another_folder_finds_the_project_and_records_the_set(tmp_path: Path) -> None:
    """The Done-means check, for real: `aloe run PROJECT/params/p.yaml --set
    conversations.turns=1 --stages 0`, started in another folder with no ALOE_ROOT. Every role
    is on the fast stub server. The run lands in the project's outputs/ (nothing in the current
    folder), the executed notebook was given the resolved value, and runner.json keeps the
    change as typed."""
    from tests.support.stub_server import StubServer

    with StubServer() as stub:
        data = tiny_dict(tmp_path)
        data["run"].update(output_dir="outputs", cache_path=None)  # relative: in the project
        for role in data["roles"].values():
            role.update(base_url=stub.base_url, model="stub")
        root, elsewhere = _project(tmp_path, data)
        result = _aloe(elsewhere, "run", str(root / "params" / "p.yaml"), "--stages", "0",
                       "--set", "conversations.turns=1", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "00_preflight" in result.stdout and "total" in result.stdout
    assert list(elsewhere.iterdir()) == []
    run_dir = root / "outputs" / "tiny"
    assert f"run folder: {run_dir}" in result.stdout

    record = json.loads((run_dir / "runner.json").read_text())
    assert record["params_file"] == "params/p.yaml"
    assert record["overrides"] == ["--set conversations.turns=1"]
    assert [stage["notebook"] for stage in record["stages"]] == ["00_preflight"]

    notebook = nbformat.read(run_dir / "notebooks" / "00_preflight.ipynb", as_version=4)
    [injected] = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert re.search(r'^conversations = \{[^\n]*"turns": 1,', injected.source, re.M)
    assert data["conversations"]["turns"] != 1  # the file says otherwise


# ------------------------------------------------------------------------------------------
# Bad input that used to end in a traceback (or the OOM killer) is one line (issue 27)
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bad_command_lines_are_refused_in_one_line(tmp_path: Path) -> None:
    from aloe.operations.runner import StageSelectionError, notebooks, parse_stages

    root, _ = _project(tmp_path)
    for run in ("a", "b"):  # two finished runs, as far as `aloe compare` looks
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.json").write_text("{}")
    (tmp_path / "a-file").write_text("")
    cases = {
        "compare into a file": (("compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                 "--output-dir", str(tmp_path / "a-file")),
                                f"{tmp_path / 'a-file'}"),
        "a 300-character run name": (("plan", "params/p.yaml", "--run-name", "a" * 300),
                                     "a run name is at most 100 characters"),
        "the shared cache folder as a run": (("plan", "params/p.yaml", "--run-name", "cache"),
                                             "'cache' is a folder every run shares"),
        "an output folder under /proc": (("run", "params/p.yaml", "--stages", "0", "--set",
                                          "run.output_dir=/proc/aloe-test"),
                                         "/proc/aloe-test: No such file or directory"),
        "a stage range of 200 million": (("run", "params/p.yaml", "--stages", "0-200000000"),
                                         "'0-200000000' goes past the last stage"),
    }
    for name, (args, said) in cases.items():
        result = _aloe(root, *args, root=root, timeout=120)
        assert result.returncode == 2, (name, result.stderr[-500:])
        assert said in result.stderr and result.stderr.count("\n") == 1, (name, result.stderr)
        assert len(result.stderr) < 400, name
    with pytest.raises(StageSelectionError, match="no notebook numbered 09"):
        parse_stages("9", notebooks())


# ------------------------------------------------------------------------------------------
# One way to name a run, and "did you mean" (issue 23)
# ------------------------------------------------------------------------------------------
RUN_COMMANDS = {"run": ["run"], "plan": ["plan"], "train": ["train", "sft"],
                "evaluate": ["evaluate"], "ratings": ["ratings", "export"]}


def _finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  roles: dict | None = None) -> tuple[Path, Path]:
    """A project whose params/p.yaml made outputs/tiny with `--set conversations.turns=3`
    (its manifest written, as `aloe run` writes it when the run starts)."""
    from aloe.core import manifest
    from aloe.core.config import params_from_dict
    from aloe.core.records import write_json

    data = tiny_dict(tmp_path, **({"roles": roles} if roles else {}))
    data["run"].update(output_dir="outputs", cache_path=None)  # relative: in the project
    root, _ = _project(tmp_path, data)
    monkeypatch.setenv("ALOE_ROOT", str(root))
    params = params_from_dict({**data, "conversations": {**data["conversations"], "turns": 3}},
                              source="params/p.yaml")
    write_json(params.layout.manifest, manifest.build(params, "params/p.yaml"))
    return root, params.layout.run_dir


def test_every_command_on_a_run_takes_a_file_and_run_name_or_a_run_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`compare` took run names, `ratings` and `evaluate` a file and no --run-name: now each
    command that works on one run takes PARAMS [--run-name NAME], and PARAMS may be the run's
    folder (the parameters it was made with)."""
    root, run_dir = _finished_run(tmp_path, monkeypatch)
    monkeypatch.chdir(root)
    for name, command in RUN_COMMANDS.items():
        named = cli._parser().parse_args([*command, "params/p.yaml", "--run-name", "other"])
        params, shown = cli.resolve_params(named)
        assert params.layout.run_dir == root / "outputs" / "other", name
        assert shown == "params/p.yaml" and params.conversations.turns != 3, name
        by_folder = cli._parser().parse_args([*command, "outputs/tiny"])
        params, shown = cli.resolve_params(by_folder)
        assert params.layout.run_dir == run_dir and shown == "outputs/tiny/manifest.json", name
        assert params.conversations.turns == 3, name
        changed = cli._parser().parse_args([*command, str(run_dir), "--run-name", "again",
                                            "--set", "conversations.turns=2"])
        params, _ = cli.resolve_params(changed)
        assert params.layout.run_dir == root / "outputs" / "again", name
        assert params.conversations.turns == 2, name
    # compare: a RUN may be a parameter file too (the run its run.name names)
    assert cli._run_folder_of("params/p.yaml") == str(run_dir)
    assert cli._run_folder_of("tiny") == "tiny" and cli._run_folder_of("outputs/tiny") == \
        "outputs/tiny"
    # a folder that no run made is refused in one line, exit 2
    (root / "outputs" / "empty").mkdir()
    assert cli.main(["evaluate", "outputs/empty"]) == 2


def test_a_run_folder_is_refused_in_one_line_when_it_is_no_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = _finished_run(tmp_path, monkeypatch)
    (root / "outputs" / "empty").mkdir()
    result = _aloe(root, "plan", "outputs/empty", root=root)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("aloe: outputs/empty: a folder but not a run folder (no "
                                    "manifest.json")


@pytest.mark.parametrize("argv, said", [
    (["rn"], "argument COMMAND: invalid choice: 'rn'; did you mean run?"),
    (["evalute", "params/tiny.yaml"], "invalid choice: 'evalute'; did you mean evaluate?"),
    (["cache", "chek"], "invalid choice: 'chek'; did you mean check?"),
    (["train", "sf", "params/tiny.yaml"], "invalid choice: 'sf'; did you mean sft?"),
    (["ratings", "exprot", "params/tiny.yaml"], "invalid choice: 'exprot'; did you mean export?"),
    (["run", "--run-nmae", "x"], "unrecognized arguments: --run-nmae; did you mean --run-name?"),
    (["evaluate", "params/tiny.yaml", "--limt=3"],
     "unrecognized arguments: --limt=3; did you mean --limit?"),
    (["evaluate", "params/tiny.yaml", "--benchmark", "alo"],
     "invalid choice: 'alo'; did you mean aloe?"),
])
def test_a_mistyped_command_or_option_says_what_was_meant(argv: list[str], said: str,
                                                          capsys) -> None:
    """Python 3.11's argparse lists the choices but guesses none (3.14 would, on request)."""
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert said in capsys.readouterr().err


def test_a_command_nothing_resembles_gets_no_guess(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["zzzzzz"])
    err = capsys.readouterr().err
    assert "invalid choice: 'zzzzzz' (choose from 'run', 'plan'" in err
    assert "did you mean" not in err


@pytest.mark.slow
def test_a_run_named_by_its_folder_runs_with_the_parameters_it_was_made_with(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`aloe run outputs/tiny` goes the way `aloe run params/p.yaml` goes: the same --set and
    --run-name mechanism over the folder's recorded parameters (here the first run's --set,
    kept), recorded as coming from that manifest."""
    from tests.conftest import stub_roles
    from tests.support.stub_server import StubServer

    with StubServer() as stub:
        root, _ = _finished_run(tmp_path, monkeypatch, stub_roles(stub.base_url))
        again = _aloe(root, "run", "outputs/tiny", "--stages", "0", "--run-name", "again",
                      "--quiet", root=root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"run folder: {root / 'outputs' / 'again'}" in again.stdout
    recorded = json.loads((root / "outputs" / "again" / "manifest.json").read_text())
    assert recorded["params_file"] == "outputs/tiny/manifest.json"
    assert recorded["params"]["conversations"]["turns"] == 3  # the file says otherwise
    assert recorded["params"]["run"]["name"] == "again"
