"""The `aloe` command.

    aloe run [PARAMS] [--stages 0,2-4] [--run-name NAME] [--limit N] [--set KEY=VALUE]... [--force]
    aloe plan PARAMS [--json]        requests, tokens, cost and GPU hours; offline
    aloe compare RUN RUN [...] [--name NAME] [--output-dir DIR]   a page across runs
    aloe train sft|dpo|grpo PARAMS [--run-name NAME] [--set KEY=VALUE]...
    aloe evaluate PARAMS [--run-name NAME] [--limit N] [--benchmark run|aloe] [--set ...]...
    aloe ratings export PARAMS [--size N] | aloe ratings import PARAMS FILE...
    aloe cache check [PARAMS] [--repair]   verify (and repair) the response cache
    aloe view PARAMS|RUN [--run-name NAME]   every transcript on one page: RUN/viewer.html
    aloe reference fetch|status [--dest DIR] [--from FOLDER|URL]   the official ALOE files
    aloe --version

`train` is what `accelerate launch -m aloe train sft PARAMS` runs on several GPUs; the
notebooks then find the finished adapter and only draw its curves.

The project (the folder holding params/ and notebooks/, where outputs/ goes) is $ALOE_ROOT,
else the first one at or above the parameter file, else at or above the current folder; with
none, the command stops with exit 2 before any work. `--set section.key=value` changes one key
for one run, merged over the file before validation (`config.load_params`), so it is checked
like the file; `--run-name`, `--limit` and `--benchmark` are the same mechanism.

A run is named the same way by every command that works on one: PARAMS is its parameter file
(the run is its run.name, or --run-name), or the run's folder (`config.load_run_folder`: the
parameters it was made with); `compare` takes folders, run names or parameter files. A
mistyped command, choice or option gets a "did you mean" (`_Parser`), as a mistyped key does.
`run` (when it ran stage 5 or 6) and `evaluate` end with the results (`aloe.presentation.results`).

Exit codes: 0 done, 1 a stage or a request failed, 2 input refused (a bad parameter file or
option, no project, a run folder that another run holds). Every error the workbook raises on
purpose carries its code (`aloe.core.errors`), and its message is printed as one line; a failed
preflight as a headline and one line per failed check (`runner.PreflightFailedError`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ContextManager

from aloe import __version__
from aloe.core.config import (
    EVALUATION_STAGE,
    Override,
    Params,
    check_api_keys,
    load_params,
    load_run_folder,
    parse_set,
    project_root,
)
from aloe.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    AloeError,
    ParamsError,
    did_you_mean,
    disk_full_message,
    is_disk_full,
)

DEFAULT_PARAMS = "params/tiny.yaml"
# Every command that works on one run names it the same way: a parameter file with an optional
# --run-name (the file's run.name otherwise), or the run's folder (its manifest's parameters).
RUN_HELP = ("a parameter file (e.g. params/paper.yaml; the run is its run.name, or --run-name), "
            "or a run's folder (outputs/RUN: the parameters it was made with)")
RUN_NAME_HELP = ("name of the run folder under run.output_dir (sets run.name; default: the "
                 "file's run.name)")
TRAINING_STAGE_NUMBERS = {"sft": 3, "dpo": 4, "grpo": 4}

DESCRIPTION = """\
ALOE Workbench: run the workbook's numbered notebooks from a parameter file, or one stage
of it outside the notebooks. `aloe COMMAND --help` gives a command's options."""

EXIT_CODES = """\
exit codes:
  0  done
  1  a stage failed, or a request kept failing (the message names the notebook and cell)
  2  input refused before any work: a bad parameter file or option, no project found
     (a folder holding params/ and notebooks/), a run folder another run holds"""

