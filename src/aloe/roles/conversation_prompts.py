"""How stage 2 asks its inducer and its assistant, in both prompt styles
(`conversations.prompt_style`).

Shared by the stage (`aloe.stages.conversations`) and by `aloe plan`, which counts the very same
requests. The user simulator's requests are in `aloe.roles.simulator`, the judge's in
`aloe.roles.judges`.

- workbook: each role gets a system message; the inducer reads the chat as a transcript after
  one worked example (an unreadable answer is asked again in the same chat); the assistant
  gets the inferred persona as a hint in its system message, then the chat along the branch
  that continued.
- reference (the released message structure): no system message; the inducer gets two worked
  examples and the transcript with A and B as speakers (an unreadable answer is drawn again;
  then the conversation is dropped); each assistant request carries, in the user's own turn,
  the hint (the inducer's answer) and a request for a short human-like reply, and earlier turns
  keep theirs.
"""

from __future__ import annotations

from typing import Any

from aloe.core.chat import Message, transcript
from aloe.prompts import few_shot, render

NONE = "none"
INDUCER_REASK = {"workbook": "induce_persona_reask", "reference": None}  # reference: redraw


def inducer_messages(persona: dict[str, Any], history: list[Message],
                     style: str = "workbook") -> list[Message]:
    """The inducer's request: what has the user revealed of this persona so far?"""
    if style == "reference":
        return few_shot("induce_persona_reference", system=False, profile=persona["profile"],
                        personality=persona["personality"],
                        transcript=transcript(history, user_label="A", assistant_label="B"))
    return few_shot("induce_persona", profile=persona["profile"],
                    personality=persona["personality"], transcript=transcript(history))


def reply_messages(turns: list[dict[str, Any]], user: str, inferred: dict[str, Any] | None,
                   style: str = "workbook") -> list[Message]:
    """The assistant's request for its reply to `user` after the earlier `turns`; with the
    inferred persona as a hint when `inferred` is given."""
    if style == "reference":
        return reference_reply_messages(turns, user, inferred)
    return workbook_reply_messages(turns, user, inferred)


def workbook_reply_messages(turns: list[dict[str, Any]], user: str,
                            inferred: dict[str, Any] | None) -> list[Message]:
    """A system message (with the inferred persona as a hint, or without), then the chat along
    the continued branch and the user's message."""
    if inferred is None:
        system = render("assistant_plain")
    else:
        system = render("assistant_hinted", profile=inferred.get("profile") or NONE,
                        personality=inferred.get("personality") or NONE)
    return [{"role": "system", "content": system}, *continued_chat(turns),
            {"role": "user", "content": user}]


def reference_reply_messages(turns: list[dict[str, Any]], user: str,
                             inferred: dict[str, Any] | None) -> list[Message]:
    """The released structure: no system message; each user turn carries, after the user's
    words, the hint (the inducer's answer of that turn; hinted branch only) and the request
    for a short human-like reply; the continued replies in between."""
    hinted = inferred is not None

    def turn_message(words: str, answer: dict[str, Any]) -> Message:
        parts = [words]
        if hinted:
            parts.append(render("assistant_hint_reference", inferred=answer.get("raw") or NONE))
        parts.append(render("assistant_length_reference"))
        return {"role": "user", "content": "\n".join(parts)}

    messages: list[Message] = []
    for turn in turns:
        messages += [turn_message(turn["user"], turn["inferred"]),
                     {"role": "assistant", "content": turn[turn["continued_with"]]}]
    messages.append(turn_message(user, inferred or {}))
    return messages


def continued_chat(turns: list[dict[str, Any]]) -> list[Message]:
    """The chat along the branch that continued: each turn's user message and continued reply."""
    chat: list[Message] = []
    for turn in turns:
        chat += [{"role": "user", "content": turn["user"]},
                 {"role": "assistant", "content": turn[turn["continued_with"]]}]
    return chat
