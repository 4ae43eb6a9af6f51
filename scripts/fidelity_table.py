"""Rewrite the fidelity table of docs/fidelity.md from `aloe.core.fidelity` and the two paper
profiles.

    python scripts/fidelity_table.py          # rewrite docs/fidelity.md's table
    python scripts/fidelity_table.py --check  # exit 1 when that table is not the code's

The table sits between two markers in docs/fidelity.md (`make docs` reruns this script);
tests/test_fidelity.py checks that it is the one this script writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aloe.core.config import load_params
from aloe.core.fidelity import full_table, markdown_table

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "fidelity.md"
START = ("<!-- fidelity table: written by scripts/fidelity_table.py from "
         "src/aloe/core/fidelity.py -->\n")
END = "<!-- end of the fidelity table -->\n"


def table() -> str:
    """The table of paper.yaml and paper_plus.yaml, then the rows where paper_full.yaml (every
    weight trained, as released) differs from paper.yaml."""
    params = {name: load_params(ROOT / "params" / f"{name}.yaml")
              for name in ("paper", "paper_plus", "paper_full")}
    return (markdown_table(params["paper"], params["paper_plus"])
            + "\n`params/paper_full.yaml` trains every weight, as the released code does; where it "
              "differs from `paper.yaml`:\n\n" + full_table(params["paper_full"]))


def with_table(page: str, text: str) -> str:
    """`page` with the text between the markers replaced by `text`."""
    if START not in page or END not in page:
        raise SystemExit(f"fidelity_table: {PAGE} has no fidelity table markers; put "
                         f"{START.strip()} and {END.strip()} around the table")
    head, rest = page.split(START, 1)
    return head + START + text + END + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    page = PAGE.read_text(encoding="utf-8")
    updated = with_table(page, table())
    if args.check:
        if updated != page:
            print("fidelity_table: docs/fidelity.md's fidelity table is not the code's: run "
                  "python scripts/fidelity_table.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(updated, encoding="utf-8")
    print(f"wrote the fidelity table in {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
