"""Draw the README's figure (docs/tiny_run.png) from a finished run folder, with the report's
own plot function.

    python scripts/readme_figure.py RUN_FOLDER [--figure alignment] [--out docs/tiny_run.png]

RUN_FOLDER is e.g. outputs/tiny (or the folder `bench/end_to_end.py --keep DIR` wrote). The
figure is the one the report draws from the same files; it is written small enough to commit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aloe.core.layout import RunLayout
from aloe.core.records import read_json, read_records
from aloe.presentation import conversation_views, plots


def alignment(layout: RunLayout):
    return plots.plot_alignment_levels(read_json(layout.metrics))


def win_rate(layout: RunLayout):
    records = read_records(layout.conversations)
    return plots.plot_hinted_win_rate(conversation_views.turn_table(records))


FIGURES = {"alignment": alignment, "win_rate": win_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--figure", choices=sorted(FIGURES), default="alignment")
    parser.add_argument("--out", type=Path, default=Path("docs/tiny_run.png"))
    args = parser.parse_args()
    plots.style()
    layout = RunLayout(run_dir=args.run_dir,
                       cache_path=args.run_dir.parent / "cache" / "llm.sqlite")
    figure = FIGURES[args.figure](layout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"{args.out}: {args.out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
