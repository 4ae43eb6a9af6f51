"""docs/errors.md is what scripts/errors_doc.py writes: every example message in it is what the
current code says (the script triggers each one), with the exit code it really has."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT


def test_the_errors_page_is_what_the_script_writes() -> None:
    spec = importlib.util.spec_from_file_location("errors_doc", ROOT / "scripts" / "errors_doc.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "errors.md").read_text() == module.render(), \
        "docs/errors.md is stale: run `python scripts/errors_doc.py`"
