"""`aloe run`: bad input exits 2 with one line and writes nothing; the preflight notebook runs
for real through papermill; an API key never reaches a file under outputs/."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from tests.conftest import ROOT, tiny_dict

ALOE = [sys.executable, "-m", "aloe"]


def _project(tmp_path: Path) -> Path:
    """A project folder of its own (params/, notebooks/) so that outputs/ land in tmp_path."""
    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    (root / "notebooks").symlink_to(ROOT / "notebooks")
    return root


def _aloe(root: Path, *args: str, env: dict[str, str] | None = None,
          timeout: float = 600) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "ALOE_ROOT": str(root), **(env or {})}
    return subprocess.run([*ALOE, *args], cwd=root, env=environment, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("content, expected", [
    (None, "params/missing.yaml: parameter file not found"),
    ("run:\n  name: x\nroles:\n  judge:\n    temprature: 0.1\n",
     "params/missing.yaml: unknown key 'roles.judge.temprature'; did you mean "
     "roles.judge.temperature?"),
    ("", "params/missing.yaml: the file is empty (no sections): a run would silently use every "
     "default; start from a profile instead, e.g. `extends: tiny.yaml`"),
    ("run: {name: x}\nrun: {name: y}\n",
     "params/missing.yaml: key 'run' is given twice (lines 1 and 2); keep one"),
    (b"run: {name: \xff}\n", "params/missing.yaml: not UTF-8 text (byte 0xff at line 1); save "
     "the file as UTF-8"),
    ("run: {name: x, output_dir: params}\nconversations: {turns: true}\n",
     "params/missing.yaml: key 'conversations.turns': Input should be a valid integer (got "
     "True)"),
    ("run: {name: x, output_dir: params/missing.yaml}\n", "params/missing.yaml: key "
     "'run.output_dir': {root}/params/missing.yaml is a file, not a folder; choose another "
     "run.output_dir or move the file away"),
])
def test_bad_parameter_file_exits_2_and_writes_nothing(tmp_path: Path, content, expected) -> None:
    root = _project(tmp_path)
    if isinstance(content, bytes):
        (root / "params" / "missing.yaml").write_bytes(content)
    elif content is not None:
        (root / "params" / "missing.yaml").write_text(content)
    before = sorted(root.rglob("*"))
    result = _aloe(root, "run", "params/missing.yaml")
    assert result.returncode == 2
    assert result.stderr == f"aloe: {expected.format(root=root)}\n"
    assert not (root / "outputs").exists() and sorted(root.rglob("*")) == before


@pytest.mark.parametrize("args, expected", [
    (["--stages", ""], "--stages: empty; give numbers and ranges (e.g. 0,2-4), or leave "
     "--stages out to run every stage"),
    (["--stages", "  "], "--stages: empty;"),
    (["--stages", "3-1"], "--stages: '3-1' is a reversed range (it selects nothing); write 1-3"),
    (["--stages", "0,,2"], "--stages: cannot read ''"),
    (["--run-name", ""], "--run-name: key 'run.name': a run name is letters, digits, '.', '_' "
     "and '-', starting with a letter or digit (got '')"),
])
def test_cli_edges_exit_2_with_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    """Each of these used to run every stage, none, or the file's run name without a word."""
    root = _project(tmp_path)
    (root / "params" / "p.yaml").write_text(yaml.safe_dump(tiny_dict(tmp_path)))
    result = _aloe(root, "run", "params/p.yaml", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"aloe: {expected}") and result.stderr.count("\n") == 1
    assert not (tmp_path / "outputs").exists()


def test_a_missing_api_key_is_refused_before_the_run_folder(tmp_path: Path) -> None:
    """A role's key variable is checked when the command starts, not in stage 0's ping."""
    root = _project(tmp_path)
    data = tiny_dict(tmp_path)
    data["roles"]["judge"].update(base_url="http://127.0.0.1:9/v1", model="m",
                                  api_key_env="ALOE_TEST_UNSET_KEY")
    (root / "params" / "p.yaml").write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k != "ALOE_TEST_UNSET_KEY"}
    for command in (["run", "params/p.yaml", "--stages", "0"], ["evaluate", "params/p.yaml"]):
        result = subprocess.run([*ALOE, *command], cwd=root, capture_output=True, text=True,
                                env={**env, "ALOE_ROOT": str(root)}, timeout=600)
        assert result.returncode == 2, result.stderr
        assert result.stderr == ("aloe: params/p.yaml: roles.judge needs the environment "
                                 "variable ALOE_TEST_UNSET_KEY (its API key): it is not set; "
                                 "export it (export ALOE_TEST_UNSET_KEY=...), or point "
                                 "roles.judge at a server that needs no key\n")
        assert not (tmp_path / "outputs").exists()


