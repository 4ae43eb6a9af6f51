"""Write a workbook notebook from a percent-format script (`# %%` code, `# %% [markdown]` text).

    python scripts/new_notebook.py notebooks/src.py notebooks/NN_name.ipynb

The code cell that holds `params_file = None` (a stage notebook) or that starts with
`# Parameters` (07_compare) is tagged `parameters` for papermill. Outputs are never written:
notebooks are committed clean.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def cells_from_percent(text: str) -> list[nbformat.NotebookNode]:
    cells: list[nbformat.NotebookNode] = []
    kind, lines = None, []

    def flush() -> None:
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                             for line in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        else:
            cell = nbformat.v4.new_code_cell(body)
            if "params_file = None" in body or body.startswith("# Parameters"):
                cell.metadata["tags"] = ["parameters"]
            cells.append(cell)

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line)
    flush()
    return cells


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    notebook = nbformat.v4.new_notebook()
    notebook.cells = cells_from_percent(source.read_text())
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    nbformat.write(notebook, target)


if __name__ == "__main__":
    main()
