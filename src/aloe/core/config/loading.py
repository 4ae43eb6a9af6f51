"""Reading a parameter file: YAML read safely, `extends:` resolved, `--set` overrides applied,
validated into `Params` with one line that names the file and the key; a run folder's own
parameters; the parameters papermill injects into a notebook.
"""


from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from aloe.core.config.base import SECTION_NAMES
from aloe.core.config.project import project_root, resolve_path
from aloe.core.config.schema import Params
from aloe.core.errors import ParamsError, did_you_mean, shown
from aloe.core.layout import RunLayout
from aloe.core.yaml_reading import parse_yaml


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The section class inside a field's type (`RoleConfig | None`, `list[ModelSpec]`)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def known_keys(loc: Iterable[str | int]) -> list[str]:
    """The keys a parameter file may give where `loc` points (`("run",)`: those of `run`);
    list indices and mapping keys on the way are stepped over."""
    model: type[BaseModel] | None = Params
    for part in loc:
        if model is None:
            return []
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            model = _model_in(field.annotation)
    return list(model.model_fields) if model is not None else []


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        *parent, name = first["loc"]
        prefix = "".join(f"{part}." for part in parent)
        return f"unknown key '{key}'" + did_you_mean(str(name), known_keys(parent), prefix)
    message = first["msg"].removeprefix("Value error, ")
    if key == "(top level)":
        return message
    given = first.get("input")
    if isinstance(given, (dict, list)):  # the message names what is wrong inside it
        return f"key '{key}': {message}"
    return f"key '{key}': {message} (got {shown(given)})"


def params_from_dict(data: dict[str, Any], source: str = "<parameters>") -> Params:
    """Validate a mapping (a parsed file, or papermill-injected sections)."""
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        params = Params.model_validate(data)
    except ValidationError as error:
        raise ParamsError(f"{source}: {_describe(error)}") from None
    params._source = source
    params._root = project_root()
    return params


def load_params(path: str | os.PathLike[str], overrides: Iterable["Override"] = (),
                source: str | None = None) -> Params:
    """Read and validate a parameter file, or raise ParamsError naming the file and key.

    A file may start from another one (`extends: paper.yaml`, relative to its own folder) and
    list only what changes: mappings merge key by key, anything else is replaced. `overrides`
    (the command line's `--set section.key=value`, see `parse_set`) go on top the same way,
    before validation, so they are checked exactly like the file; an error they cause names
    the option (`--set: unknown key 'conversations.turnz'`). `source` names the file in
    messages (default: `path` as given).
    """
    return _with_overrides(read_params_file(path), list(overrides), source or str(path))


def _with_overrides(data: dict[str, Any], overrides: list["Override"], source: str) -> Params:
    """A parameter mapping with the command line's changes on top, validated (an error names
    the file, or the option of the first change that breaks it)."""
    if not overrides:
        return params_from_dict(data, source=source)
    try:
        params = params_from_dict(apply_overrides(data, overrides), source=source)
    except ParamsError:
        raise _blame(data, overrides, source) from None
    params._overrides = tuple(override.text for override in overrides)
    params._source = " ".join([source, *params._overrides])
    return params


def load_run_folder(folder: str | os.PathLike[str], overrides: Iterable["Override"] = (),
                    source: str | None = None) -> Params:
    """The parameters a run was made with, read from its folder (`manifest.json` holds every
    value resolved, the command line's changes included), so that a command can name a run by
    its folder instead of its parameter file and `--run-name`. The run is the folder given:
    a folder moved or copied since is read where it is now. `overrides` go on top as for a
    file (`--set`, `--run-name`: a new run folder from this run's parameters)."""
    import json

    folder, source = Path(folder), source or str(folder)
    manifest = RunLayout(run_dir=folder, cache_path=Path()).manifest
    if not folder.is_dir():
        raise ParamsError(f"{source}: no such run folder")
    if not manifest.is_file():
        raise ParamsError(f"{source}: a folder but not a run folder (no manifest.json, which "
                          "`aloe run` writes when a run starts): give the run's parameter file "
                          "(and --run-name), or the folder of a run `aloe run` made")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))["params"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ParamsError(f"{manifest}: not a run manifest with its parameters "
                          f"({type(error).__name__}); give the run's parameter file "
                          "instead") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{manifest}: its params are not a mapping; give the run's "
                          "parameter file instead")
    here = folder.resolve()
    run = data.get("run") if isinstance(data.get("run"), dict) else {}
    recorded = resolve_path(str(run.get("output_dir") or "outputs")) / str(run.get("name"))
    if recorded.resolve() != here:  # moved or copied: the run is where it is now
        data = deep_merge(data, {"run": {"output_dir": str(here.parent), "name": here.name}})
    return _with_overrides(data, list(overrides), source)


# --------------------------------------------------------------------------------------------
# One-off changes from the command line: --set section.key=value
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Override:
    """One change to the parameter mapping: the dotted key, its value, and how it was typed."""

    key: str  # "dpo.trainer.beta"
    value: Any
    option: str = "--set"  # the option that gave it, for messages ("--run-name", "--limit")
    text: str = ""  # as typed, for the run's record ("--set dpo.trainer.beta=0.5")

    def as_mapping(self) -> dict[str, Any]:
        """{"dpo": {"trainer": {"beta": 0.5}}}"""
        nested: Any = self.value
        for part in reversed(self.key.split(".")):
            nested = {part: nested}
        return nested


