"""The runner: execute the numbered notebooks in order with papermill and one parameter file.

Each executed notebook goes to `outputs/RUN/notebooks/`. The run folder is locked while a run
holds it (a second run of the same name is refused), its manifest is written before the first
stage that runs, the local server is started once and shared by every notebook kernel, and a failure
names the notebook and the cell that failed. A stage that finished with the same parameters,
code and inputs, its products untouched since, is skipped without a kernel
(`aloe.operations.stage_stamp`; `aloe run --force` runs it all the same).

The workbook is the numbered notebooks 00-06. Notebook 07_compare reads several finished runs,
not one parameter file: `aloe run` never runs it, `aloe compare` does (`run_comparison`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aloe.core import manifest
from aloe.core.config import Params, ProjectNotFoundError, project_root
from aloe.core.errors import (
    AloeError,
    BadInputError,
    DiskFullError,
    RunLockedError,
    disk_full_message,
    is_disk_full,
)
from aloe.core.layout import (
    COMPARE_NOTEBOOK,
    PREFLIGHT_NOTEBOOK,
    REPORT_NOTEBOOK,
    STAGE_SWITCHES,
    RunLayout,
    comparison_notebook,
    comparison_page,
)
from aloe.core.progress import Monitor
from aloe.core.records import replace_file, write_json
from aloe.operations.stage_stamp import Listing, StageStamps, Verdict, listing, stamp_path


class RunError(AloeError):
    """A stage failed; the message names the notebook, the cell and the error."""


class PreflightFailedError(RunError):
    """Stage 0's readiness checks failed: a headline naming the parameter file, then one line
    per failed check (what, where and what to do), printed as such by `aloe`."""

    def __init__(self, headline: str, details: list[str]) -> None:
        super().__init__("\n".join([headline, *details]))
        self.headline, self.details = headline, details


class StageSelectionError(BadInputError):
    """`--stages` names no notebook, or cannot be read."""


@dataclass
class StageResult:
    notebook: str
    seconds: float
    output: Path
    skipped: bool = False  # unchanged since its stamp: kept, no kernel started
    off: str = ""  # the parameter that turns this stage off, when it is off

    @property
    def note(self) -> str:
        if self.off:
            return f"off ({self.off}: false), not run"
        return f"unchanged, skipped (checked in {self.seconds:.1f} s)" if self.skipped else ""


@dataclass
class RunResult:
    layout: RunLayout
    stages: list[StageResult] = field(default_factory=list)
    params_file: str = ""
    overrides: tuple[str, ...] = ()  # the command line's changes (`--set ...`), as typed
    started: float = field(default_factory=time.time)  # tells this invocation from earlier ones

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)


def notebooks(root: Path | None = None) -> list[Path]:
    """The workbook's numbered notebooks, in order (07_compare is not one of them); none is an
    error, never an empty run."""
    folder = (root or project_root()) / "notebooks"
    found = [nb for nb in sorted(folder.glob("[0-9][0-9]_*.ipynb"))
             if nb.stem != COMPARE_NOTEBOOK]
    if not found:
        raise ProjectNotFoundError(f"no numbered notebooks (NN_*.ipynb) in {folder}: run aloe "
                                   "from the repository's folder, or set ALOE_ROOT to it")
    return found


def parse_stages(spec: str | None, available: list[Path]) -> list[Path]:
    """`None` -> all; "0,2-4" -> notebooks 00, 02, 03, 04 (by their number).

    An empty or blank selection, or a reversed range ("3-1"), is refused: it would otherwise
    run every stage, or none, without a word."""
    if spec is None:
        return available
    if not spec.strip():
        raise StageSelectionError("--stages: empty; give numbers and ranges (e.g. 0,2-4), or "
                                  "leave --stages out to run every stage")
    numbered: dict[int, list[Path]] = {}  # one number may hold siblings (04_dpo, 04_grpo)
    for nb in available:
        numbered.setdefault(int(nb.name[:2]), []).append(nb)
    top = max(numbered, default=-1)
    wanted: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise StageSelectionError(f"--stages: cannot read '{part}' (use numbers and "
                                      "ranges: 0,2-4)")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise StageSelectionError(f"--stages: '{part}' is a reversed range (it selects "
                                      f"nothing); write {high}-{low}")
        compare = int(COMPARE_NOTEBOOK[:2])
        if low <= top < high and high != compare:  # a set of the whole range could fill memory
            raise StageSelectionError(f"--stages: '{part}' goes past the last stage, {top:02d}; "
                                      f"write {low}-{top}")
        # past the end: its first number is enough to name what is missing
        wanted.update(range(low, high + 1) if high <= max(top, compare) else [low])
    missing = sorted(wanted - numbered.keys())
    if int(COMPARE_NOTEBOOK[:2]) in missing:
        raise StageSelectionError(f"--stages: {COMPARE_NOTEBOOK} compares finished runs and is "
                                  "not a stage: use aloe compare RUN RUN")
    if missing:
        raise StageSelectionError(f"--stages: no notebook numbered {missing[0]:02d} in "
                                  f"notebooks/ (have "
                                  f"{', '.join(f'{n:02d}' for n in sorted(numbered))})")
    return [nb for n in sorted(wanted) for nb in numbered[n]]


def stage_numbers(selected: list[Path]) -> list[int]:
    """The numbers of the chosen notebooks (00_preflight -> 0)."""
    return [int(notebook.name[:2]) for notebook in selected]


@contextmanager
def run_lock(layout: RunLayout) -> Iterator[None]:
    """Hold the run folder; refuse when another process holds it."""
    run_dir = layout.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(layout.lock, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLockedError(f"run folder {run_dir} is in use by {holder}; wait for it to "
                             "finish or choose another --run-name") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def _needs_local_server(params: Params) -> bool:
    return any(role.is_local for role in params.roles.as_mapping().values())


def _failure_message(notebook: Path, output: Path, error: Exception) -> str:
    """One line: the stage, the cell, the error, and where its traceback is (a readiness
    failure's line holds every failed check)."""
    cell = getattr(error, "exec_count", None) or getattr(error, "cell_index", None)
    ename = getattr(error, "ename", type(error).__name__)
    evalue = str(getattr(error, "evalue", str(error))).strip()
    where = f" in cell {cell}" if cell is not None else ""
    first_line = evalue.splitlines()[0] if evalue else ""
    if ename == "BudgetExceededError":  # a ceiling the user set, not a fault
        return f"stage {notebook.stem} stopped: {first_line}"
    return (f"stage {notebook.stem} failed{where}: {ename}: {first_line} "
            f"(traceback: {shown_path(output)})")


def _stage_failure(notebook: Path, output: Path, error: Exception,
                   result: RunResult) -> AloeError:
    """The one-line error for a failed stage, after tidying what it leaves: an executed
    notebook that could not be written whole is removed, and the timings are saved if they
    can be (a full disk must not hide the stage's own error behind a second traceback)."""
    _drop_unreadable_notebook(output)
    try:
        _save_timings(result)
    except (OSError, AloeError):
        pass
    full = _disk_full_in(error, output)
    if full is not None:
        return DiskFullError(full)
    if getattr(error, "ename", None) == "NotReadyError":
        return _preflight_failure(str(getattr(error, "evalue", "")), output, result)
    return RunError(_failure_message(notebook, output, error))


def _preflight_failure(evalue: str, output: Path, result: RunResult) -> PreflightFailedError:
    """The preflight's NotReadyError (its first line the count, then "- check: reason" per
    failed check) as a headline naming the parameter file and one line per failed check."""
    first, *rest = evalue.strip().splitlines() or [""]
    details = [line[2:] for line in rest if line.startswith("- ")]
    return PreflightFailedError(f"preflight of {result.params_file or 'the run'}: {first}",
                                details + [f"every check, and the plan: {shown_path(output)}"])


_NO_SPACE = re.compile(r"No space left on device(?::\s*'([^']+)')?|Disk quota exceeded")


def _disk_full_in(error: Exception, output: Path) -> str | None:
    """The one line for a full disk behind a stage's failure, or None when it was something
    else. The kernel's own DiskFullError already names its file; a bare OSError names one
    when it has it; a failed write of the executed notebook names the notebook."""
    ename, evalue = getattr(error, "ename", None), str(getattr(error, "evalue", ""))
    if ename == DiskFullError.__name__:
        return evalue
    if ename is not None:  # an error inside the notebook's kernel
        found = _NO_SPACE.search(evalue)
        return disk_full_message(found[1] or f"the files of {output.stem}") if found else None
    if is_disk_full(error):
        if isinstance(error, DiskFullError):
            return str(error)
        return disk_full_message(getattr(error, "filename", None) or shown_path(output))
    return None


def _drop_unreadable_notebook(output: Path) -> None:
    """Remove an executed notebook that is not a whole notebook (a write cut short)."""
    import nbformat

    if not output.exists():
        return
    try:
        nbformat.read(output, as_version=4)
    except Exception:  # noqa: BLE001 - any failure to read it means it is not whole
        output.unlink(missing_ok=True)


def shown_path(path: Path) -> str:
    """A path as a person would type it: relative to the current folder when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# The kernel's own log, kept to critical errors: its warning that a loopback kernel runs over
# TCP without encryption would otherwise be printed for every stage, and jupyter_client
# interrupts every kernel it shuts down, which the kernel logs as an error ("KeyboardInterrupt
# caught in kernel") when the interrupt lands between messages. A cell's error reaches the user
# through papermill, never through this log; cells' output is unaffected.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


def execute_stage(notebook: Path, params: Params, params_file: str, output: Path,
                  progress: bool = True, echo: IO[str] = sys.stdout) -> float:
    """Run one notebook with papermill; the seconds it took. With `progress`, the stage's
    live progress line is shown meanwhile (`aloe.core.progress`)."""
    parameters: dict[str, Any] = params.model_dump(mode="json")
    parameters["params_file"] = params_file
    started = time.perf_counter()
    watch = Monitor(params.layout.progress, notebook.stem, echo) if progress else nullcontext()
    with watch:
        _execute(notebook, output, parameters, progress_bar=False)
    return time.perf_counter() - started


# A kernel's ports are chosen free by jupyter_client, released, then bound by the kernel; another
# process (a second run, a server) can take one in between, and the kernel dies before it
# replies. No cell has run then, so starting the notebook again is safe and loses nothing.
KERNEL_START_TRIES = 3
_KERNEL_DID_NOT_START = "Kernel died before replying to kernel_info"  # nbclient's RuntimeError


def _execute(notebook: Path, output: Path, parameters: dict[str, Any],
             progress_bar: bool) -> None:
    import papermill

    for attempt in range(1, KERNEL_START_TRIES + 1):
        try:
            papermill.execute_notebook(str(notebook), str(output), parameters=parameters,
                                       cwd=str(project_root()), progress_bar=progress_bar,
                                       kernel_name="python3", log_output=False,
                                       extra_arguments=KERNEL_ARGUMENTS)
            return
        except RuntimeError as error:
            if _KERNEL_DID_NOT_START not in str(error) or attempt == KERNEL_START_TRIES:
                raise



def run_workbook(params: Params, params_file: str, stages: str | None = None,
                 progress: bool = True, echo: IO[str] = sys.stdout,
                 force: bool = False) -> RunResult:
    """Execute the chosen notebooks in order; raise RunError naming the notebook and cell.

    A stage whose stamp (`aloe.operations.stage_stamp`) matches its parameters, code, inputs and
    products is skipped without a kernel, its executed notebook kept; `force` runs every one. The
    manifest and the local server wait for the first stage that runs: a rerun with nothing to
    do writes neither and loads no model."""
    selected = parse_stages(stages, notebooks())
    layout = params.layout
    os.environ.setdefault("ALOE_ROOT", str(project_root()))
    result = RunResult(layout=layout, params_file=params_file, overrides=params.overrides)
    print(f"parameters: {params.source}", file=echo)
    with run_lock(layout):
        stamps = StageStamps(layout, params)
        stamps.settle()  # a stage killed in an earlier run: the files it wrote are its own
        ready = _Startup(params, params_file, selected, echo)
        checked = time.perf_counter()
        preflight = Verdict(True, "") if force else _preflight_verdict(
            [nb for nb in selected if not switched_off(params, nb.stem)], stamps)
        preflight_seconds = time.perf_counter() - checked
        for index, notebook in enumerate(selected, start=1):
            output = layout.executed_notebook(notebook.name)
            print(f"[{index}/{len(selected)}] {notebook.stem}", file=echo, end="", flush=True)
            checked = time.perf_counter()
            off = switched_off(params, notebook.stem)
            if off:
                result.stages.append(StageResult(notebook.stem, 0.0, output, skipped=True,
                                                 off=off))
                print(f": {result.stages[-1].note}", file=echo, flush=True)
                continue
            if force:
                verdict = Verdict(False, "--force")
            elif notebook.stem == PREFLIGHT_NOTEBOOK:
                verdict, checked = preflight, checked - preflight_seconds
            else:
                verdict = stamps.check(notebook)
            if verdict.fresh:
                result.stages.append(StageResult(notebook.stem, time.perf_counter() - checked,
                                                 output, skipped=True))
                print(f": {result.stages[-1].note}", file=echo, flush=True)
                _save_timings(result)
                continue
            print(f" ({verdict.reason})" if verdict.reason not in ("", "not run before") else "",
                  file=echo, flush=True)
            ready.once()
            result.stages.append(_run_stage(notebook, params, params_file, output, progress,
                                            echo, stamps, result))
            _save_timings(result)
    return result


def switched_off(params: Params, notebook: str) -> str:
    """The key that turns `notebook` off (`layout.STAGE_SWITCHES`) when it is false, else ""."""
    key = STAGE_SWITCHES.get(notebook)
    if key is None:
        return ""
    value: Any = params
    for part in key.split("."):
        value = getattr(value, part)
    return "" if value else key


def _preflight_verdict(selected: list[Path], stamps: StageStamps) -> Verdict:
    """The preflight checks readiness for the stages after it: it is skipped only when every
    one of them is fresh now (then none runs, so none can make another stale). Chosen alone,
    it always runs: it checks the world outside, which no stamp can vouch for."""
    others = [nb for nb in selected if nb.stem != PREFLIGHT_NOTEBOOK]
    return Verdict(bool(others) and all(stamps.check(nb).fresh for nb in others), "")


class _Startup:
    """What a run needs before its first kernel: the manifest, the local model server."""

    def __init__(self, params: Params, params_file: str, selected: list[Path],
                 echo: IO[str]) -> None:
        self.params, self.params_file, self.selected, self.echo = (params, params_file,
                                                                    selected, echo)
        self.done = False

    def once(self) -> None:
        if self.done:
            return
        self.done = True
        manifest.write(self.params, self.params_file, [nb.stem for nb in self.selected])
        if _needs_local_server(self.params):
            from aloe.llm.server import ensure_local_server, export_to_children

            print("starting the local model server (transformers serve) ...", file=self.echo)
            export_to_children(ensure_local_server(self.params))
        self.params.layout.notebooks.mkdir(parents=True, exist_ok=True)


def _run_stage(notebook: Path, params: Params, params_file: str, output: Path, progress: bool,
               echo: IO[str], stamps: StageStamps, result: RunResult) -> StageResult:
    """Execute one stage (and render the report after its notebook), then stamp it; a failed
    stage is recorded as unfinished, never as fresh."""
    layout = params.layout
    before = listing(layout.run_dir)
    stamps.start(notebook.stem, before)
    try:
        seconds = execute_stage(notebook, params, params_file, output, progress, echo)
    except Exception as error:  # papermill's execution error or a kernel failure
        _record_unfinished(stamps, notebook, before)
        raise _stage_failure(notebook, output, error, result) from error
    if notebook.stem == REPORT_NOTEBOOK:
        report = render_html(output, layout.report, params.report.heading(params.run.name))
        print(f"report: {report}", file=echo, flush=True)
    stamps.record(notebook, before, complete=True)
    return StageResult(notebook.stem, seconds, output)


def _record_unfinished(stamps: StageStamps, notebook: Path, before: Listing) -> None:
    """Mark a failed stage unfinished; a full disk must not hide its error behind another."""
    try:
        stamps.record(notebook, before, complete=False)
    except (OSError, DiskFullError):  # the stamp's own write may meet the same full disk
        stamp_path(stamps.layout, notebook.stem).unlink(missing_ok=True)


_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>", re.I)
_REMOTE_MODULE = re.compile(r"<script type=[\"']module[\"']>(?:(?!</script>).)*?https?://"
                            r"(?:(?!</script>).)*</script>", re.I | re.S)


def render_html(executed: Path, target: Path, title: str = "ALOE Workbench report") -> Path:
    """An executed notebook as a page that reads on its own: code hidden, figures inline, and
    no script fetched from the network (a shared report must open offline, error-free)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    notebook.metadata["title"] = title  # the page's <title>
    for cell in notebook.cells:  # warnings and progress bars are for the author, not the reader
        cell["outputs"] = [o for o in cell.get("outputs", [])
                           if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    body, _ = exporter.from_notebook_node(notebook)
    body = _REMOTE_MODULE.sub("", _REMOTE_SCRIPT.sub("", body))
    replace_file(target, lambda handle: handle.write(body), sync=False)
    return target


def run_comparison(run_dirs: list[Path], name: str, output_dir: Path,
                   progress: bool = True) -> Path:
    """Execute 07_compare over finished run folders and render its page; the page's path
    (`output_dir/compare/NAME.html`)."""
    notebook = project_root() / "notebooks" / f"{COMPARE_NOTEBOOK}.ipynb"
    executed = comparison_notebook(output_dir, name)
    executed.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ALOE_ROOT", str(project_root()))
    if progress:
        print(f"{COMPARE_NOTEBOOK}: {len(run_dirs)} runs ...", flush=True)
    try:  # never papermill's own progress bar: raw tqdm lines, as for the stages
        _execute(notebook, executed, {"runs": [str(d) for d in run_dirs], "name": name},
                 progress_bar=False)
    except Exception as error:  # papermill's execution error or a kernel failure
        if executed.exists() and executed.stat().st_size == 0:  # a full disk: nothing to read
            executed.unlink()
        raise RunError(_failure_message(notebook, executed, error)) from error
    from aloe.presentation import (
        compare,  # pandas and the report's modules: loaded by `aloe compare` only
    )

    for line in compare.warnings(compare.load_runs(run_dirs)):  # the page opens with them too
        print(f"aloe compare: warning: {line}", file=sys.stderr, flush=True)
    return render_html(executed, comparison_page(output_dir, name), f"ALOE comparison: {name}")


def _save_timings(result: RunResult) -> None:
    """runner.json: this invocation's stage times, and every earlier `aloe run`'s under
    `earlier` (the report sums them all, as it sums every session's requests)."""
    write_json(result.layout.timings,
               {"params_file": result.params_file, "overrides": list(result.overrides),
                "started": result.started,
                "stages": [_timing(s) for s in result.stages],
                "finished": time.time(), "earlier": _earlier_timings(result)})


def _timing(stage: StageResult) -> dict[str, Any]:
    entry: dict[str, Any] = {"notebook": stage.notebook, "seconds": round(stage.seconds, 2),
                             "output": str(stage.output)}
    if stage.skipped:
        entry.update(skipped=True, note=stage.note)
    return entry


def _earlier_timings(result: RunResult) -> list[dict[str, Any]]:
    """The stage times of the earlier invocations that runner.json holds, the one it holds
    now added when it is not this invocation's."""
    try:
        previous = json.loads(result.layout.timings.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: nothing earlier to keep
        return []
    if not isinstance(previous, dict):
        return []
    earlier = list(previous.get("earlier") or [])
    if previous.get("started") != result.started and previous.get("stages"):
        earlier.append({"started": previous.get("started"), "finished": previous.get("finished"),
                        "stages": [{"notebook": s.get("notebook"), "seconds": s.get("seconds"),
                                    **({"skipped": True} if s.get("skipped") else {})}
                                   for s in previous["stages"]]})
    return earlier


def timing_table(result: RunResult) -> str:
    width = max([len(s.notebook) for s in result.stages] + [5])
    lines = [f"{'stage':<{width}}  seconds"]
    lines += [f"{s.notebook:<{width}}  {s.seconds:7.1f}" + (f"  {s.note}" if s.skipped else "")
              for s in result.stages]
    lines.append(f"{'total':<{width}}  {result.seconds:7.1f}")
    return "\n".join(lines)
