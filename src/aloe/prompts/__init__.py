"""Prompt templates, one per file in this folder (`NAME.txt`), filled with `${field}` slots,
and the worked examples shown before some of them (`examples/NAME.json`).

Templates are the only place prompt text lives; code asks for them by name. A worked example
is data (the fields of one question and its answer) rendered through the same template as the
real question, so a change to a template changes its example with it.
"""

from __future__ import annotations

import functools
import json
import string
from importlib import resources
from typing import Any

from aloe.core.chat import Message, transcript
from aloe.core.errors import AloeError

ANNOTATOR_SYSTEM = "annotator_system"


class PromptError(AloeError, KeyError):
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


@functools.cache
def examples(name: str) -> tuple[dict[str, Any], ...]:
    """The worked examples of template `name` (`examples/NAME.json`: one `fields`/`answer`
    pair, or a list of them under `examples`). A `transcript` given as a list of messages is
    written out as the annotators read it ("User:" / "Assistant:" lines)."""
    try:
        text = resources.files(__package__).joinpath(f"examples/{name}.json").read_text(
            encoding="utf-8")
    except FileNotFoundError:
        raise PromptError(f"no worked example 'examples/{name}.json' in aloe/prompts/") from None
    data = json.loads(text)
    worked = []
    for item in data.get("examples") or [data]:
        fields = dict(item["fields"])
        if isinstance(fields.get("transcript"), list):
            fields["transcript"] = transcript(fields["transcript"])
        worked.append({"fields": fields, "answer": item["answer"]})
    return tuple(worked)


def few_shot(name: str, *, system: bool = True, **fields: object) -> list[Message]:
    """An annotator's request: the system message (unless `system=False`), the worked examples
    of template `name` (each its question and answer), then the real question, all rendered
    through the same template."""
    messages: list[Message] = []
    if system:
        messages.append({"role": "system", "content": render(ANNOTATOR_SYSTEM)})
    for worked in examples(name):
        messages += [{"role": "user", "content": render(name, **worked["fields"])},
                     {"role": "assistant", "content": worked["answer"]}]
    messages.append({"role": "user", "content": render(name, **fields)})
    return messages
