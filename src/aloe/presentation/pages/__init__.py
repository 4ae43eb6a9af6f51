"""The pages the workbook writes, their markup, style and script, one file each
(`viewer.html`, `viewer.js`, `rating_form.css`, `rating_form.js`, `tree.css`): code reads them
by name and fills their slots; data reaches a page only as escaped text or as JSON inlined with
`tables.script_json`.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def read(name: str) -> str:
    """The file `name` of this folder (a missing one is a bug of the package: it raises)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
