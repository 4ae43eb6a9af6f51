"""Prompt templates, one per file in this folder (`NAME.txt`), filled with `${field}` slots.

Templates are the only place prompt text lives; code asks for them by name.
"""

from __future__ import annotations

import functools
import string
from importlib import resources


class PromptError(KeyError):
    """A template is missing, or a slot was left unfilled."""


@functools.cache
def template(name: str) -> string.Template:
    try:
        text = resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptError(f"no prompt template '{name}' in aloe/prompts/") from None
    return string.Template(text)


def render(name: str, **fields: object) -> str:
    """The template `name` with every `${field}` filled; a missing field is an error."""
    try:
        return template(name).substitute({k: str(v) for k, v in fields.items()}).strip()
    except KeyError as missing:
        raise PromptError(f"prompt '{name}' needs the field {missing}") from None


def names() -> list[str]:
    return sorted(p.name[:-4] for p in resources.files(__package__).iterdir()
                  if p.name.endswith(".txt"))
