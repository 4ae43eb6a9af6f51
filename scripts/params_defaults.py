"""Write params/defaults.yaml: the schema's defaults as one named profile, every key with the
value a file that does not give it takes, and the comment the schema gives it.

    python scripts/params_defaults.py          # rewrite params/defaults.yaml
    python scripts/params_defaults.py --check  # exit 1 when that file is not the schema's

The values live in one place, the schema (src/aloe/core/config/); this file is written from it
(`make docs` reruns this script) and tests/test_profiles.py fails when the two drift, so that
a person reading params/ sees every default without a second copy to keep in step.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import sys
import textwrap
import tokenize
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from aloe.core.config import Params
from aloe.core.config.base import Section

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "params" / "defaults.yaml"
BASE_MODULE = Section.__module__
HEADER = """\
# The schema's defaults as one profile: every key a parameter file may give, the value it takes
# when no file gives it, and what it means (the schema's own comments). WRITTEN by
# scripts/params_defaults.py from src/aloe/core/config/ (`make docs`): change a default there, never
# here; tests/test_profiles.py fails when this file and the schema differ.
#
# Every other file in params/ lists only what differs from this (or from the file it extends):
# tiny.yaml from these defaults, paper_plus.yaml, paper_full.yaml and vllm.yaml from paper.yaml.
# This is a profile like the others: `aloe plan params/defaults.yaml` plans it (a run named
# `defaults`), and `extends: defaults.yaml` starts a file from it. A trainer option not listed
# under sft.trainer or dpo.trainer takes TRL's own default (docs/running.md, Profiles).
"""


# --------------------------------------------------------------------------------------------
# The schema's comments, read from its source
# --------------------------------------------------------------------------------------------
def _comment_block_above(lines: list[str], lineno: int) -> list[str]:
    """The whole-line comments right above line `lineno` (1-based), up to a blank or code line."""
    block: list[str] = []
    index = lineno - 2
    while index >= 0 and lines[index].strip().startswith("#"):
        block.insert(0, lines[index].strip().removeprefix("#").strip())
        index -= 1
    return block


def _comments_on(lines: list[str], inline: dict[int, str], first: int, last: int) -> list[str]:
    """The comments that end code lines `first`..`last` (not whole-line ones)."""
    return [inline[number] for number in range(first, last + 1)
            if number in inline and not lines[number - 1].strip().startswith("#")]


def _class_comments(klass: type) -> dict[str, list[str]]:
    """Field name (and `trainer.OPTION` for TRAINER_DEFAULTS) -> its comment lines in `klass`'s
    own source: the block above it, then the one on its line(s)."""
    source = textwrap.dedent(inspect.getsource(klass))
    lines = source.splitlines()
    inline = {token.start[0]: token.string.removeprefix("#").strip()
              for token in tokenize.generate_tokens(io.StringIO(source).readline)
              if token.type == tokenize.COMMENT}
    found: dict[str, list[str]] = {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    for node in body.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        end = node.end_lineno or node.lineno
        found[node.target.id] = (_comment_block_above(lines, node.lineno)
                                 + _comments_on(lines, inline, node.lineno, end))
        if node.target.id == "TRAINER_DEFAULTS" and isinstance(node.value, ast.Dict):
            for key in node.value.keys:
                if isinstance(key, ast.Constant):
                    found[f"trainer.{key.value}"] = _comments_on(lines, inline, key.lineno,
                                                                 key.lineno)
    return found


@cache
def comments_of(model: type[BaseModel]) -> dict[str, list[str]]:
    """A section's comments, its bases' first (a subclass's own comment wins)."""
    found: dict[str, list[str]] = {}
    for klass in reversed(model.__mro__):
        if klass.__module__.startswith("aloe.core.config."):
            found.update({key: lines for key, lines in _class_comments(klass).items() if lines})
    return found


def summary(model: type[BaseModel]) -> list[str]:
    """The first paragraph of a section's docstring (its own, or its nearest base's), as lines."""
    for klass in model.__mro__:
        if not klass.__module__.startswith("aloe.core.config.") or klass.__module__ == BASE_MODULE:
            continue  # pydantic's model, or the base of every section: not this section's own
        if klass.__dict__.get("__doc__"):
            return inspect.cleandoc(klass.__doc__ or "").split("\n\n")[0].splitlines()
    return []


# --------------------------------------------------------------------------------------------
# The profile
# --------------------------------------------------------------------------------------------
def flow(value: Any) -> str:
    """A value as YAML on one line (`null`, `0.0002`, `{}`, `[a, b]`, `"{run}"`)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False,
                          allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _own_defaults_note(model: BaseModel) -> list[str]:
    """Where a section's default sets a sub-section apart from its class's own defaults (each
    role): a file that gives that sub-section at all starts from the class's defaults."""
    apart: dict[str, Any] = {}
    kinds: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if not isinstance(value, BaseModel) or not _constructible(type(value)):
            continue
        own, given = type(value)().model_dump(mode="json"), value.model_dump(mode="json")
        differing = {key: own[key] for key in given if given[key] != own[key]}
        if differing:
            apart.update(differing)
            kinds.append(type(value).__name__)
    if not apart:
        return []
    shown = ", ".join(f"{key} {flow(item)}" for key, item in apart.items())
    return textwrap.wrap(
        f"Each of these given in a file that extends nothing takes the keys it leaves out from "
        f"{kinds[0]}'s own defaults ({shown}), not from the values below.", 95)


def _constructible(model: type[BaseModel]) -> bool:
    return all(not field.is_required() for field in model.model_fields.values())


def section_lines(model: BaseModel, indent: int, said: set[tuple[str, ...]]) -> list[str]:
    """Every key of a section with its value, each comment said once (a role's keys are
    explained at the first role, the training keys at sft)."""
    pad, kind = " " * indent, type(model)
    comments = comments_of(kind)
    dumped = model.model_dump(mode="json")
    lines = [f"{pad}# {note}".rstrip() for note in _own_defaults_note(model)]

    def notes(text: list[str], about: str = "") -> list[str]:
        """`text` as comments, unless it was said about the same key before."""
        key = (about, *text)
        if not text or key in said:
            return []
        said.add(key)
        return [f"{pad}# {line}".rstrip() for line in text]

    for name in kind.model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines += notes(summary(type(value))) + notes(comments.get(name, []), name)
            lines += [f"{pad}{name}:", *section_lines(value, indent + 2, said)]
            continue
        lines += notes(comments.get(name, []), name)
        if name == "trainer" and isinstance(value, dict):
            lines.append(f"{pad}{name}:")
            for option, given in dumped[name].items():
                lines += [f"  {line}" for line in
                          notes(comments.get(f"trainer.{option}", []), option)]
                lines.append(f"{pad}  {option}: {flow(given)}")
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            lines.append(f"{pad}{name}:")
            lines += [f"{pad}  - {flow(item.model_dump(mode='json', exclude_defaults=True))}"
                      for item in value]
        else:
            lines.append(f"{pad}{name}: {flow(dumped[name])}")
    return lines


def profile() -> str:
    """params/defaults.yaml as the schema makes it."""
    defaults, said = Params(), set()
    parts = [HEADER]
    for name in Params.model_fields:
        section = getattr(defaults, name)
        doc = summary(type(section))
        notes = [f"# {line}".rstrip() for line in doc] if ("", *doc) not in said else []
        said.add(("", *doc))
        parts.append("\n".join([*notes, f"{name}:", *section_lines(section, 2, said)]) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when params/defaults.yaml is not the schema's")
    args = parser.parse_args(argv)
    text = profile()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE.relative_to(ROOT)} is not the schema's defaults: run python "
                  "scripts/params_defaults.py (or make docs)", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
