"""A disk-full drill (test code): `aloe run` with its output folder on a tiny tmpfs, then again
once the tmpfs is made larger.

Run inside a private mount namespace, so that the mount is seen by this process and its
children only and needs no privilege on the host:

    unshare --user --map-root-user --mount python -m tests.support.disk_full \\
        --outputs DIR --size 600k --params P.yaml --root PROJECT --report REPORT.json

The filesystem is real (the kernel's tmpfs answers ENOSPC like a full disk); nothing is
simulated. What it writes to REPORT (outside the tmpfs, so that the test can read it after
the namespace is gone): each run's exit code and stderr, every file the failed run left under
DIR, which of them are temporary or partial, which executed notebooks and JSON-lines files do
not read back whole, and the conversations the rerun holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

TEMPORARY = (".tmp", ".partial")


def _mount(outputs: Path, size: str, remount: bool = False) -> None:
    options = f"remount,size={size}" if remount else f"size={size}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(outputs)], check=True)


def _aloe(root: Path, params: str) -> dict[str, Any]:
    run = subprocess.run([sys.executable, "-m", "aloe", "run", params, "--stages", "2",
                          "--quiet"], cwd=root, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "ALOE_ROOT": str(root)})
    return {"returncode": run.returncode, "stderr": run.stderr, "stdout": run.stdout}


def _unreadable(outputs: Path) -> list[str]:
    """Executed notebooks and JSON-lines files that do not read back whole."""
    import nbformat

    from aloe.core.records import DataError, read_records

    bad = []
    for file in outputs.rglob("*.ipynb"):
        try:
            nbformat.read(file, as_version=4)
        except Exception:  # noqa: BLE001 - anything unreadable is reported
            bad.append(str(file))
    for file in outputs.rglob("*.jsonl"):
        try:
            read_records(file, repair=False)
        except DataError:
            bad.append(str(file))
    return bad


def _conversation_ids(outputs: Path) -> list[str]:
    from aloe.core.records import read_records

    return [r["id"] for file in outputs.rglob("conversations.jsonl") for r in read_records(file)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=Path, required=True)
    parser.add_argument("--size", required=True)
    parser.add_argument("--larger", default="64m")
    parser.add_argument("--params", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--personas", type=Path, required=True,
                        help="a personas.jsonl to put in the run folder first")
    parser.add_argument("--run-name", default="full")
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)

    args.outputs.mkdir(parents=True, exist_ok=True)
    _mount(args.outputs, args.size)
    run_dir = args.outputs / args.run_name
    run_dir.mkdir()
    (run_dir / "personas.jsonl").write_bytes(args.personas.read_bytes())
    report: dict[str, Any] = {"full": _aloe(args.root, args.params)}
    files = sorted(str(p.relative_to(args.outputs)) for p in args.outputs.rglob("*")
                   if p.is_file())
    report["files_after_full"] = files
    report["temporary_after_full"] = [f for f in files if f.endswith(TEMPORARY)]
    report["unreadable_after_full"] = _unreadable(args.outputs)
    _mount(args.outputs, args.larger, remount=True)
    report["rerun"] = _aloe(args.root, args.params)
    report["conversations_after_rerun"] = _conversation_ids(args.outputs)
    report["unreadable_after_rerun"] = _unreadable(args.outputs)
    args.report.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
