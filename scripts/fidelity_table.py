"""Rewrite the README's fidelity table from `aloe.fidelity` and the two paper profiles.

    python scripts/fidelity_table.py          # rewrite README.md's table
    python scripts/fidelity_table.py --check  # exit 1 when README.md's table is not the code's

The table sits between two markers in README.md; tests/test_fidelity.py checks that it is the
one this script writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aloe.config import load_params
from aloe.fidelity import markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START = "<!-- fidelity table: written by scripts/fidelity_table.py from src/aloe/fidelity.py -->\n"
END = "<!-- end of the fidelity table -->\n"


def table() -> str:
    return markdown_table(load_params(ROOT / "params" / "paper.yaml"),
                          load_params(ROOT / "params" / "paper_plus.yaml"))


def with_table(readme: str, text: str) -> str:
    """`readme` with the text between the markers replaced by `text`."""
    if START not in readme or END not in readme:
        raise SystemExit(f"fidelity_table: {README} has no fidelity table markers; put "
                         f"{START.strip()} and {END.strip()} around the table")
    head, rest = readme.split(START, 1)
    return head + START + text + END + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    readme = README.read_text(encoding="utf-8")
    updated = with_table(readme, table())
    if args.check:
        if updated != readme:
            print("fidelity_table: README.md's fidelity table is not the code's: run "
                  "python scripts/fidelity_table.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated, encoding="utf-8")
    print(f"wrote the fidelity table in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