RUN_EXAMPLES = """\
examples:
  aloe run                                  the embedded offline default (params/tiny.yaml)
  aloe run params/paper.yaml --stages 0     check every role answers; the plan and its cost
  aloe run params/tiny.yaml --stages 2-4 --run-name try1
  aloe run --set conversations.turns=1 --set dpo.trainer.beta=0.5
  aloe run params/paper.yaml --set 'roles.judge.model=gpt-4o' --limit 10

--set takes a dotted key of the parameter file and a YAML value (1 an integer, 0.5 a
number, true, null, [a, b] a list, {beta: 0.5} a mapping merged into the key, anything
else text); it is validated like the file (an unknown key exits 2 naming it) and shows in
the run's resolved parameters (each executed notebook's injected cell) and in the
run folder's runner.json ("overrides").
Relative paths resolve against the project: $ALOE_ROOT, else the folder at or above the
parameter file holding params/ and notebooks/, else the one at or above the current folder.

""" + EXIT_CODES


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" on a mistyped command, choice or option (Python 3.11's
    argparse names the choices but suggests none). Subcommands' parsers are of this class too."""

    def _check_value(self, action: argparse.Action, value: object) -> None:
        choices = action.choices
        if choices is not None and isinstance(value, str) and value not in choices:
            hint = did_you_mean(value, [str(c) for c in choices])
            listed = ", ".join(repr(str(c)) for c in choices)
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}{hint} (choose "
                                                 f"from {listed})")
        super()._check_value(action, value)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            message = f"unrecognized arguments: {' '.join(extras)}"
            typed = next((e.split("=", 1)[0] for e in extras if e.startswith("--")), None)
            if typed:
                message += did_you_mean(typed, _known_options(self, parsed))
            self.error(message)
        return parsed


