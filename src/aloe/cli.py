"""The `aloe` command: `aloe run [PARAMS] [--stages 0,2-4] [--run-name NAME]`."""

from __future__ import annotations

import argparse
import sys

from aloe.config import ParamsError, load_params

DEFAULT_PARAMS = "params/tiny.yaml"
EXIT_BAD_INPUT = 2
EXIT_STAGE_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aloe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute the workbook's notebooks with a parameter file")
    run.add_argument("params", nargs="?", default=DEFAULT_PARAMS,
                     help=f"parameter file (default: {DEFAULT_PARAMS})")
    run.add_argument("--stages", help="which notebooks, by number: e.g. 0,1 or 2-5 (default: all)")
    run.add_argument("--run-name", help="name of the run folder under run.output_dir "
                     "(default: the file's run.name)")
    run.add_argument("--limit", type=int, help="evaluate only the first N benchmark personas "
                     "(sets evaluation.limit)")
    run.add_argument("--quiet", action="store_true", help="no per-cell progress bars")
    return parser


def _fail(message: str, code: int) -> int:
    print(f"aloe: {message}", file=sys.stderr)
    return code


def run_command(args: argparse.Namespace) -> int:
    from aloe.runner import RunError, parse_stages, notebooks, run_workbook, timing_table

    try:
        params = load_params(args.params)
        if args.run_name:
            try:
                params.run.name = args.run_name
            except ValueError:
                raise ParamsError(f"--run-name: '{args.run_name}' is not a valid run name "
                                  "(letters, digits, '.', '_' and '-')") from None
        if args.limit is not None:
            try:
                params.evaluation.limit = args.limit
            except ValueError:
                raise ParamsError(f"--limit: expected a whole number >= 1, got {args.limit}") from None
        parse_stages(args.stages, notebooks())  # a bad --stages fails before any work
    except (ParamsError, RunError) as error:
        return _fail(str(error), EXIT_BAD_INPUT)
    try:
        result = run_workbook(params, args.params, stages=args.stages, progress=not args.quiet)
    except RunError as error:
        in_use = "is in use by" in str(error)
        return _fail(str(error), EXIT_BAD_INPUT if in_use else EXIT_STAGE_FAILED)
    print(timing_table(result))
    print(f"run folder: {result.run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run_command(args)
    return _fail(f"unknown command {args.command}", EXIT_BAD_INPUT)  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
