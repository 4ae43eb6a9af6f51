"""Reading a parameter file's YAML safely: one document, no key given twice, and nothing that
would hang or crash the loader (alias bombs, self-references, deep nesting, control
characters), each refused in one line naming the file and the line. `aloe.core.config` builds the
typed parameters from what this returns."""

from __future__ import annotations

from typing import Any

import yaml

from aloe.core.errors import ParamsError

MAX_YAML_VALUES = 100_000  # scalars, lists and mappings once aliases are expanded
MAX_YAML_DEPTH = 64


def parse_yaml(text: str, source: str) -> Any:
    """A YAML document, refusing a key given twice in one mapping (YAML loaders otherwise keep
    the last one silently), with the key's path and both lines in the message; and refusing,
    before anything is built, a document that aliases expand past MAX_YAML_VALUES values (an
    alias bomb: a few lines that would take minutes and gigabytes), one that refers to itself,
    or one nested deeper than MAX_YAML_DEPTH."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters (NUL, form feed) at once
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source)
        _refuse_duplicate_keys(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise ParamsError(f"{source}: not valid YAML{_yaml_error_place(error, text)}") from None
    except RecursionError:
        raise ParamsError(f"{source}: nested too deeply to read (more than "
                          f"{MAX_YAML_DEPTH} levels are refused)") from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_error_place(error: yaml.YAMLError, text: str) -> str:
    """' at line N (what)', as far as the error says."""
    mark = getattr(error, "problem_mark", None)
    line = mark.line + 1 if mark else None
    if line is None and isinstance(getattr(error, "position", None), int):  # a ReaderError
        line = text[:error.position].count("\n") + 1
    where = f" at line {line}" if line else ""
    problem = getattr(error, "problem", None)
    if isinstance(error, yaml.reader.ReaderError):
        problem = f"character U+{error.character:04X} is not allowed"
    return where + (f" ({problem})" if problem else "")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: yaml.Node, source: str) -> None:
    """How many values the document holds with every alias expanded, counted without
    expanding (each shared node once, its size remembered); refused past MAX_YAML_VALUES, when
    a node contains itself, or deeper than MAX_YAML_DEPTH."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_YAML_VALUES:
                line = node.start_mark.line + 1
                raise ParamsError(f"{source}: the value at line {line} expands through its "
                                  f"aliases to more than {MAX_YAML_VALUES:,} values (an alias "
                                  "bomb?); write the values out instead")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ParamsError(f"{source}: the value at line {node.start_mark.line + 1} refers "
                              "to itself through an alias; a parameter file holds no cycles")
        if depth > MAX_YAML_DEPTH:
            raise ParamsError(f"{source}: nested more than {MAX_YAML_DEPTH} levels deep at "
                              f"line {node.start_mark.line + 1}")
        on_path.add(key)
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in _children(node)
                     if id(child) not in sizes)


def _refuse_duplicate_keys(root: yaml.Node, source: str) -> None:
    """Each mapping checked once, however many aliases name it."""
    checked: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in checked:
            continue
        checked.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, str(i))) for i, item in enumerate(node.value))
            continue
        if not isinstance(node, yaml.MappingNode):
            continue
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key in seen:
                dotted = ".".join((*path, key))
                raise ParamsError(f"{source}: key '{dotted}' is given twice (lines {seen[key]} "
                                  f"and {line}); keep one")
            seen[key] = line
            stack.append((value_node, (*path, key)))