def _known_options(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> list[str]:
    """The option strings of `parser` and of the subcommands chosen in `parsed`."""
    options = [o for o in parser._option_string_actions if o.startswith("--")]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(parsed, action.dest, None) or "")
            if chosen is not None:
                options += _known_options(chosen, parsed)
    return options


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; the command list without argparse's 'COMMAND' line above it."""

    def _format_action(self, action: argparse.Action) -> str:
        text = super()._format_action(action)
        if isinstance(action, argparse._SubParsersAction):
            text = text.split("\n", 1)[1]
        return text


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aloe", description=DESCRIPTION, epilog=EXIT_CODES,
                     formatter_class=_Formatter)
    parser.add_argument("-V", "--version", action="version", version=f"aloe {__version__}",
                        help="print the installed version (the one a run records) and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     title="commands")

    run = commands.add_parser(
        "run", help="run the notebooks in order with a parameter file",
        description="Execute the numbered notebooks (notebooks/NN_*.ipynb) in order with "
        "papermill.\nEach executed notebook goes to outputs/RUN/notebooks/, the report to\n"
        "outputs/RUN/report.html.", epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("params", nargs="?", metavar="PARAMS",
                     help=f"{RUN_HELP} (default: the project's {DEFAULT_PARAMS})")
    run.add_argument("--stages", metavar="SPEC",
                     help="which notebooks, by number: e.g. 0 or 0,1 or 2-5 (default: all)")
    _add_run_name(run)
    _add_limit(run)
    _add_set(run)
    run.add_argument("--quiet", action="store_true",
                     help="no live progress line (the stage lines and table remain)")
    run.add_argument("--force", action="store_true", help="run every chosen stage, even one "
                     "whose parameters, inputs and code are unchanged since it finished")

    plan = commands.add_parser("plan", help="what a run will spend: requests, tokens and cost "
                               "(forecast and ceiling) per stage and role, GPU hours; offline")
    plan.add_argument("params", metavar="PARAMS", help=RUN_HELP)
    plan.add_argument("--run-name", help="the run whose ledgers to measure lengths from "
                      "(default: the file's run.name)")
    plan.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    _add_set(plan)

    compare = commands.add_parser("compare", help="a comparison page across finished runs "
                                  "(notebook 07_compare): outputs/compare/NAME.html")
    compare.add_argument("runs", nargs="+", metavar="RUN",
                         help="a run folder, a run name under --output-dir, or a parameter "
                         "file (the run its run.name names); the first run is the reference")
    compare.add_argument("--name", help="the page's name (default: the runs' names joined "
                         "with -vs-)")
    compare.add_argument("--output-dir", default="outputs", help="where run names are looked "
                         "up and compare/ is written (default: outputs)")
    compare.add_argument("--quiet", action="store_true",
                         help="no line saying which runs are compared")

    train = commands.add_parser(
        "train", help="train one stage (sft, dpo or grpo): a QLoRA adapter, or the whole model",
        description="Train one stage outside the notebooks: its QLoRA adapter (on several "
        "GPUs: accelerate launch -m aloe train sft PARAMS), or with `method: full` every "
        "weight (the stage launches its `processes` itself; params/paper_full.yaml).\n"
        "Notebooks 03 and 04 then find the finished stage and only draw its curves.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("stage", choices=tuple(TRAINING_STAGE_NUMBERS))
    train.add_argument("params", metavar="PARAMS", help=RUN_HELP)
    _add_run_name(train)
    _add_set(train)

    evaluate = commands.add_parser(
        "evaluate", help="run the benchmark (stage 5) alone and print the metrics",
        description="Run the benchmark (stage 5) outside the notebooks and print the metrics.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("params", metavar="PARAMS", help=RUN_HELP)
    _add_run_name(evaluate)
    _add_limit(evaluate)
    evaluate.add_argument("--benchmark", choices=["run", "aloe"],
                          help="which benchmark (sets evaluation.benchmark)")
    _add_set(evaluate)

    ratings = commands.add_parser(
        "ratings", help="the human-rating kit: export a blinded form, import the ratings",
        description="export: a blinded sample of stage 5's replies as a self-contained HTML "
        "form\n(ratings/VARIANT-form.html; it works offline and saves the ratings as a "
        "file).\n"
        "import: read the files raters saved; stage 5 then reports judge-human agreement.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ratings.add_argument("action", choices=("export", "import"))
    ratings.add_argument("params", metavar="PARAMS", help=RUN_HELP)
    ratings.add_argument("files", nargs="*", metavar="FILE",
                         help="import: ratings files saved by the form")
    ratings.add_argument("--size", type=int, metavar="N",
                         help="export: replies in the kit (default: evaluation.human_sample)")
    _add_run_name(ratings)
    _add_set(ratings)

    view = commands.add_parser("view", help="every benchmark conversation and training tree "
                               "on one offline page, filterable: RUN/viewer.html")
    view.add_argument("params", metavar="PARAMS", help=RUN_HELP)
    _add_run_name(view)

    cache = commands.add_parser("cache", help="the response cache shared by runs")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    check = cache_commands.add_parser(
        "check", help="verify the response cache (sqlite's integrity check, every answer's "
        "JSON); exit 1 when it is damaged")
    check.add_argument("params", nargs="?", default=None,
                       help=f"parameter file naming the cache (default: the project's "
                       f"{DEFAULT_PARAMS})")
    check.add_argument("--repair", action="store_true", help="move a damaged file aside and "
                       "start a new one with the answers that can still be read, delete "
                       "unreadable answers, compact (while no run uses the cache)")
    _add_reference(commands)
    return parser


def _add_reference(commands: argparse._SubParsersAction) -> None:
    """`aloe reference fetch|status`: the official ALOE files (docs/reference-files.md)."""
    from aloe.stages.reference import BASE_URL, DEFAULT_FOLDER, ENV_DIR

    reference = commands.add_parser("reference", help="the official ALOE persona files: "
                                    "download them at the pinned commit and check them")
    actions = reference.add_subparsers(dest="reference_command", required=True)
    fetch = actions.add_parser("fetch", help="download the four files (sha256 checked; a "
                               "sound file already there is kept)")
    status = actions.add_parser("status", help="which files are there and sound; exit 1 "
                                "unless all four are")
    for action in (fetch, status):
        action.add_argument("--dest", metavar="DIR", help=f"their folder (default: ${ENV_DIR}, "
                            f"else {DEFAULT_FOLDER} in the project, where the tests look)")
    fetch.add_argument("--from", dest="source", metavar="FOLDER|URL", default=BASE_URL,
                       help="a folder holding the four files (no network needed), or a base "
                       "URL (default: the ALOE repository at the pinned commit)")


def _add_run_name(command: argparse.ArgumentParser) -> None:
    command.add_argument("--run-name", metavar="NAME", help=RUN_NAME_HELP)


def _add_limit(command: argparse.ArgumentParser) -> None:
    command.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N "
                         "benchmark personas in stage 5 (sets evaluation.limit)")


def _add_set(command: argparse.ArgumentParser) -> None:
    command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         dest="set", help="change one key of the parameter file for this run, "
                         "e.g. conversations.turns=1 (repeatable; the value is YAML)")


def overrides(args: argparse.Namespace) -> list[Override]:
    """The command line's changes to the parameter file, in the order they apply: every
    `--set`, then the options that are shorthand for one key (they win over a --set)."""
    changes = [parse_set(text) for text in getattr(args, "set", [])]
    for option, key, value in (("--run-name", "run.name", getattr(args, "run_name", None)),
                               ("--limit", "evaluation.limit", getattr(args, "limit", None)),
                               ("--benchmark", "evaluation.benchmark",
                                getattr(args, "benchmark", None))):
        if value is not None:
            changes.append(Override(key, value, option, f"{option} {shlex.quote(str(value))}"))
    return changes


def resolve_params(args: argparse.Namespace) -> tuple[Params, str]:
    """The run a command works on: its parameter file with the command line's changes
    (`--set`, `--run-name`, ...), validated like the file, or a run folder's recorded
    parameters with those changes (`config.load_run_folder`); and the file's path as the
    notebooks are given it (relative to the project root when inside it; for a run folder, its
    manifest.json, where the parameters came from).

    Finds the project first (see `config.project_root`) and fixes it for this process and its
    notebook kernels ($ALOE_ROOT), so that relative paths and outputs/ land in the project
    whichever folder `aloe` was started from.
    """
    changes = overrides(args)  # a malformed --set is refused before anything is read
    if args.params is None:
        root = project_root()
        path, typed = root / DEFAULT_PARAMS, DEFAULT_PARAMS
    else:
        path, typed = Path(args.params), args.params
        if not path.is_file() and not path.is_dir():
            raise ParamsError(f"{typed}: parameter file not found")
        root = project_root(path)
    os.environ["ALOE_ROOT"] = str(root)
    if path.is_dir():
        params = load_run_folder(path, changes, source=typed)
        path = path / "manifest.json"  # where the parameters came from
    else:
        params = load_params(path, changes, source=typed)
    absolute = path.resolve()
    shown = str(absolute.relative_to(root)) if absolute.is_relative_to(root) else str(absolute)
    return params, shown


def run_command(args: argparse.Namespace) -> int:
    from aloe.operations.runner import (
        notebooks,
        parse_stages,
        run_workbook,
        stage_numbers,
        timing_table,
    )

    params, params_file = resolve_params(args)
    selected = parse_stages(args.stages, notebooks())  # a bad --stages fails before any work
    check_api_keys(params, stage_numbers(selected))
    result = run_workbook(params, params_file, stages=args.stages, progress=not args.quiet,
                          force=args.force)
    print(timing_table(result))
    if max(stage_numbers(selected)) >= EVALUATION_STAGE:  # nothing when no stage evaluated
        _print_results(params)
    print(f"run folder: {result.layout.run_dir}")
    return 0


def _print_results(params: Params) -> None:
    """The results table (`aloe.presentation.results`), when the run has metrics."""
    from aloe.presentation.results import results_table

    table = results_table(params)
    if table:
        print(f"\n{table}\n")


def plan_command(args: argparse.Namespace) -> int:
    """Offline: no request, no key, no local server, no model loaded."""
    import json

    from aloe.operations.plan import make_plan
    from aloe.operations.plan_format import format_plan

    plan = make_plan(resolve_params(args)[0])
    print(json.dumps(plan.to_json(), indent=2) if args.json else format_plan(plan))
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from aloe.core.config import resolve_path
    from aloe.core.manifest import display_path
    from aloe.operations.runner import run_comparison
    from aloe.presentation import compare

    references = [_run_folder_of(reference) for reference in args.runs]
    runs = compare.load_runs(references, args.output_dir)  # a missing run fails before any work
    name = args.name or compare.default_name(runs)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ParamsError(f"--name: '{name}' is not a valid page name (letters, digits, '.', "
                          "'_' and '-')")
    page = run_comparison([r.layout.run_dir for r in runs], name,
                          resolve_path(args.output_dir), progress=not args.quiet)
    print(f"comparison: {display_path(page)}")
    return 0


def _run_folder_of(reference: str) -> str:
    """A RUN of `aloe compare` as a folder or run name; a parameter file names its run (the
    folder its run.name and run.output_dir give), as it does for every other command."""
    path = Path(reference)
    if not path.is_file():
        return reference
    return str(load_params(path, source=reference).layout.run_dir)


def train_command(args: argparse.Namespace) -> int:
    import json
    import logging

    from aloe.stages import grpo, training

    params, _ = resolve_params(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_api_keys(params, [TRAINING_STAGE_NUMBERS[args.stage]])  # sft/dpo send no request
    train = {"sft": training.train_sft, "dpo": training.train_dpo, "grpo": grpo.train_grpo}
    with holding_run_folder(params):
        result = train[args.stage](params)
    print(json.dumps(result.summary(), default=str))
    return 0


def holding_run_folder(params: Params) -> ContextManager[None]:
    """The run folder's lock, as `aloe run` holds it, for a command that writes into it: a
    second writer beside a running `aloe run` (or another command) is refused in one line.
    Under a distributed launch (`accelerate launch`) only the main process takes it."""
    from aloe.operations.runner import run_lock

    if int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0) != 0:
        return contextlib.nullcontext()
    return run_lock(params.layout)


def evaluate_command(args: argparse.Namespace) -> int:
    from aloe.stages import evaluation

    params, _ = resolve_params(args)
    check_api_keys(params, [EVALUATION_STAGE])
    with holding_run_folder(params):
        evaluation.run_stage(params)
    _print_results(params)
    print(f"metrics: {params.layout.metrics}")
    return 0


def ratings_command(args: argparse.Namespace) -> int:
    from aloe.presentation import ratings

    params, _ = resolve_params(args)
    if args.action == "export":
        form, key = ratings.export_kit(params, args.size)
        print(f"form: {form}\nkey (keep it; it says which model wrote each reply): {key}")
        return 0
    if not args.files:
        raise ratings.RatingsError("ratings import: name the files the raters saved")
    with holding_run_folder(params):
        return _import_ratings(params, args.files)


def _import_ratings(params: Params, files: list[str]) -> int:
    from aloe.core.records import write_json
    from aloe.presentation import ratings
    from aloe.stages import evaluation

    path = ratings.import_ratings(params, files)
    print(f"ratings: {path}")
    result = evaluation.human_agreement(params)
    if result is not None and params.layout.metrics.exists():  # the report shows it at once
        summary = evaluation.compute_metrics(params, evaluation.load_records(params),
                                             evaluation.benchmark_personas(params))
        write_json(params.layout.metrics, summary)
        write_json(params.layout.variant_metrics(summary["variant"]), summary)
    if result is not None:
        kappa = result["kappa"]
        print(f"judge vs people: {result['n']} pairs from {len(result['raters'])} rater(s); "
              f"kappa {kappa['value']}, interval [{kappa['low']}, {kappa['high']}]")
    return 0


def cache_command(args: argparse.Namespace) -> int:
    from aloe.llm.cache import check_cache, repair_cache

    path = resolve_params(args)[0].layout.cache_path
    result = repair_cache(path) if args.repair else check_cache(path)
    print(result.line())
    return 0 if result.ok or result.actions else 1


def view_command(args: argparse.Namespace) -> int:
    from aloe.presentation.viewer import write_viewer

    params, _ = resolve_params(args)
    if not params.layout.run_dir.is_dir():
        raise ParamsError(f"no run folder {params.layout.run_dir}: nothing to view")
    print(f"viewer: {write_viewer(params.layout, params)}")
    return 0


def reference_command(args: argparse.Namespace) -> int:
    """Fetch or check the official files; ends with one line on the folder, exit 1 unless all
    four are there as pinned."""
    from aloe.stages import reference

    dest = Path(args.dest).expanduser() if args.dest else reference.default_dest()
    if args.reference_command == "fetch":
        for name, done in reference.fetch(dest, args.source):
            print(f"{name}: {done}")
    else:
        print("\n".join(state.line() for state in reference.status(dest)))
    missing = reference.problem(dest)
    print(f"{dest}: {missing}; run `aloe reference fetch`" if missing else
          f"{dest}: the four official ALOE files, as pinned (commit {reference.COMMIT[:7]})")
    return 1 if missing else 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run_command, "plan": plan_command, "compare": compare_command,
    "train": train_command, "evaluate": evaluate_command, "ratings": ratings_command,
    "cache": cache_command, "view": view_command, "reference": reference_command}


def _error_lines(error: AloeError) -> str:
    """An error as printed: one line, or for an error that lists its items (`details`: a
    failed preflight's checks) a headline and one indented line per item."""
    details = getattr(error, "details", ())
    headline = getattr(error, "headline", None) if details else None
    if not headline:
        return " ".join(str(error).split())
    return "\n".join([" ".join(headline.split()),
                      *(f"  {' '.join(str(line).split())}" for line in details)])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except AloeError as error:
        print(f"aloe: {_error_lines(error)}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # the file system said no outside the workbook's own checks
        if is_disk_full(error):
            print(f"aloe: {disk_full_message(error.filename or 'the run folder')}",
                  file=sys.stderr)
            return EXIT_FAILED
        if error.filename is None:  # not about a path: a bug to report, with its traceback
            raise
        print(f"aloe: {error.filename}: {error.strerror or error} (errno {error.errno}); "
              "check the path and its permissions (run.output_dir, --output-dir)",
              file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
