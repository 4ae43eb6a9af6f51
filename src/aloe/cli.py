"""The `aloe` command.

    aloe run [PARAMS] [--stages 0,2-4] [--run-name NAME] [--limit N]   the workbook's notebooks
    aloe train sft|dpo PARAMS                                         one training stage
    aloe evaluate PARAMS [--limit N] [--benchmark run|aloe]           the benchmark (stage 5)
    aloe cache check [PARAMS] [--repair]                              verify the response cache

`train` is what `accelerate launch -m aloe.cli train sft PARAMS` runs on several GPUs; the
notebooks then find the finished adapter and only draw its curves. Exit codes: 0 done, 1 a
stage or a request failed, 2 input refused (a bad parameter file or option, a run folder that
another run holds). Every error the workbook raises on purpose carries its code
(`aloe.errors`), and its message is printed as one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from aloe.config import EVALUATION_STAGE, Params, ParamsError, check_api_keys, load_params
from aloe.errors import EXIT_FAILED, AloeError, disk_full_message, is_disk_full

DEFAULT_PARAMS = "params/tiny.yaml"
TRAINING_STAGE_NUMBERS = {"sft": 3, "dpo": 4}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aloe", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="execute the workbook's notebooks with a parameter file")
    run.add_argument("params", nargs="?", default=DEFAULT_PARAMS,
                     help=f"parameter file (default: {DEFAULT_PARAMS})")
    run.add_argument("--stages", help="which notebooks, by number: e.g. 0,1 or 2-5 (default: all)")
    run.add_argument("--run-name", help="name of the run folder under run.output_dir "
                     "(default: the file's run.name)")
    _add_limit(run)
    run.add_argument("--quiet", action="store_true", help="no per-cell progress bars")

    train = commands.add_parser("train", help="train one stage's QLoRA adapter (SFT or DPO) "
                                "outside the notebooks, e.g. under accelerate launch")
    train.add_argument("stage", choices=("sft", "dpo"))
    train.add_argument("params", help="a parameter file, e.g. params/paper.yaml")

    evaluate = commands.add_parser("evaluate", help="run the benchmark (stage 5) outside the "
                                   "notebooks and print the metrics")
    evaluate.add_argument("params", help="a parameter file, e.g. params/paper.yaml")
    _add_limit(evaluate)
    evaluate.add_argument("--benchmark", choices=["run", "aloe"],
                          help="which benchmark (sets evaluation.benchmark)")

    cache = commands.add_parser("cache", help="the response cache shared by runs")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    check = cache_commands.add_parser(
        "check", help="verify the response cache (sqlite's integrity check, every answer's "
        "JSON); exit 1 when it is damaged")
    check.add_argument("params", nargs="?", default=DEFAULT_PARAMS,
                       help=f"parameter file naming the cache (default: {DEFAULT_PARAMS})")
    check.add_argument("--repair", action="store_true", help="move a damaged file aside and "
                       "start a new one with the answers that can still be read, delete "
                       "unreadable answers, compact (while no run uses the cache)")
    return parser


def _add_limit(command: argparse.ArgumentParser) -> None:
    command.add_argument("--limit", type=int, help="evaluate only the first N benchmark "
                         "personas (sets evaluation.limit)")


def _load(args: argparse.Namespace) -> Params:
    """The parameter file with the command line's changes, validated like the file."""
    params = load_params(args.params)
    if getattr(args, "run_name", None) is not None:
        try:
            params.run.name = args.run_name
        except ValueError:
            raise ParamsError(f"--run-name: '{args.run_name}' is not a valid run name "
                              "(letters, digits, '.', '_' and '-')") from None
    if getattr(args, "limit", None) is not None:
        try:
            params.evaluation.limit = args.limit
        except ValueError:
            raise ParamsError(f"--limit: expected a whole number >= 1, got {args.limit}") from None
    if getattr(args, "benchmark", None):
        params.evaluation.benchmark = args.benchmark
    return params


def run_command(args: argparse.Namespace) -> int:
    from aloe.runner import notebooks, parse_stages, run_workbook, stage_numbers, timing_table

    params = _load(args)
    selected = parse_stages(args.stages, notebooks())  # a bad --stages fails before any work
    check_api_keys(params, stage_numbers(selected))
    result = run_workbook(params, args.params, stages=args.stages, progress=not args.quiet)
    print(timing_table(result))
    print(f"run folder: {result.layout.run_dir}")
    return 0


def train_command(args: argparse.Namespace) -> int:
    import json
    import logging

    from aloe import training

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = _load(args)
    check_api_keys(params, [TRAINING_STAGE_NUMBERS[args.stage]])  # training sends no request
    result = training.train_stage(params, args.stage)
    print(json.dumps(result.summary(), default=str))
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from aloe import evaluation, metrics

    params = _load(args)
    check_api_keys(params, [EVALUATION_STAGE])
    summary = evaluation.run_stage(params)
    print(metrics.summary_table(summary.metrics).to_string())
    print(f"metrics: {params.layout.metrics}")
    return 0


def cache_command(args: argparse.Namespace) -> int:
    from aloe.llm.cache import check_cache, repair_cache

    path = _load(args).layout.cache_path
    result = repair_cache(path) if args.repair else check_cache(path)
    print(result.line())
    return 0 if result.ok or result.actions else 1


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run_command, "train": train_command, "evaluate": evaluate_command,
    "cache": cache_command}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except AloeError as error:
        print(f"aloe: {' '.join(str(error).split())}", file=sys.stderr)  # always one line
        return error.exit_code
    except OSError as error:  # a full disk outside the workbook's own writes (the run lock)
        if not is_disk_full(error):
            raise
        print(f"aloe: {disk_full_message(error.filename or 'the run folder')}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
