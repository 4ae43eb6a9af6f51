"""Growing one persona pool, round by round: ask the generator, parse, screen for novelty.

Each round shows the generator `sample_k` random pool items and asks for `generate_n` new ones,
`calls_per_round` times concurrently; the replies are parsed (`parse_reply`) and screened
(`NoveltyFilter`). Growth stops at the target size, at saturation (the admission rate over the
last rounds falls below a floor) or after `max_rounds`. Every round is appended to the run's
files as it is decided (items, every screened candidate, the round's log line), so a rerun
restores the pool as the last logged round left it and the response cache replays its calls.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aloe.core.config import Params, PersonasConfig
from aloe.core.errors import check_lost_items
from aloe.core.records import DataError, append_records, read_records, write_records
from aloe.core.schemas import candidate_check, pool_item_check, round_check
from aloe.llm import LLMError, MissingKeyError
from aloe.stages.personas.novelty import NoveltyFilter
from aloe.stages.personas.parse import parse_reply
from aloe.stages.pools import kind_plural

STOP_REASONS = ("target", "saturation", "max_rounds")
Hook = Callable[[str, dict[str, Any]], None]


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


def _raise_lost_calls(pool: str, round_no: int, replies: Sequence[Any]) -> None:
    """A round is decided from all its calls or not at all (a resumed run must ask exactly
    what the interrupted one asked): any call that failed for good fails the stage. The cache
    keeps the calls that were answered, so a rerun sends only the failed ones."""
    failures = [(i, r) for i, r in enumerate(replies) if isinstance(r, BaseException)]
    for _, error in failures:  # a bug, an interrupt or a missing key is raised as it is
        if not isinstance(error, LLMError) or isinstance(error, MissingKeyError):
            raise error
    check_lost_items(f"generator calls of round {round_no} of pool '{pool}'",
                     [(f"call {i}", str(error)) for i, error in failures], len(replies))


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
        self.rounds_file = params.layout.persona_rounds
        self.candidates_file = params.layout.persona_candidates
        self.items: list[dict[str, Any]] = []
        self.rounds: list[dict[str, Any]] = []
        self.schema = pool_item_check()  # the pool file's, as its writer holds it
        self.labels = list(spec.reference)  # the id of each filter row, for the logs

    # -- resuming ----------------------------------------------------------------------------
    def restore(self, logged_rounds: list[dict[str, Any]]) -> None:
        """Bring back the pool as the logged rounds left it; drop a half-finished round."""
        spec = self.spec
        rounds = [r for r in logged_rounds if r["pool"] == spec.name]
        if [r["round"] for r in rounds] != list(range(len(rounds))):
            raise DataError(f"{self.rounds_file}: the rounds of pool '{spec.name}' are not "
                            f"0..{len(rounds) - 1}; delete the run folder to start over")
        found = read_records(spec.file, check=pool_item_check())
        initial_texts = [item["text"] for item in spec.initial]
        head = [r.get("text") for r in found[:len(spec.initial)]]
        if head != initial_texts[:len(head)]:  # a file cut short still starts with the seeds
            raise DataError(f"{spec.file}: this pool was started from other seeds or imports "
                            "than the parameters give; use another run name or delete the file")
        if not rounds:  # a fresh pool, or its first round was interrupted: start from seeds
            found = list(spec.initial)
            write_records(spec.file, found, check=pool_item_check())
        elif len(found) < rounds[-1]["pool_size"]:
            raise DataError(f"{spec.file}: holds {len(found)} items but {self.rounds_file} "
                            f"records {rounds[-1]['pool_size']} after round "
                            f"{rounds[-1]['round']}: the file was cut short (a copy or a "
                            "write that did not finish, or an edit); restore it, or delete the "
                            "run folder to start over")
        elif len(found) > rounds[-1]["pool_size"]:  # a round interrupted before its log line
            found = found[:rounds[-1]["pool_size"]]
            write_records(spec.file, found, check=pool_item_check())
        self.items, self.rounds = found, rounds
        self.schema = pool_item_check()  # the writer's: it has seen every item of the pool
        for item in found:
            self.schema(item)
        self.filter.extend([item["text"] for item in found])
        self.labels.extend(item["id"] for item in found)

    # -- growing -----------------------------------------------------------------------------
    @property
    def stop_reason(self) -> str | None:
        if not self.spec.grow:
            return "target"
        return stop_reason(len(self.items), self.spec.target, self.rounds, self.config)

    async def grow(self, progress: Any = None,
                   on_round: Callable[[], None] | None = None) -> str:
        """Run rounds until a stopping rule fires; returns which one. `progress` is a tqdm
        bar; `on_round` is called after each round (the stage's live progress)."""
        while (reason := self.stop_reason) is None:
            await self.run_round(len(self.rounds))
            if progress is not None:
                progress.update(self.rounds[-1]["admitted"])
                progress.set_postfix(round=len(self.rounds),
                                     rate=f"{self.rounds[-1]['admission_rate']:.2f}")
            if on_round is not None:
                on_round()
        return reason

    async def run_round(self, round_no: int) -> None:
        spec, config = self.spec, self.config
        requests = generation_requests(spec, [item["text"] for item in self.items], round_no,
                                       config, self.params.run.seed)
        replies = await asyncio.gather(*(self.llm.chat("generator", messages, sample=sample)
                                         for messages, sample in requests),
                                       return_exceptions=True)
        _raise_lost_calls(spec.name, round_no, replies)
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
        append_records(self.candidates_file, log, check=candidate_check())
        append_records(spec.file, admitted, check=self.schema)
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
        append_records(self.rounds_file, [record], check=round_check())
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
