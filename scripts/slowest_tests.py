"""The suite's slowest tests as a Markdown table, from what pytest printed: the lines of its
`--durations=N` report (`12.34s call     tests/test_x.py::test_y`) in a saved log, so that the
table in docs/development.md is copied from a real run, never typed by hand.

    python -m pytest --durations=15 ... | tee pytest.log
    python scripts/slowest_tests.py pytest.log                       # print the table
    python scripts/slowest_tests.py quick.log slow.log               # a suite run in parts
    python scripts/slowest_tests.py pytest.log --write docs/development.md \\
        --note "measured on ..."                                     # replace it in the page

With --write, the table replaces what lies between the page's two markers (`SLOWEST_BEGIN`,
`SLOWEST_END`); a page without them is refused in one line.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

DURATION = re.compile(r"^\s*(?P<seconds>\d+(?:\.\d+)?)s\s+(?P<phase>setup|call|teardown)\s+"
                      r"(?P<test>\S+::\S.*?)\s*$")
SLOWEST_BEGIN = "<!-- slowest-tests: written by scripts/slowest_tests.py -->"
SLOWEST_END = "<!-- /slowest-tests -->"


@dataclass(frozen=True)
class Duration:
    seconds: float
    phase: str  # setup (a fixture's first use: a shared set-up lands on one test), call, teardown
    test: str


def read_durations(log_text: str) -> list[Duration]:
    """Every duration line pytest printed, slowest first (xdist's controller prints them too)."""
    found = [Duration(float(m["seconds"]), m["phase"], m["test"])
             for m in map(DURATION.match, log_text.splitlines()) if m]
    return sorted(found, key=lambda d: d.seconds, reverse=True)


def table(durations: list[Duration], top: int = 15, note: str = "") -> str:
    """A Markdown table of the `top` slowest phases, with their total."""
    chosen = durations[:top]
    lines = ([note, ""] if note else []) + [
        "| # | seconds | phase | test |", "|---:|---:|---|---|"]
    lines += [f"| {i} | {d.seconds:.1f} | {d.phase} | `{d.test}` |"
              for i, d in enumerate(chosen, start=1)]
    lines += ["", f"These {len(chosen)} take {sum(d.seconds for d in chosen):.0f} s together."]
    return "\n".join(lines)


def replace_between_markers(page: str, body: str) -> str:
    """The page with `body` between its markers; ValueError when the markers are missing."""
    start, end = page.find(SLOWEST_BEGIN), page.find(SLOWEST_END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no `{SLOWEST_BEGIN}` ... `{SLOWEST_END}` pair")
    return page[:start + len(SLOWEST_BEGIN)] + "\n" + body + "\n" + page[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", type=Path, nargs="+",
                        help="saved pytest logs with their --durations reports")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--note", default="", help="a line above the table: where and when")
    parser.add_argument("--write", type=Path, help="a Markdown page to replace the table in")
    args = parser.parse_args(argv)
    texts = [log.read_text(errors="replace") for log in args.logs]
    for log, text in zip(args.logs, texts):
        if not read_durations(text):
            print(f"{log}: no `--durations` lines in it; run pytest with --durations=15",
                  file=sys.stderr)
            return 1
    durations = read_durations("\n".join(texts))
    body = table(durations, args.top, args.note)
    if args.write is None:
        print(body)
        return 0
    try:
        args.write.write_text(replace_between_markers(args.write.read_text(), body))
    except ValueError as error:
        print(f"{args.write}: {error}; add the two markers where the table goes", file=sys.stderr)
        return 1
    print(f"wrote the {min(args.top, len(durations))} slowest tests into {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
