"""aloe.presentation.tables: LLM-written text shown in notebook tables is escaped (issue 27: the
executed notebook 05, converted to HTML, ran 12 scripts injected through a pandas Styler)."""

from __future__ import annotations

import json

import pandas as pd

from aloe.presentation.tables import text_table
from tests.conftest import ROOT

PAYLOADS = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>",
            "</td></tr></table><b>out</b>"]


def test_every_cell_and_header_is_shown_as_text() -> None:
    frame = pd.DataFrame({"reply <i>": PAYLOADS, "model": ["sft", "dpo", "base"]},
                         index=["<u>a</u>", "b", "c"])
    html = text_table(frame).to_html()
    for payload in [*PAYLOADS, "<i>", "<u>"]:
        assert payload not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "white-space: pre-wrap" in html
    assert "<u>a</u>" not in text_table(frame, hide_index=True).to_html()


def test_no_notebook_styles_a_table_around_the_escaping_helper() -> None:
    """A Styler built in a notebook cell would not escape: every styled table goes through
    tables.text_table."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            assert ".style." not in source, f"{path.name}: {source[:120]}"
