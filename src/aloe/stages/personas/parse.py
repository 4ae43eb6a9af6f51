"""Reading the persona generator's replies: the items of a list, whatever its layout."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aloe.stages.pools import MAX_ITEM_CHARS

_FENCE = re.compile(r"^\s*```\w*\s*$")
_MARKER = re.compile(  # "1." "2)" "(a)" "-" "*" "•" "#": a list marker that starts an item
    r"^\s*(?:\(?\d{1,3}[.):]|\(?[a-zA-Z][.)]|[-*+\u2022\u00b7\u2013\u2014]|#{1,6})\s+")
_LABEL = re.compile(
    r"^\W*(?:(?:user|new|example)\s+)?(?:profile|personality|persona|description)"
    r"(?:\s+(?:description|traits))?\s*#?\s*\d*\s*\**\s*[:.\-\u2013\u2014]+\s*", re.IGNORECASE)
_PREAMBLE = re.compile(
    r"^(?:here\s+(?:are|is)|sure|certainly|of course|okay|ok\b|i hope|i have|note\b|these\b|"
    r"below\b|the following|let me|feel free)", re.IGNORECASE)
_INLINE_NUMBER = re.compile(r"(?<=[.!?\"\u201d])\s+(?=\(?\d{1,3}[.)]\s)")
# A new profile starting mid-paragraph: "... every spring. He is a 63-year-old ..."
_INLINE_PROFILE = re.compile(
    r"(?<=[.!?])\s+(?=(?:He|She|They)(?: is|'s| are) an? \d{1,3}-year-old\b)")
_END = ('.', '!', '?', '"', "'", '\u201d', ')')
MIN_WORDS = 6
_PERSON = re.compile(r"\b(?:he|she|they|his|her|their|him|them)\b", re.IGNORECASE)


@dataclass
class ParsedReply:
    items: list[str]
    dropped: list[str]  # fragments, preambles, a cut-off last item: kept for the log


def parse_reply(text: str, finish_reason: str | None = None) -> ParsedReply:
    """The items of a generator reply, whatever its layout.

    Numbered, bulleted, one per line or separated by blank lines, with or without a preamble
    ("Here are 5 new profiles:"), labels ("Profile 3:") or markdown bold. A last item cut off
    by the token limit keeps its complete sentences. Dropped (and returned as such): fragments
    of fewer than MIN_WORDS words, run-ons, preambles, and text about no person (no he, she,
    they...: a small model's comments on its own task).
    """
    blocks: list[list[str]] = []
    current: list[str] | None = None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _INLINE_PROFILE.sub("\n", _INLINE_NUMBER.sub("\n", text))
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or _FENCE.match(raw):
            current = None
            continue
        marker = _MARKER.match(line)
        if marker:
            current = [line[marker.end():]]
            blocks.append(current)
        elif current is not None and (raw[:1].isspace() or line[:1].islower()
                                      or not current[-1].rstrip("*").endswith(_END)):
            current.append(line)  # a continuation of the item above
        else:
            current = [line]
            blocks.append(current)
    items, dropped = [], []
    for index, block in enumerate(blocks):
        item = _clean(" ".join(block))
        if _PREAMBLE.match(item) and ":" in item:  # "Here are five: She is ..." on one line
            item = _clean(item.split(":", 1)[1])
        if index == len(blocks) - 1 and finish_reason == "length" and not item.endswith(_END):
            item, tail = _last_sentence_end(item)  # cut off by the token limit: keep whole
            dropped.append(tail)  # sentences only
        if (len(item.split()) < MIN_WORDS or len(item) > MAX_ITEM_CHARS or item.endswith(":")
                or _PREAMBLE.match(item) or not _PERSON.search(item)):
            dropped.append(item)
        elif item not in items:
            items.append(item)
    return ParsedReply(items, [d for d in dropped if d])


def _last_sentence_end(item: str) -> tuple[str, str]:
    """Split an item cut off mid-sentence into its complete sentences and the broken tail."""
    ends = [m.end() for m in re.finditer(r"[.!?][\"\u201d')]?(?=\s|$)", item)]
    if not ends:
        return "", item
    return item[:ends[-1]].strip(), item[ends[-1]:].strip()


def _clean(item: str) -> str:
    item = item.replace("**", "").replace("__", "")
    item = _LABEL.sub("", item)
    item = " ".join(item.split())
    if len(item) > 1 and item[0] in "\"'\u201c" and item[-1] in "\"'\u201d":
        item = item[1:-1].strip()
    return item
