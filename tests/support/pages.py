"""Reading the pages the workbook writes, for tests."""

from __future__ import annotations

import re


def param_diff_rows(page: str) -> list[str]:
    """The parameter names in the page's table of differences."""
    table = re.search(r'<table[^>]*class="[^"]*aloe-param-diff[^"]*".*?</table>', page, re.S)
    assert table, "the page has no table of parameter differences"
    body = table.group(0).split("<tbody>")[1]
    return re.findall(r"<th>([^<]+)</th>", body)
