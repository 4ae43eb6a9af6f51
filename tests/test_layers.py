"""The package's architecture, checked on its source: every module sits in one layer package,
imports only go down the layers (function-level imports counted), no two modules import each
other round a loop, and no module outgrows 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.layers import LAYERS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "aloe"
DATA_PACKAGES = {"prompts": "core"}  # templates and their loader, read by every layer
TOP_LEVEL = {"__init__", "__main__"}  # the package's version, and `python -m aloe`
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(["aloe", *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The aloe modules `name` imports anywhere in its file (a name imported from a package is
    its submodule when there is one)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "aloe"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.split(".")[0] != "aloe":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
    while any(m not in MODULES for m in found):
        found = {m if m in MODULES else m.rsplit(".", 1)[0] for m in found}
    return found - {name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return DATA_PACKAGES.get(parts[1], parts[1] if parts[1] in LAYERS else None)


def test_every_module_is_in_a_layer() -> None:
    stray = [name for name in MODULES if layer_of(name) is None
             and name.split(".")[-1] not in TOP_LEVEL and name != "aloe"]
    assert not stray, f"modules outside the layer packages {LAYERS}: {stray}"


def test_imports_only_go_down_the_layers() -> None:
    upward = [f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})"
              for name, targets in GRAPH.items() if layer_of(name)
              for target in sorted(targets) if layer_of(target)
              and LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(name))]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def _without_package_reexports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ importing its own submodules (to name what it offers) is no loop."""
    return {name: {t for t in targets if not (MODULES[name].name == "__init__.py"
                                              and t.startswith(name + "."))}
            for name, targets in graph.items()}


def test_no_import_loops_counting_function_level_imports() -> None:
    assert _cycles(_without_package_reexports(GRAPH)) == []


def test_the_loop_finder_finds_a_loop() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_600_lines() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
