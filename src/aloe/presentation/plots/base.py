"""What every figure shares: the style, the page width, a new figure, an empty panel's note,
whole-number ticks, legends beside the data, and series that differ in marker and line
style and are nudged apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PALETTE = "colorblind"

PAGE_WIDTH = 10.0  # inches

DPI = 120  # PAGE_WIDTH x DPI = 1200 pixels: the report's text column on a laptop screen

HEIGHT = 4.0

MARKERS = ("o", "s", "^", "D", "v", "P", "X")

LINESTYLES = ("-", "--", ":", "-.")

NUDGE = 0.06  # x offset between series that share x positions, in x units


def style() -> None:
    """One look for every figure of the workbook (PAGE_WIDTH inches at DPI: the page's width)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE,
                  rc={"figure.dpi": DPI, "savefig.dpi": DPI})


def new_figure(width: float = PAGE_WIDTH, height: float = HEIGHT,
               ncols: int = 1) -> tuple[Figure, Any]:
    style()
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), constrained_layout=True)
    plt.close(fig)  # detached: a notebook shows the returned figure once, as the cell's value
    return fig, axes


def empty_axes(ax: Any, message: str) -> None:
    """Say on the axes why there is nothing to draw (a stage not run, no data yet)."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def integer_ticks(ax: Any, axis: str = "y") -> None:
    """Whole-number ticks on a count axis ("x", "y" or "both")."""
    for name in ("x", "y") if axis == "both" else (axis,):
        getattr(ax, f"{name}axis").set_major_locator(MaxNLocator(integer=True))


def legend_beside(ax: Any, title: str | None = None) -> None:
    """Move an axes' legend to its right, off the data."""
    if ax.get_legend() is not None or ax.get_legend_handles_labels()[0]:
        ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def figure_legend(fig: Figure, ax: Any, title: str | None = None) -> None:
    """One legend for the whole figure, right of every panel (taken from `ax`)."""
    handles, labels = ax.get_legend_handles_labels()
    for axis in fig.axes:
        if axis.get_legend() is not None:
            axis.get_legend().remove()
    if handles:
        fig.legend(handles, labels, title=title, loc="outside right center", frameon=False)


def series_style(index: int, count: int) -> dict[str, Any]:
    """Marker, line style and x nudge of the index-th of `count` series that may coincide."""
    return {"marker": MARKERS[index % len(MARKERS)],
            "linestyle": LINESTYLES[index % len(LINESTYLES)],
            "nudge": (index - (count - 1) / 2) * NUDGE}


def finite_values(items: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in items]


def interval_lines(ax: Any, x: Sequence[float], mid: Sequence[float | None],
                    low: Sequence[float | None], high: Sequence[float | None], color: Any,
                    label: str, index: int, count: int) -> None:
    """A series with its interval as error bars, styled to stay visible under another."""
    look = series_style(index, count)
    xs = [k + look["nudge"] for k in x]
    y, lo, hi = finite_values(mid), finite_values(low), finite_values(high)
    errors = [[max(0.0, a - b) for a, b in zip(y, lo)], [max(0.0, b - a) for a, b in zip(y, hi)]]
    ax.errorbar(xs, y, yerr=errors, color=color, marker=look["marker"],
                linestyle=look["linestyle"], capsize=3, markersize=6, linewidth=1.6,
                label=label)
