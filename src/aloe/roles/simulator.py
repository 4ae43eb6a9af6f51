"""The user simulator: an LLM role-plays a persona and writes the next user message.

Shared by stage 2 (training conversations) and stage 5 (the benchmark), so that the users the
policy is trained on and the users it is measured against behave the same way.

Two prompt styles (`conversations.prompt_style`, `evaluation.prompt_style`):

- workbook: the simulator sees the chat as one transcript inside a single request (its
  instructions last, right before it writes), rather than a role-swapped chat: small local
  models follow that far more reliably, and every OpenAI-compatible backend accepts it.
- reference (the released protocol): a role-swapped chat. The role-play instruction is its
  first user message, its own earlier messages are its assistant turns, and each reply it got
  is a user turn, followed in stage 2 by a request to answer within three sentences
  (`length_request`; the released evaluation feeds replies back without it).
- rlpa (stage 5 under `evaluation.protocol: rlpa`): the workbook's structure with RLPA's
  instructions (a new acquaintance who gives away one detail at a time, reserved at first).

A preference shift (`evaluation.preference_shift`) gives the simulator the changed persona and
a note that something about it has changed (`shift_note`), in its instructions.
"""

from __future__ import annotations

import re
from typing import Any

from aloe.core.chat import Message, draw, transcript, trim_unfinished
from aloe.prompts import render

SIMULATOR_ATTEMPTS = 3  # a reply that is empty once cleaned is drawn again, this many times in all

_SPEAKER = r"(?:user|you|me|human|assistant|ai|bot|friend|person|persona|message)"
_LABEL = re.compile(  # "User:", "**You:**", "The assistant:", "Person 1:"
    rf"^\s*(?:\*\*)?\s*(?:the\s+)?{_SPEAKER}\s*(?:\d+)?\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*",
    re.IGNORECASE)
_NEXT_SPEAKER = re.compile(
    r"\n\s*(?:\*\*)?\s*(?:the\s+)?(?:assistant|ai|bot|system)\s*(?:\*\*)?\s*:", re.IGNORECASE)
_ASTERISKS = re.compile(r"\*{1,2}[^*\n]{1,80}?\*{1,2}")
_BRACKETS = re.compile(r"\[[^\]\n]{1,80}\]")
_PAREN_ACTION = re.compile(r"\((?:[a-z]+\s?){1,3}\)")  # (laughs), (sighs deeply)
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"


def clean_user_message(text: str) -> str:
    """A simulator reply as a plain user message: no speaker labels, stage directions, quotes.

    Keeps only the user's own turn: when the model goes on to write the assistant's reply too,
    everything from that label on is dropped.
    """
    text = text.strip()
    cut = _NEXT_SPEAKER.search("\n" + text)
    if cut:
        text = ("\n" + text)[:cut.start()].strip()
    previous = None
    while previous != text:  # labels and quotes can nest: '"User: "hi""'
        previous = text
        text = _LABEL.sub("", text, count=1).strip()
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1].strip()
    text = _ASTERISKS.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _PAREN_ACTION.sub(" ", text)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" +([,.!?;:])", r"\1", text)
    text = "\n".join(line.strip() for line in text.splitlines() if line.strip())
    return text.strip().strip(_QUOTES).strip()


SIMULATOR_TEMPLATES = {"workbook": "user_simulator", "rlpa": "user_simulator_rlpa"}


def shift_note(change: str) -> str:
    """The note that tells the simulated user its persona has changed (`change`: what is true
    of it now)."""
    return render("user_simulator_shift", change=change)


def simulator_messages(persona: dict[str, Any], history: list[Message], *,
                       style: str = "workbook", length_request: bool = True,
                       note: str | None = None) -> list[Message]:
    """The request that asks for the persona's next message after `history` (see the module
    docstring for the styles); `note` (a preference shift's) follows the instructions."""
    if style == "reference":
        messages = roleplay_messages(persona, history, length_request=length_request)
        if note:
            messages[0] = {"role": "user", "content": messages[0]["content"] + "\n\n" + note}
        return messages
    system = render(SIMULATOR_TEMPLATES[style], profile=persona["profile"],
                    personality=persona["personality"])
    if note:
        system += "\n\n" + note
    turn = (render("user_simulator_turn", transcript=transcript(history, user_label="You"))
            if history else render("user_simulator_start"))
    return [{"role": "system", "content": system}, {"role": "user", "content": turn}]


def roleplay_messages(persona: dict[str, Any], history: list[Message], *,
                      length_request: bool = True) -> list[Message]:
    """The released structure: the instruction, then the chat with the roles swapped (the
    persona's messages are the assistant's turns, the replies it got are the user's)."""
    messages = [{"role": "user", "content": render("user_roleplay", profile=persona["profile"],
                                                   personality=persona["personality"])}]
    for message in history:
        if message["role"] == "user":  # what the persona said
            messages.append({"role": "assistant", "content": message["content"]})
        else:  # a reply it got, fed back to it
            content = (render("user_roleplay_turn", reply=message["content"]) if length_request
                       else message["content"])
            messages.append({"role": "user", "content": content})
    return messages


async def simulate_user(llm: Any, persona: dict[str, Any], history: list[Message], *,
                        sample: int = 0, style: str = "workbook",
                        length_request: bool = True, note: str | None = None) -> str:
    """The persona's next user message after `history` (the chat from the assistant's side).

    `persona` is a persona record (`profile`, `personality`, ...). `sample` tells apart several
    simulated users of the same persona (each is cached on its own). A reply that is empty once
    stage directions and labels are stripped is drawn again; if every draw is empty, the last
    raw reply, stripped, is returned rather than nothing. Raises `LLMError` when the backend
    fails for good.
    """
    messages = simulator_messages(persona, history, style=style, length_request=length_request,
                                  note=note)
    raw = ""
    for attempt in range(SIMULATOR_ATTEMPTS):
        completion = await llm.chat("user", messages, sample=draw(sample, attempt))
        raw = completion.text
        message = clean_user_message(trim_unfinished(raw, completion.finish_reason))
        if message:
            return message
    return raw.strip()