def test_bad_stage_selection_and_run_name_exit_2(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "params" / "p.yaml").write_text(yaml.safe_dump(tiny_dict(tmp_path)))
    result = _aloe(root, "run", "params/p.yaml", "--stages", "42")
    assert result.returncode == 2 and "no notebook numbered 42" in result.stderr
    result = _aloe(root, "run", "params/p.yaml", "--run-name", "../escape")
    assert result.returncode == 2 and "--run-name" in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_preflight_runs_and_no_key_leaks(tmp_path: Path, local_server) -> None:
    """The preflight notebook, executed by the runner against the real local server, with every
    role naming an API key variable: the plan and the readiness checks are in the executed
    notebook, every check passed, and the key's value is in no file under outputs/."""
    secret = "sk-test-" + "k3y" * 10
    data = tiny_dict(tmp_path)
    for role in data["roles"].values():
        role.update(base_url=local_server.base_url, model=local_server.model,
                    api_key_env="ALOE_TEST_API_KEY")
    root = _project(tmp_path)
    (root / "params" / "p.yaml").write_text(yaml.safe_dump(data))
    result = _aloe(root, "run", "params/p.yaml", "--stages", "0", "--run-name", "pre",
                   env={"ALOE_TEST_API_KEY": secret})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "00_preflight" in result.stdout and "total" in result.stdout

    executed = tmp_path / "outputs" / "pre" / "notebooks" / "00_preflight.ipynb"
    notebook = nbformat.read(executed, as_version=4)
    text = "\n".join(str(output) for cell in notebook.cells for output in cell.get("outputs", []))
    assert "5 evaluate" in text and "conversations" in text  # what each stage produces
    assert "forecast" in text and "ceiling" in text and "total:" in text  # the plan
    assert "endpoint judge" in text and "ready: " in text  # every check passed
    assert "Error" not in text and "FAILED" not in text

    for file in (tmp_path / "outputs").rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes(), f"API key written to {file}"


def test_second_run_of_the_same_name_is_refused(tmp_path: Path) -> None:
    from aloe.core.errors import RunLockedError
    from aloe.core.layout import RunLayout
    from aloe.operations.runner import run_lock

    layout = RunLayout(run_dir=tmp_path / "outputs" / "same", cache_path=tmp_path / "c.sqlite")
    with run_lock(layout):
        holder = subprocess.run(
            [sys.executable, "-c", "from pathlib import Path\n"
             "from aloe.core.layout import RunLayout\nfrom aloe.operations.runner import run_lock\n"
             f"with run_lock(RunLayout(Path({str(layout.run_dir)!r}), Path('c'))): pass"],
            capture_output=True, text=True)
        assert holder.returncode != 0 and "is in use by pid" in holder.stderr
        with pytest.raises(RunLockedError, match="is in use") as error:
            with run_lock(layout):
                pass  # pragma: no cover
        assert error.value.exit_code == 2
    with run_lock(layout):  # free again once the holder is done
        pass


@pytest.mark.slow
def test_cli_exit_codes_follow_the_error_type(tmp_path: Path) -> None:
    """A locked run folder is refused input (2); so is a training stage without its data; an
    evaluation that cannot find its benchmark is a failed stage (1). Each is one line."""
    from aloe.core.layout import RunLayout
    from aloe.operations.runner import run_lock

    root = _project(tmp_path)
    data = tiny_dict(tmp_path)
    (root / "params" / "p.yaml").write_text(yaml.safe_dump(data))
    run_dir = Path(data["run"]["output_dir"]) / data["run"]["name"]
    with run_lock(RunLayout(run_dir=run_dir, cache_path=tmp_path / "c.sqlite")):
        locked = _aloe(root, "run", "params/p.yaml", "--stages", "0")
    assert locked.returncode == 2 and "is in use by pid" in locked.stderr

    untrained = _aloe(root, "train", "sft", "params/p.yaml")
    assert untrained.returncode == 2
    assert untrained.stderr.startswith("aloe: params/p.yaml: no sft dataset at ")
    assert "run stage 2" in untrained.stderr and untrained.stderr.count("\n") == 1

    unevaluated = _aloe(root, "evaluate", "params/p.yaml", "--limit", "1")
    assert unevaluated.returncode == 1
    assert "no benchmark personas at" in unevaluated.stderr and "run stage 1" in unevaluated.stderr
    assert unevaluated.stderr.count("\n") == 1


