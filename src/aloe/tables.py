"""Tables of text for notebooks: LLM-written replies, transcripts and reasons shown in full
(and `plain_table`, the same frames as plain text for a terminal).

Every such table goes through `text_table`, which escapes each cell as HTML. A pandas Styler
renders cells as raw HTML by default, so a reply holding `<script>` ran in the notebook's HTML
export (nbconvert, the report's readers); escaped, it is shown as the text it is.
`script_json` makes data safe to inline for a page's own script (the transcript viewer).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from pandas.io.formats.style import Styler

TEXT_CELLS = {"white-space": "pre-wrap", "text-align": "left"}


def plain_table(frame: pd.DataFrame, *, index: bool = True) -> str:
    """`frame` as plain text for a terminal (its index the first column, unless `index` is
    False): left-aligned columns two spaces apart, a rule under the header."""
    named = frame.reset_index() if index else frame
    header = [str(c) for c in named.columns]
    rows = [["" if v is None else str(v) for v in row] for row in named.itertuples(index=False)]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def text_table(frame: pd.DataFrame, *, hide_index: bool = False) -> Styler:
    """`frame` for display: every cell and header escaped, long texts wrapped, left-aligned."""
    styled = frame.style.format(escape="html").format_index(escape="html", axis=0) \
        .format_index(escape="html", axis=1).set_properties(**TEXT_CELLS)
    return styled.hide(axis="index") if hide_index else styled


# In a <script> element only "</script" (any case) and "<!--" end or change the data; "<", ">"
# and "&" written as JSON escapes leave no such sequence, and JSON.parse reads them back.
_SCRIPT_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def script_json(data: Any) -> str:
    """`data` as JSON to inline in `<script type="application/json">`: no text in it (a reply
    holding `</script><script>...`) can close the element; non-finite numbers are refused."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).translate(_SCRIPT_ESCAPES)