def parse_set(text: str) -> Override:
    """`section.key=value` -> an Override. The value is read as a YAML scalar or flow, as the
    file would read it: `1` an integer, `0.5` a number, `true`, `null` (or nothing), `[a, b]` a
    list, `{beta: 0.5}` a mapping, `"..."` quoted text; anything else is text as typed (so
    `report.title=Run 2: beta 0.5` is that title, not a mapping or a comment)."""
    key, equals, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    parts = key.split(".")
    if not equals or not key or any(not part.strip() or part != part.strip() for part in parts):
        raise ParamsError(f"--set: expected section.key=value (e.g. --set conversations.turns=1),"
                          f" got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        if raw.startswith(("[", "{", '"', "'")):
            raise ParamsError(f"--set: the value of '{key}' is not valid YAML: {raw!r} (to give "
                              f"it as text, quote it: --set '{key}=\"{raw}\"')") from None
        value = raw
    if not raw.startswith(("[", "{", '"', "'")) and not (
            value is None or isinstance(value, (bool, int, float))):
        value = raw  # text as typed: no block mapping, comment, date or tag read into it
    return Override(key, value, "--set", f"--set {shlex.quote(text)}")


def apply_overrides(data: dict[str, Any], overrides: Iterable[Override]) -> dict[str, Any]:
    """The mapping with each change merged on top, in order, as `extends` merges a file."""
    for override in overrides:
        data = deep_merge(data, override.as_mapping())
    return data


def _blame(data: dict[str, Any], overrides: list[Override], source: str) -> ParamsError:
    """The error of the file alone if it has one, else that of the first change that breaks
    it, named by its option: `--set: unknown key 'conversations.turnz'`."""
    try:
        Params.model_validate(data)
    except ValidationError as error:
        return ParamsError(f"{source}: {_describe(error)}")
    for count in range(1, len(overrides) + 1):
        try:
            Params.model_validate(apply_overrides(data, overrides[:count]))
        except ValidationError as error:
            return ParamsError(f"{overrides[count - 1].option}: {_describe(error)}")
    # not reached: with every change applied, validation failed above
    return ParamsError(f"{source}: the command line's changes are invalid together")


def read_params_file(path: str | os.PathLike[str],
                     _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A parameter file as a mapping, with what it `extends` merged underneath."""
    file = Path(path)
    if not file.is_file():
        raise ParamsError(f"{path}: parameter file not found")
    data = parse_yaml(_read_text(file), str(path))
    if data is None or data == {}:
        raise ParamsError(f"{path}: the file is empty (no sections): a run would silently use "
                          "every default; start from a profile instead, e.g. `extends: tiny.yaml`")
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return extend(data, file.parent, str(path), _seen + (file.resolve(),))


def _read_text(file: Path) -> str:
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = file.read_bytes()[:error.start].count(b"\n") + 1
        raise ParamsError(f"{file}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
                          f"line {line}); save the file as UTF-8") from None
    except OSError as error:
        raise ParamsError(f"{file}: cannot be read ({error.strerror})") from None


def extend(data: dict[str, Any], folder: Path, source: str,
           seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """`data` merged over the file its `extends` key names (resolved against `folder`)."""
    parent = data.get("extends")
    if parent is None:
        return {k: v for k, v in data.items() if k != "extends"}
    if not isinstance(parent, str) or not parent.strip():
        raise ParamsError(f"{source}: key 'extends': expected the path of a parameter file, "
                          f"got {parent!r}")
    base_file = Path(parent).expanduser()
    if not base_file.is_absolute():
        base_file = folder / base_file
    if base_file.resolve() in seen:
        raise ParamsError(f"{source}: key 'extends': {parent} extends itself (a cycle)")
    if not base_file.is_file():
        raise ParamsError(f"{source}: key 'extends': parameter file not found: {base_file}")
    base = read_params_file(base_file, seen)
    return deep_merge(base, {k: v for k, v in data.items() if k != "extends"})


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` on top: nested mappings merge, anything else is replaced."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _injected_names(namespace: dict[str, Any]) -> set[str] | None:
    """Names papermill assigned in its injected cell (the cell that starts '# Parameters').

    IPython keeps every executed cell's source in `In`; None when nothing was injected.
    """
    import ast

    for source in reversed(list(namespace.get("In") or [])):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            names: set[str] = set()
            for node in ast.parse(source).body:
                if isinstance(node, ast.Assign):
                    names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            return names
    return None


def notebook_params(namespace: dict[str, Any], default: str = "params/tiny.yaml") -> Params:
    """Validate what papermill injected into a notebook (pass the notebook's `globals()`).

    The notebook's `parameters` cell sets `params_file` and every section to None. Papermill
    (`-f FILE`) injects each top-level key of the file as a variable; a key that is no section
    is unknown and stops the run. With nothing injected (JupyterLab) the notebook runs
    `params_file`, or the tiny profile when that is None.
    """
    params_file = namespace.get("params_file")
    source = str(params_file or "<notebook parameters>")
    injected = _injected_names(namespace) or set()
    unknown = sorted(injected - set(SECTION_NAMES) - {"params_file", "extends"})
    if unknown:
        raise ParamsError(f"{source}: unknown key '{unknown[0]}'"
                          + did_you_mean(unknown[0], sorted(SECTION_NAMES)))
    sections = {name: namespace[name] for name in injected & set(SECTION_NAMES | {"extends"})
                if namespace.get(name) is not None}
    if not sections:
        return load_params(resolve_path(params_file or default))
    folder = resolve_path(params_file).parent if params_file else project_root() / "params"
    return params_from_dict(extend(sections, folder, source), source=source)