@pytest.mark.slow
def test_every_command_that_writes_into_a_run_folder_takes_its_lock(tmp_path: Path) -> None:
    """Issue 27: beside a running `aloe run`, `aloe evaluate` wrote duplicate records and two
    SFT trainings ran into one folder. Now each is refused in one line while the folder is
    held, as a second `aloe run` is."""
    from aloe.core.layout import RunLayout
    from aloe.operations.runner import run_lock

    root = _project(tmp_path)
    data = tiny_dict(tmp_path)
    (root / "params" / "p.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "ratings.json").write_text("{}")
    run_dir = Path(data["run"]["output_dir"]) / data["run"]["name"]
    with run_lock(RunLayout(run_dir=run_dir, cache_path=tmp_path / "c.sqlite")):
        refused = {name: _aloe(root, *command) for name, command in {
            "evaluate": ("evaluate", "params/p.yaml", "--limit", "1"),
            "train": ("train", "sft", "params/p.yaml"),
            "ratings import": ("ratings", "import", "params/p.yaml",
                               str(tmp_path / "ratings.json"))}.items()}
    for name, result in refused.items():
        assert result.returncode == 2, (name, result.stderr)
        assert f"run folder {run_dir} is in use by pid" in result.stderr, name
        assert result.stderr.count("\n") == 1, name


@pytest.mark.slow
def test_a_stage_that_lost_items_ends_the_run_with_exit_1_and_one_line(tmp_path: Path) -> None:
    """70% of requests failing used to finish stage 2 with 1 of 3 conversations and exit 0,
    the normal timing table printed; every request failing stopped on KeyError: 'turn'."""
    import json

    from aloe.core.records import write_records
    from tests.conftest import stub_roles
    from tests.support.stub_server import StubServer

    root = _project(tmp_path)
    with StubServer(fail_rate=0.7, seed=2) as stub:
        data = tiny_dict(tmp_path, roles=stub_roles(stub.base_url, max_retries=1,
                                                    concurrency=4),
                         conversations={"n_conversations": 3, "turns": 2})
        (root / "params" / "p.yaml").write_text(yaml.safe_dump(data))
        personas = Path(data["run"]["output_dir"]) / data["run"]["name"] / "personas.jsonl"
        write_records(personas, [{"id": f"p{i}", "profile": "He is a 50-year-old plumber in "
                                  "Oslo who fishes.", "personality": "He is shy."}
                                 for i in range(3)])
        result = _aloe(root, "run", "params/p.yaml", "--stages", "2", "--quiet")
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "total" not in result.stdout, result.stderr
    assert lines[0].startswith("aloe: stage 02_conversations failed in cell ")
    assert ": IncompleteStageError: " in lines[0] and " of 3 conversations could not " in lines[0]
    assert f"at {stub.base_url}" in lines[0] and "a rerun retries only those" in lines[0]
    assert lines[0].endswith(f"(traceback: {Path(data['run']['output_dir'])}/tiny/notebooks/"
                             "02_conversations.ipynb)")
    # a failed stage is never stamped finished: the next run does it again (issue 24)
    from aloe.core.config import params_from_dict
    from aloe.operations.stage_stamp import StageStamps, stamp_path

    layout = params_from_dict(data).layout
    assert json.loads(stamp_path(layout, "02_conversations").read_text())["complete"] is False
    verdict = StageStamps(layout, params_from_dict(data)).check(
        root / "notebooks" / "02_conversations.ipynb")
    assert (verdict.fresh, verdict.reason) == (False, "did not finish last time")


# ------------------------------------------------------------------------------------------
# No stray server (issue 16)
# ------------------------------------------------------------------------------------------
def _gone_within(pid: int, seconds: float) -> bool:
    from aloe.core.procs import alive

    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


def test_a_stray_server_whose_owner_is_gone_is_reaped_and_no_other(tmp_path: Path) -> None:
    """The state file names the server and its owner. A `sleep` in its own session stands in
    for the server: the reaper deals in pids, and a real `transformers serve` is started by the
    slow tests below."""
    import json

    from aloe.core.procs import start_time
    from aloe.llm.server import reap_stray_server

    state = tmp_path / "local_server.json"
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    stand_ins = []
    for owner, owner_started, recorded_start in (
            (dead_owner.pid, None, "real"),  # owner gone: the stray is stopped
            (os.getpid(), start_time(os.getpid()), "real"),  # owner alive: left alone
            (dead_owner.pid, None, "other")):  # the pid is another process now: left alone
        stand_in = subprocess.Popen(["sleep", "300"], start_new_session=True)
        stand_ins.append(stand_in)
        started = start_time(stand_in.pid) if recorded_start == "real" else 1
        state.write_text(json.dumps({"base_url": "http://127.0.0.1:9/v1", "model": "m",
                                     "pid": stand_in.pid, "pid_started": started,
                                     "owner": owner, "owner_started": owner_started}))
        reaped = reap_stray_server(state)
        assert reaped == (owner != os.getpid() and recorded_start == "real")
        assert state.exists() == (owner == os.getpid())
        if reaped:
            stand_in.wait(timeout=10)
            assert stand_in.returncode == -15  # SIGTERM to its process group
        else:
            assert stand_in.poll() is None
    for stand_in in stand_ins:
        stand_in.kill()
        stand_in.wait()


def test_a_stray_servers_replicas_are_reaped_with_it(tmp_path: Path) -> None:
    """`local_model.servers: 2`: the state file names the second server too, and a run that
    finds the owner gone stops both (stand-ins again)."""
    import json

    from aloe.core.procs import start_time
    from aloe.llm.server import reap_stray_server

    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    first, second = (subprocess.Popen(["sleep", "300"], start_new_session=True)
                     for _ in range(2))
    state = tmp_path / "local_server.json"
    state.write_text(json.dumps({
        "base_url": "http://127.0.0.1:9/v1", "model": "m", "pid": first.pid,
        "pid_started": start_time(first.pid), "owner": dead_owner.pid, "owner_started": None,
        "replicas": [{"base_url": "http://127.0.0.1:10/v1", "pid": second.pid,
                      "pid_started": start_time(second.pid)}]}))
    try:
        assert reap_stray_server(state) and not state.exists()
        assert first.wait(timeout=10) == -15 and second.wait(timeout=10) == -15
    finally:
        for stand_in in (first, second):
            if stand_in.poll() is None:
                stand_in.kill()
                stand_in.wait()


def _start_run_with_local_server(tmp_path: Path,
                                 env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """`aloe run --stages 0` of the tiny profile (every role `local`) in tmp_path; the run and
    where its local server's state file will be."""
    from tests.conftest import MODEL_CACHE

    root = _project(tmp_path)
    data = tiny_dict(tmp_path)
    data["local_model"]["cache_dir"] = str(MODEL_CACHE)
    (root / "params" / "p.yaml").write_text(yaml.safe_dump(data))
    state = Path(data["run"]["output_dir"]) / "cache" / "local_server.json"
    run = subprocess.Popen([*ALOE, "run", "params/p.yaml", "--stages", "0", "--quiet"], cwd=root,
                           env={**env, "ALOE_ROOT": str(root)}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    return run, state


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_local_server_dies_with_the_run_that_started_it(tmp_path: Path, sig: int) -> None:
    """Killed, `aloe run` used to leave its `transformers serve` running (parent 1) for ever."""
    import json

    from aloe.llm.server import ENV_MODEL, ENV_URL, healthy

    env = {k: v for k, v in os.environ.items() if k not in (ENV_URL, ENV_MODEL)}
    run, state = _start_run_with_local_server(tmp_path, env)
    try:
        deadline = time.monotonic() + 600
        server = None
        while time.monotonic() < deadline and run.poll() is None:
            if state.exists() and healthy(json.loads(state.read_text())["base_url"]):
                server = json.loads(state.read_text())
                break
            time.sleep(0.5)
        assert server is not None, "the run never had its server up"
        assert server["owner"] == run.pid
        os.kill(run.pid, sig)
        run.wait(timeout=30)
        assert _gone_within(server["pid"], 10), "the local server outlived its run"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


@pytest.mark.slow
def test_a_server_the_run_did_not_start_survives_it(tmp_path: Path, local_server) -> None:
    """The session's server (started by this test process, handed over as the runners'
    environment does) is used by a killed `aloe run`, and is still up afterwards."""
    from aloe.llm.server import healthy

    run, _ = _start_run_with_local_server(tmp_path, dict(os.environ))
    executed = tmp_path / "outputs" / "tiny" / "notebooks" / "00_preflight.ipynb"
    try:
        deadline = time.monotonic() + 300
        while not executed.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert executed.exists(), "the run never reached its first notebook"
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    time.sleep(2)
    assert local_server.process.poll() is None and healthy(local_server.base_url)


# ------------------------------------------------------------------------------------------
# A full disk (issue 16)
# ------------------------------------------------------------------------------------------
def _can_mount_privately() -> bool:
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_a_full_disk_is_one_line_leaves_no_partial_file_and_the_rerun_completes(
        tmp_path: Path) -> None:
    """Stage 2 on a real, tiny tmpfs (in a private mount namespace: see
    tests/support/disk_full.py). It used to end in two chained tracebacks, with a 0-byte
    temporary file and an executed notebook that was not valid JSON left behind."""
    import json
    import shutil

    from aloe.core.records import write_records
    from tests.conftest import stub_roles
    from tests.support.stub_server import StubServer

    if shutil.which("unshare") is None or not _can_mount_privately():
        pytest.skip("no private mount namespace here (unshare --user --mount is refused)")
    root = _project(tmp_path)
    outputs = tmp_path / "outputs"
    personas = tmp_path / "personas.jsonl"
    write_records(personas, [{"id": f"p{i}", "profile": f"She is a {20 + i}-year-old potter in "
                              "Bergen who sails.", "personality": "She is wry."}
                             for i in range(40)])
    with StubServer() as stub:
        data = tiny_dict(tmp_path, roles=stub_roles(stub.base_url, max_tokens=200),
                         conversations={"n_conversations": 120, "turns": 3, "concurrency": 16})
        data["run"].update(name="full", output_dir=str(outputs))
        data["run"].pop("cache_path")  # the cache too is on the full disk
        (root / "params" / "p.yaml").write_text(yaml.safe_dump(data))
        report_file = tmp_path / "report.json"
        drill = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-m",
             "tests.support.disk_full", "--outputs", str(outputs), "--size", "1m",
             "--params", "params/p.yaml", "--root", str(root), "--personas", str(personas),
             "--report", str(report_file)],
            cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert drill.returncode == 0, drill.stderr[-3000:]
    report = json.loads(report_file.read_text())
    full = report["full"]
    assert full["returncode"] == 1, full["stderr"][-3000:]
    lines = full["stderr"].splitlines()
    assert len(lines) == 1, full["stderr"][-3000:]
    assert lines[0].startswith("aloe: no space left on device while writing ")
    assert lines[0].endswith("; free some space and run again (finished work is kept)")
    assert report["temporary_after_full"] == [] and report["unreadable_after_full"] == []
    rerun = report["rerun"]
    assert rerun["returncode"] == 0, rerun["stderr"][-3000:]
    ids = report["conversations_after_rerun"]
    assert len(ids) == 120 and len(set(ids)) == 120 and report["unreadable_after_rerun"] == []


def _one_cell_notebook(path: Path) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                       "display_name": "Python 3"}
    parameters = nbformat.v4.new_code_cell("answer = 0")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, nbformat.v4.new_code_cell("print(answer + 1)")]
    nbformat.write(notebook, path)
    return path


