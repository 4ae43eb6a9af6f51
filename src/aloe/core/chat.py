"""Chat messages, the one way a chat is written out as a transcript, and the sample-index
policy of every request.

Sample indices: the response cache keys a request by its model, messages, sampling and a
sample index, so that several draws of the same prompt are cached apart. Every stage derives
the index of a request from the conversation's sample (which simulated user of a persona this
is) and the attempt (a first ask, or a re-ask after an unreadable answer) with `draw`, so that
a resumed run asks exactly what the interrupted one asked and finds it in the cache.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}

REASKS = 8  # draws per sample: attempts 0..7 of one sample never collide with the next sample

_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)]*(?=\s|$)")


def draw(sample: int, attempt: int = 0) -> int:
    """The cache's sample index of attempt `attempt` (0: the first ask) of sample `sample`."""
    if not 0 <= attempt < REASKS:
        raise ValueError(f"attempt must be in 0..{REASKS - 1}, got {attempt}")
    return sample * REASKS + attempt


def seeded(seed: int, *parts: object) -> random.Random:
    """A random generator fixed by the run's seed and a name (which conversation, which turn,
    what for): the same on every rerun, whatever order concurrent work happens to run in."""
    return random.Random(":".join(map(str, (seed, *parts))))


def transcript(history: Sequence[Message], *, user_label: str = "User",
               assistant_label: str = "Assistant") -> str:
    """The chat as a plain transcript, one "Speaker: text" line per message.

    Annotators (the inducer, the judges) read it as "User" and "Assistant"; the simulated user
    reads its own lines as "You".
    """
    labels = {"user": user_label}
    return "\n".join(f"{labels.get(m['role'], assistant_label)}: {m['content'].strip()}"
                     for m in history)


def trim_unfinished(text: str, finish_reason: str | None) -> str:
    """A reply cut off by max_tokens, trimmed back to its last complete sentence.

    Left as is when it was not cut off, or when no sentence ends in it at all (then the cut
    text is all there is).
    """
    if finish_reason != "length":
        return text
    ends = list(_SENTENCE_END.finditer(text))
    return text[:ends[-1].end()].strip() if ends else text
