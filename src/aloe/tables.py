"""Tables of text for notebooks: LLM-written replies, transcripts and reasons shown in full.

Every such table goes through `text_table`, which escapes each cell as HTML. A pandas Styler
renders cells as raw HTML by default, so a reply holding `<script>` ran in the notebook's HTML
export (nbconvert, the report's readers); escaped, it is shown as the text it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from pandas.io.formats.style import Styler

TEXT_CELLS = {"white-space": "pre-wrap", "text-align": "left"}


def text_table(frame: pd.DataFrame, *, hide_index: bool = False) -> Styler:
    """`frame` for display: every cell and header escaped, long texts wrapped, left-aligned."""
    styled = frame.style.format(escape="html").format_index(escape="html", axis=0) \
        .format_index(escape="html", axis=1).set_properties(**TEXT_CELLS)
    return styled.hide(axis="index") if hide_index else styled