def test_a_kernel_that_dies_before_it_starts_is_started_again(tmp_path: Path,
                                                             monkeypatch) -> None:
    """The port race (another process takes a kernel's port between choice and bind) cannot be
    provoked on demand, so the first start's failure is simulated with nbclient's own error; the
    second start is a real papermill run of a real notebook."""
    import papermill

    from aloe.operations import runner

    real = papermill.execute_notebook
    calls: list[int] = []

    def first_start_dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")
        return real(*args, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", first_start_dies)
    output = tmp_path / "out.ipynb"
    runner._execute(_one_cell_notebook(tmp_path / "in.ipynb"), output, {"answer": 41}, False)
    assert len(calls) == 2
    assert "42" in output.read_text()


def test_any_other_kernel_error_is_not_retried(tmp_path: Path, monkeypatch) -> None:
    import papermill

    from aloe.operations import runner

    calls: list[int] = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("Kernel didn't respond in 60 seconds")

    monkeypatch.setattr(papermill, "execute_notebook", broken)
    with pytest.raises(RuntimeError, match="didn't respond"):
        runner._execute(_one_cell_notebook(tmp_path / "in.ipynb"), tmp_path / "out.ipynb", {},
                        False)
    assert calls == [1]


def test_a_comparison_cut_by_a_full_disk_leaves_no_empty_notebook(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27: a full disk left a 0-byte compare notebook behind the one-line error."""
    from aloe.operations import runner

    def full_disk(notebook: Path, executed: Path, parameters: dict, progress: bool) -> None:
        executed.write_bytes(b"")
        raise OSError(28, "No space left on device", str(executed))

    monkeypatch.setattr(runner, "_execute", full_disk)
    with pytest.raises(runner.RunError):
        runner.run_comparison([tmp_path / "a", tmp_path / "b"], "ab", tmp_path)
    assert not runner.comparison_notebook(tmp_path, "ab").exists()


# ------------------------------------------------------------------------------------------
# A failed preflight: a headline and one line per failed check (issue 23)
# ------------------------------------------------------------------------------------------
def _failed_preflight(tmp_path: Path) -> Exception:
    """What papermill hands back when stage 0's readiness checks failed: the kernel's
    NotReadyError by name and value."""
    from aloe.operations import preflight

    checks = [preflight.Check(f"key VAR{i}", preflight.FAILED,
                              f"the environment variable VAR{i} is not set; roles.judge needs "
                              f"it as API key: export VAR{i}=... before `aloe run`")
              for i in range(11)] + [preflight.Check("disk", preflight.OK, "plenty")]
    with pytest.raises(preflight.NotReadyError) as raised:
        preflight.require_ready(checks)

    class KernelError(Exception):
        ename, evalue, exec_count = "NotReadyError", str(raised.value), 6
    return KernelError()


def test_a_failed_preflight_is_a_headline_and_one_line_per_check(tmp_path: Path, capsys,
                                                                  monkeypatch) -> None:
    """It used to be one line of 2,864 characters: 11 failures joined by " | "."""
    from aloe.core.config import params_from_dict
    from aloe.operations import cli, runner

    params = params_from_dict(tiny_dict(tmp_path), source="params/p.yaml")
    output = params.layout.executed_notebook("00_preflight.ipynb")
    error = runner._stage_failure(ROOT / "notebooks" / "00_preflight.ipynb", output,
                                  _failed_preflight(tmp_path),
                                  runner.RunResult(params.layout, params_file="params/p.yaml"))
    assert isinstance(error, runner.RunError) and error.exit_code == 1

    def fails(*args, **kwargs):
        raise error

    root = _project(tmp_path)
    (root / "params" / "p.yaml").write_text(yaml.safe_dump(tiny_dict(tmp_path)))
    monkeypatch.setenv("ALOE_ROOT", str(root))
    monkeypatch.setattr(runner, "run_workbook", fails)
    assert cli.main(["run", str(root / "params" / "p.yaml"), "--stages", "0"]) == 1
    headline, *lines = capsys.readouterr().err.splitlines()
    assert headline == ("aloe: preflight of params/p.yaml: 11 of 12 readiness checks failed; "
                        "nothing was spent; fix them and run again:")
    assert lines[:2] == ["  key VAR0: the environment variable VAR0 is not set; roles.judge "
                         "needs it as API key: export VAR0=... before `aloe run`",
                         "  key VAR1: the environment variable VAR1 is not set; roles.judge "
                         "needs it as API key: export VAR1=... before `aloe run`"]
    assert len(lines) == 12 and lines[-1] == f"  every check, and the plan: {output}"
    assert all(len(line) < 200 for line in [headline, *lines])


def test_any_other_error_is_still_one_line(capsys, monkeypatch, tmp_path: Path) -> None:
    from aloe.operations import cli, runner

    def fails(*args, **kwargs):
        raise runner.RunError("stage 02_conversations failed in cell 3: KeyError:\n 'turn'")

    root = _project(tmp_path)
    (root / "params" / "p.yaml").write_text(yaml.safe_dump(tiny_dict(tmp_path)))
    monkeypatch.setenv("ALOE_ROOT", str(root))
    monkeypatch.setattr(runner, "run_workbook", fails)
    assert cli.main(["run", str(root / "params" / "p.yaml"), "--stages", "2"]) == 1
    assert capsys.readouterr().err == ("aloe: stage 02_conversations failed in cell 3: "
                                       "KeyError: 'turn'\n")


# ------------------------------------------------------------------------------------------
# A rerun with nothing to do (issue 24)
# ------------------------------------------------------------------------------------------
def _executed(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    """Each executed notebook's modification time and bytes: papermill rewrites the file as
    soon as it starts a notebook, so both unchanged means no kernel was started for it."""
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes())
            for path in sorted((run_dir / "notebooks").glob("*.ipynb"))}


@pytest.mark.slow  # seven `aloe run`s, each starting kernels: 80 s in CI
def test_a_rerun_skips_unchanged_stages_and_any_change_reruns(tmp_path: Path) -> None:
    """Real papermill runs of stages 0 and 2 against the stub server (stage 2 reads personas
    written by hand). A second run starts no kernel and leaves every file as it was; a changed
    input file, notebook or parameter each reruns stage 2, and the preflight with it; --force
    reruns a stage regardless."""
    import json
    import shutil

    from aloe.core.records import read_records, write_records
    from tests.conftest import stub_roles
    from tests.support.stub_server import StubServer

    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    (root / "notebooks").mkdir()
    for name in ("00_preflight.ipynb", "02_conversations.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, root / "notebooks" / name)
    with StubServer() as stub:
        data = tiny_dict(tmp_path, roles=stub_roles(stub.base_url),
                         conversations={"n_conversations": 2, "turns": 1})
        (root / "params" / "p.yaml").write_text(yaml.safe_dump(data))
        run_dir = Path(data["run"]["output_dir"]) / data["run"]["name"]
        personas = [{"id": f"p{i}", "profile": "He is a 50-year-old plumber in Oslo who fishes.",
                     "personality": "He is shy."} for i in range(2)]
        write_records(run_dir / "personas.jsonl", personas)

        def run(*args: str, stages: str = "0,2") -> str:
            result = _aloe(root, "run", "params/p.yaml", "--stages", stages, "--quiet", *args)
            assert result.returncode == 0, result.stderr[-3000:]
            return result.stdout

        run()
        before, manifest = _executed(run_dir), (run_dir / "manifest.json").read_bytes()
        products = {p: p.read_bytes() for p in run_dir.rglob("*.json*") if "notebooks" not in
                    p.parts and p.name not in ("runner.json", "progress.json")}
        out = run()
        assert re.search(r"^\[1/2\] 00_preflight: unchanged, skipped \(checked in \d+\.\d s\)$",
                         out, re.M), out
        assert re.search(r"^\[2/2\] 02_conversations: unchanged, skipped", out, re.M), out
        assert _executed(run_dir) == before  # no kernel started
        assert (run_dir / "manifest.json").read_bytes() == manifest
        assert all(path.read_bytes() == content for path, content in products.items())
        timings = json.loads((run_dir / "runner.json").read_text())
        assert [s["skipped"] for s in timings["stages"]] == [True, True]

        personas[1]["personality"] = "He is bold."
        write_records(run_dir / "personas.jsonl", personas)
        out = run()
        assert "[1/2] 00_preflight\n" in out, out
        assert re.search(r"^\[2/2\] 02_conversations \(.*input personas.jsonl changed", out, re.M)
        assert _executed(run_dir).keys() == before.keys()
        assert all(_executed(run_dir)[name] != before[name] for name in before)

        notebook = nbformat.read(root / "notebooks" / "02_conversations.ipynb", as_version=4)
        notebook.cells.append(nbformat.v4.new_markdown_cell("A note."))
        nbformat.write(notebook, root / "notebooks" / "02_conversations.ipynb")
        assert re.search(r"^\[2/2\] 02_conversations \(.*code changed", run(), re.M)

        out = run("--set", "conversations.n_conversations=3")
        assert re.search(r"^\[2/2\] 02_conversations \(parameters changed", out, re.M), out
        assert len(read_records(run_dir / "conversations.jsonl")) == 3

        again = _executed(run_dir)["02_conversations.ipynb"]
        out = run("--set", "conversations.n_conversations=3", "--force", stages="2")
        assert "[1/1] 02_conversations (--force)" in out
        assert _executed(run_dir)["02_conversations.ipynb"] != again
