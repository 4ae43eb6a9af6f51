"""Text pools and the official ALOE files: reading them, and crossing profiles with
personalities into personas.

A text pool is a file (or URL) of one JSON string per line: our seeds, a pool stage 1 wrote, or
the official ALOE files (`profile.jsonl`, `personality.jsonl`, `profile_eval.jsonl`,
`personality_eval.jsonl`). Stage 1 grows its pools from them; stage 5 reads the official
benchmark from them (`load_aloe_benchmark`: 20 profiles x the first 5 personalities = 100).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib import resources
from typing import Any

from aloe.core.config import is_url, resolve_path
from aloe.core.records import DataError

KINDS = ("profile", "personality")
ALOE_BENCHMARK_PERSONALITIES = 5  # the official benchmark: every profile x the first 5
# The longest text a generated pool item may have: a longer one is a run-on reply (a small
# model looping), not one persona. Stage 1 drops it; `aloe plan` bounds persona texts by it.
MAX_ITEM_CHARS = 2000


# ==========================================================================================
# Text pools: one JSON string per line (the ALOE files, our seeds)
# ==========================================================================================
def read_text_pool(source: str | os.PathLike[str]) -> list[str]:
    """Every text of a file (or URL) holding one JSON string per line.

    Real files are not perfectly clean: two strings run together on one line are both kept,
    blank lines and a missing final newline are fine, and a line holding a JSON object with a
    "text" field (a pool written by this stage) gives that text. Anything else raises
    DataError naming the file and line: a record is never silently dropped.
    """
    name = str(source)
    if is_url(name):
        content = _fetch(name)
    else:
        path = resolve_path(source)
        try:
            content = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error})") from None
        name = str(path)
    texts: list[str] = []
    for number, line in enumerate(content.splitlines(), start=1):
        texts.extend(_decode_line(line, f"{name}:{number}"))
    return texts


def _fetch(url: str) -> str:
    import httpx

    try:
        response = httpx.get(url, timeout=60.0, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise DataError(f"{url}: could not fetch it ({type(error).__name__}: {error})") from None
    return response.text.removeprefix("\ufeff")


_DECODER = json.JSONDecoder()


def _decode_line(line: str, where: str) -> list[str]:
    """The JSON strings on one line: usually one, sometimes several run together."""
    texts, position, end = [], 0, len(line)
    while True:
        while position < end and line[position].isspace():
            position += 1
        if position == end:
            return texts
        try:
            value, position = _DECODER.raw_decode(line, position)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: not a JSON string at column {position + 1} "
                            f"({error.msg})") from None
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            value = value["text"]
        if not isinstance(value, str):
            raise DataError(f"{where}: expected a JSON string, got {type(value).__name__}")
        if value.strip():
            texts.append(value.strip())


def builtin_seeds(kind: str) -> list[str]:
    """Our own 20 hand-written seed profiles or personalities (package data)."""
    _check_kind(kind)
    resource = resources.files("aloe.stages").joinpath(f"seeds/{kind_plural(kind)}.jsonl")
    texts = []
    for number, line in enumerate(resource.read_text(encoding="utf-8").splitlines(), start=1):
        texts.extend(_decode_line(line, f"aloe/stages/seeds/{kind_plural(kind)}.jsonl:{number}"))
    return texts


def kind_plural(kind: str) -> str:
    return {"profile": "profiles", "personality": "personalities"}[kind]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")



# ==========================================================================================
# Personas: a profile with a personality, and the benchmark cross
# ==========================================================================================
def persona_record(persona_id: str, profile: dict[str, Any],
                   personality: dict[str, Any]) -> dict[str, Any]:
    return {"id": persona_id, "profile_id": profile["id"], "personality_id": personality["id"],
            "profile": profile["text"], "personality": personality["text"]}



def cross_benchmark(profiles: Sequence[dict[str, Any]], personalities: Sequence[dict[str, Any]],
                    m: int, prefix: str = "bench") -> list[dict[str, Any]]:
    """Every benchmark profile with each of the first `m` personalities, profile-major (ALOE)."""
    if m > len(personalities):
        raise ValueError(f"the benchmark needs {m} personalities, only {len(personalities)} given")
    chosen = list(personalities)[:m]
    width = max(3, len(str(len(profiles) * m)))
    return [persona_record(f"{prefix}-{i + 1:0{width}d}", profile, personality)
            for i, (profile, personality) in enumerate(
                (p, q) for p in profiles for q in chosen)]


def as_items(pool: str | os.PathLike[str] | Sequence[str], prefix: str,
             source: str = "aloe") -> list[dict[str, Any]]:
    """A pool's texts as items `{"id": PREFIX-NN, "text", "source"}`, numbered in order."""
    texts = read_text_pool(pool) if isinstance(pool, (str, os.PathLike)) else list(pool)
    width = max(2, len(str(len(texts))))
    return [{"id": f"{prefix}-{i + 1:0{width}d}", "text": text, "source": source}
            for i, text in enumerate(texts)]


def load_aloe_benchmark(profiles: str | os.PathLike[str] | Sequence[str],
                        personalities: str | os.PathLike[str] | Sequence[str],
                        m: int = ALOE_BENCHMARK_PERSONALITIES) -> list[dict[str, Any]]:
    """The ALOE benchmark: every benchmark profile with each of the first m personalities.

    `profiles` and `personalities` are paths or URLs of the official files (profile_eval.jsonl,
    personality_eval.jsonl) or lists of texts. ALOE: 20 x 5 = 100 personas, in its order
    (profile-major, as its evaluation script loops).
    """
    return cross_benchmark(as_items(profiles, "aloe-eval-profile"),
                           as_items(personalities, "aloe-eval-personality"), m,
                           prefix="aloe-eval")

