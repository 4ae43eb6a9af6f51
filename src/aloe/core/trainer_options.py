"""The options of TRL's trainer configs (`SFTConfig`, `DPOConfig`, `GRPOConfig`), for checking a
parameter file's `sft.trainer` / `dpo.trainer` / `grpo.trainer` mappings when it loads.

A training stage passes those mappings to TRL as they are (alignment-handbook style: a recipe
is TRL's own keys), so a new TRL option needs no edit here. What is checked is that each key
is an option TRL knows and that its value has the option's type, so that a typo stops the run
before stage 0, not hours later in stage 3.

The option names are read from TRL's source with `ast`, following each config class to its
bases (`SFTConfig` -> `_BaseConfig` -> transformers' `TrainingArguments`), because importing
TRL imports torch: seconds that loading a parameter file must not cost. If the source cannot be
read that way (another TRL layout), TRL is imported and its dataclass fields are used.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from aloe.core.errors import did_you_mean, shown

TRL_CONFIGS = {"sft": ("trl.trainer.sft_config", "SFTConfig"),
               "dpo": ("trl.trainer.dpo_config", "DPOConfig"),
               "grpo": ("trl.trainer.grpo_config", "GRPOConfig")}
_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "None": type(None),
          "list": list, "dict": dict}


@dataclass(frozen=True)
class Option:
    name: str
    types: frozenset[type] | None  # None: a type this check does not read (accept anything)


def check_trainer_options(stage: str, options: dict[str, object]) -> None:
    """Raise ValueError naming the first key that TRL's config for `stage` does not have, or
    whose value has the wrong type."""
    known = trainer_options(stage)
    class_name = TRL_CONFIGS[stage][1]
    for key, value in options.items():
        option = known.get(key)
        if option is None:
            hint = (did_you_mean(str(key), known, f"{stage}.trainer.")
                    or "; see its documentation for the options")
            raise ValueError(f"{shown(key)} is not an option of TRL's {class_name} "
                             f"(trl {_trl_version()}){hint}")
        if option.types is not None and not _fits(value, option.types):
            names = " or ".join(sorted(t.__name__ for t in option.types))
            raise ValueError(f"'{key}' takes {names}, got {shown(value)}")


def _fits(value: object, types: frozenset[type]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return any(isinstance(value, t) for t in types if t is not bool)


@functools.cache
def trainer_options(stage: str) -> dict[str, Option]:
    module, class_name = TRL_CONFIGS[stage]
    try:
        options = _options_from_source(module, class_name)
    except (OSError, SyntaxError, LookupError):
        options = {}
    if len(options) < 50:  # TrainingArguments alone has well over 100: the source was not read
        options = _options_from_import(module, class_name)
    return options


def _options_from_source(module: str, class_name: str) -> dict[str, Option]:
    tree, path = _parse(module)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    node = classes[class_name]
    options: dict[str, Option] = {}
    for base in node.bases:  # base fields first: a subclass may redeclare them
        if isinstance(base, ast.Name):
            options.update(_options_from_source(_module_of(base.id, tree, module, path),
                                                base.id))
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            name = statement.target.id
            if not name.startswith("_"):
                options[name] = Option(name, _annotation_types(statement.annotation))
    return options


def _parse(module: str) -> tuple[ast.Module, Path]:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise LookupError(module)
    path = Path(spec.origin)
    return ast.parse(path.read_text(encoding="utf-8")), path


def _module_of(name: str, tree: ast.Module, module: str, path: Path) -> str:
    """The module a class named `name` comes from: this one, or the one it is imported from."""
    if any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body):
        return module
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == name for a in node.names):
            if node.level:  # relative: from .base_config import _BaseConfig
                package = module.rsplit(".", node.level)[0]
                return f"{package}.{node.module}" if node.module else package
            if node.module == "transformers" and name == "TrainingArguments":
                return "transformers.training_args"
            return node.module or ""
    raise LookupError(name)


def _annotation_types(annotation: ast.expr) -> frozenset[type] | None:
    """int | None -> {int, NoneType}; Optional[str] -> {str, NoneType}; else None (unread)."""
    names: set[str] = set()
    for node in ast.walk(annotation):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and node.value is None:
            names.add("None")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            return None  # a forward reference: not read here
    names -= {"Optional", "Union"}
    if not names or names - _TYPES.keys():
        return None
    return frozenset(_TYPES[n] for n in names)


def _options_from_import(module: str, class_name: str) -> dict[str, Option]:
    import dataclasses
    import importlib

    config = getattr(importlib.import_module(module), class_name)
    return {f.name: Option(f.name, None) for f in dataclasses.fields(config)
            if not f.name.startswith("_")}


def _trl_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("trl")
    except metadata.PackageNotFoundError:
        return "not installed"
