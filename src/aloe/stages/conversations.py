"""Stage 2: tree-structured multi-turn preference conversations (the paper's training data).

At every turn of a conversation with a simulated persona:

1. the user simulator writes the persona's next message (`aloe.roles.simulator`);
2. the inducer writes down, conservatively, what the user has revealed so far;
3. the assistant answers twice: once with the inferred persona as a hint (`hinted`), once
   without it (`plain`); the two replies are the turn's two branches;
4. the judge, who sees the full persona, decides which reply the user would prefer
   (`conversations.judge_rule`: both orders and agreement, one vote in a seeded random order,
   or token log-probabilities over both orders);
5. one of the two replies, chosen at random with the run's seed, continues the conversation.

Conversations run concurrently (turns within one are sequential); each is appended to
`conversations.jsonl` when complete. A rerun skips what is written and, because every request
is deterministic (seeded choices, fixed sample indices), finds everything an interrupted run
had already received in the response cache.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from aloe.core import progress
from aloe.core.chat import Message, draw, seeded, trim_unfinished
from aloe.core.config import Params
from aloe.core.errors import AloeError, check_lost_items
from aloe.core.records import append_record, read_records, write_json
from aloe.core.schemas import conversation_check, persona_check
from aloe.llm import LLM, Completion, LLMError, MissingKeyError, open_llm
from aloe.roles.conversation_prompts import (
    INDUCER_REASK,
    NONE,
    continued_chat,
    inducer_messages,
    reply_messages,
)
from aloe.roles.judges import (
    BRANCHES,
    HINTED,
    INCONSISTENT,
    PLAIN,
    UNPARSEABLE,
    PreferenceJudge,
    ask_and_read,
    preference_messages,
    preference_reask,
    votes_per_turn,
)
from aloe.roles.simulator import SIMULATOR_ATTEMPTS, simulate_user, simulator_messages
from aloe.stages.plan_lengths import Lengths
from aloe.stages.planned import PlannedRequest, at_turn, persona_slots, reasked

STAGE = "conversations"


class ConversationsError(AloeError):
    """The stage cannot start (no personas); the message says what is missing and where."""


# ------------------------------------------------------------------------------------------
# Files and the plan
# ------------------------------------------------------------------------------------------
def load_personas(params: Params) -> list[dict[str, Any]]:
    """Stage 1's personas, checked for the fields a conversation needs."""
    path = params.layout.personas
    personas = read_records(path, check=persona_check())
    if not personas:
        raise ConversationsError(f"{path}: no personas; run stage 1 (01_personas) first")
    return personas


def conversation_id(index: int) -> str:
    return f"conv-{index:05d}"


def plan_conversations(personas: Sequence[dict[str, Any]], n: int,
                       seed: int) -> list[dict[str, Any]]:
    """The persona of each of `n` conversations: every profile used, as evenly as n allows.

    Profiles are visited round-robin in a seeded order, so per-profile counts differ by at most
    one and a prefix of the plan already spreads over as many profiles as it can; each
    profile's personas are used in turn, in a seeded order. Deterministic for a seed. (Taking
    persona i for conversation i would leave the last profiles out whenever n is smaller than
    the number of personas: 3,000 conversations over 3,310 personas listed profile by profile
    never meet the last 31 profiles.)
    """
    by_profile: dict[str, list[dict[str, Any]]] = {}
    for persona in personas:
        by_profile.setdefault(str(persona.get("profile_id") or persona["id"]), []).append(persona)
    rng = random.Random(f"{seed}/conversation-plan")
    order = list(by_profile)
    rng.shuffle(order)
    queues = {profile: rng.sample(members, len(members))
              for profile, members in by_profile.items()}
    plan: list[dict[str, Any]] = []
    for rank in range(-(-n // len(order)) if order else 0):  # passes over the profiles
        for profile in order[: n - len(plan)]:
            queue = queues[profile]
            plan.append(queue[rank % len(queue)])
    return plan


def persona_text(persona: dict[str, Any]) -> tuple[str, str]:
    """What of a persona the requests carry (every role's prompt is rendered from these two
    texts, never from its ids): the response cache tells two personas apart by this alone."""
    return str(persona["profile"]), str(persona["personality"])


def plan(params: Params, personas: list[dict[str, Any]], extra: int = 0) -> list[dict[str, Any]]:
    """The conversations to have: conversation i with the persona `plan_conversations` gives
    it, `extra` more than planned to replace dropped ones (`replacements`); `sample` counts
    earlier conversations with the same persona text, so that meeting a persona again starts
    a different conversation (a different cached draw). Counted by text, not id: random
    pairing gives the same profile and personality new ids, and two conversations of one text
    with the same sample would send the same requests and replay each other from the cache.
    The plan of n + extra conversations begins with the plan of n."""
    met: Counter[tuple[str, str]] = Counter()
    items = []
    chosen = plan_conversations(personas, params.conversations.n_conversations + extra,
                                params.run.seed)
    for index, persona in enumerate(chosen):
        items.append({"index": index, "id": conversation_id(index), "persona": persona,
                      "sample": met[persona_text(persona)]})
        met[persona_text(persona)] += 1
    return items


def load_conversations(params: Params,
                       check: Callable[[dict[str, Any]], str | None] | None = None
                       ) -> list[dict[str, Any]]:
    """The written conversation trees, by index: every reader (the stage, its exports, the
    report) reads them here, so that all count the same. Each conversation is written once; a
    line that repeats an id (a hand edit, a copied file) is refused, naming both lines.
    `check`: the file's schema (`schemas.conversation_check()`) when the caller goes on to
    append with it, so that it has seen what is written."""
    return sorted(read_records(params.layout.conversations,
                               check=check or conversation_check()),
                  key=lambda r: (r.get("index", 0), r["id"]))


# ------------------------------------------------------------------------------------------
# Parsing model replies
# ------------------------------------------------------------------------------------------
_FIELD = re.compile(
    r"^[\s*#>\-\d.]*(profile|personalit(?:y|ies))\b[\s*_]*(?:\([^)]*\))?[\s*_]*[:\-]\s*(.*)$",
    re.IGNORECASE)
_NONE_WORDS = re.compile(r"^(?:none|nothing|n/?a|unknown|-+|(?:not(?:hing)?|no)(?:\s+\w+)?\s+"
                         r"(?:yet\s+)?(?:revealed|mentioned|shared|known|given|info\w*)"
                         r"(?:\s+yet)?)\W*$", re.IGNORECASE)

_OTHER_LABEL = re.compile(r"^[\s*#>\-]*[A-Za-z][\w ]{0,24}[*_]*:")


def _field_value(text: str) -> str:
    value = " ".join(text.split()).strip(" *_<>\"'")
    return NONE if not value or _NONE_WORDS.match(value) else value


def parse_inferred(text: str) -> dict[str, str] | None:
    """The inducer's `Profile: ... / Personality: ...` answer (or, as released, `Profile: ... /
    Personalities: ...`), or None when it has neither.

    Tolerates markdown (bold labels, bullets), values running over several lines (up to a
    blank line or another label such as "User:"), labels in any case, "none"-like values, and
    one missing field (read as "none").
    """
    fields: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _FIELD.match(line)
        if match:
            current = "profile" if match.group(1).lower() == "profile" else "personality"
            if current in fields:  # a second answer block: keep the first
                current = None
                continue
            fields[current] = [match.group(2)]
        elif not line.strip() or _OTHER_LABEL.match(line):  # a blank line or "User: ..." ends it
            current = None
        elif current:
            fields[current].append(line)
    if not fields:
        return None
    return {name: _field_value(" ".join(fields.get(name, [])))
            for name in ("profile", "personality")}


# ------------------------------------------------------------------------------------------
# One conversation
# ------------------------------------------------------------------------------------------
class ConversationMaker:
    """Writes conversation trees with the roles of one LLM session.

    `conversations.prompt_style` decides how each role is asked (see `aloe.roles.simulator` for the
    user and `aloe.roles.judges` for the judge): workbook prompts, or the released message structure
    (`reference`): no system message; the inducer given two worked examples and, when its
    answer stays unreadable after one more draw, the conversation dropped; each assistant reply
    asked for in the user's turn itself, the inferred persona as a hint and a request for a
    short human-like reply appended, earlier hints and requests kept in its history.
    """

    def __init__(self, llm: LLM, params: Params, on_request: Callable[[], None] | None = None):
        self.llm = llm
        self.seed = params.run.seed
        self.turns = params.conversations.turns
        self.rule = params.conversations.judge_rule
        self.style = params.conversations.prompt_style
        self.roles = params.roles
        self.on_request = on_request or (lambda: None)
        self.judge = PreferenceJudge(self._chat, self.rule, self.seed, self.style,
                                     reading=params.conversations.judge_reading)

    async def _chat(self, role: str, messages: list[Message], *, sample: int = 0,
                    **kwargs: Any) -> Completion:
        completion = await self.llm.chat(role, messages, sample=sample, **kwargs)
        self.on_request()
        return completion

    # -- the roles ---------------------------------------------------------------------------
    async def induce(self, persona: dict[str, Any], history: list[Message],
                     sample: int) -> dict[str, Any]:
        """What the user has revealed so far; asked once more if the answer has no format
        (workbook: a re-ask in the same chat; reference: the same request drawn again)."""
        reading = await ask_and_read(self._chat, "inducer",
                                     inducer_messages(persona, history, self.style),
                                     parse_inferred, INDUCER_REASK[self.style],
                                     redraw=self.style == "reference", sample=sample)
        raw, asked = reading.texts[-1], reading.attempts
        if reading.value is None:
            return {"profile": None, "personality": None, "parsed": False, "asked": asked,
                    "raw": raw}
        return {**reading.value, "parsed": True, "asked": asked, "raw": raw}

    async def reply(self, turns: list[dict[str, Any]], user: str,
                    inferred: dict[str, Any] | None, sample: int) -> str:
        """The assistant's reply to `user` after the earlier `turns`; with the inferred
        persona as a hint when `inferred` is given."""
        messages = reply_messages(turns, user, inferred, self.style)
        completion = await self._chat("assistant", messages, sample=draw(sample, 0))
        return trim_unfinished(completion.text.strip(), completion.finish_reason)

    # -- the tree ----------------------------------------------------------------------------
    async def conversation(self, item: dict[str, Any]) -> dict[str, Any]:
        """One whole conversation tree; raises LLMError when a request fails for good.

        Under the reference prompts a conversation whose inducer answer stays unreadable is
        dropped, as released: it is written with `dropped` (the reason) and the turns before,
        so that a rerun does not ask again, and left out of the exports."""
        conv_id, persona, sample = item["id"], item["persona"], item["sample"]
        history: list[Message] = []
        turns: list[dict[str, Any]] = []
        record = {"id": conv_id, "index": item["index"], "persona": persona, "turns": turns,
                  "judge_rule": self.rule, "prompt_style": self.style, "seed": self.seed,
                  "models": self.models()}
        for turn in range(1, self.turns + 1):
            user = await simulate_user(self.llm, persona, history, sample=sample,
                                       style=self.style)
            self.on_request()
            history.append({"role": "user", "content": user})
            inferred = await self.induce(persona, history, sample)
            if self.style == "reference" and not inferred["parsed"]:
                record["dropped"] = (f"turn {turn}: the inducer's answer could not be read "
                                     f"(asked {inferred['asked']} times)")
                return record
            hinted, plain = await asyncio.gather(self.reply(turns, user, inferred, sample),
                                                 self.reply(turns, user, None, sample))
            replies = {HINTED: hinted, PLAIN: plain}
            verdict = await self.judge.verdict(conv_id, turn, persona, history, replies, sample)
            continued = seeded(self.seed, conv_id, turn, "continue").choice(BRANCHES)
            turns.append({"turn": turn, "user": user, "inferred": inferred, HINTED: hinted,
                          PLAIN: plain, "verdict": verdict, "continued_with": continued})
            history.append({"role": "assistant", "content": replies[continued]})
        return record

    def models(self) -> dict[str, dict[str, Any]]:
        return {role: {"model": getattr(self.roles, role).model,
                       "base_url": getattr(self.roles, role).base_url}
                for role in ("user", "inducer", "assistant", "judge")}


# ------------------------------------------------------------------------------------------
# The stage
# ------------------------------------------------------------------------------------------
@dataclass
class ConversationsSummary:
    """What stage 2 holds and what this call did; saved as conversations_summary.json."""

    configured: int
    judge_rule: str
    prompt_style: str
    conversations: int
    dropped: int  # conversations the released protocol drops (reference prompts)
    profiles_covered: int  # distinct profiles the written conversations talk with
    profiles_total: int  # distinct profiles among the personas
    turns: int
    verdicts: dict[str, int]
    decided_by_rule: dict[str, dict[str, int]]
    judge_votes: int
    judge_reasked: int
    judge_unparseable_votes: int
    inducer_reasked: int
    inducer_unparseable: int
    notes: dict[str, Any]
    found_done: int = 0
    written_now: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    cost_usd: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    def table(self) -> pd.DataFrame:
        """Conversations planned, found, written and failed; the requests it took."""
        return pd.Series({"configured": self.configured, "conversations": self.conversations,
                          "dropped": self.dropped,
                          "profiles covered": f"{self.profiles_covered} of {self.profiles_total}",
                          "found_done": self.found_done, "written_now": self.written_now,
                          "failed": self.failed, "turns": self.turns,
                          "requests": self.requests, "cache_hits": self.cache_hits,
                          "retries": self.retries, "cost_usd": self.cost_usd},
                         name="value").to_frame()

    def failures_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.failures, columns=["id", "reason"])

    def annotation_table(self) -> pd.DataFrame:
        """How often the judge and the inducer had to be asked again, or stayed unreadable."""
        return pd.Series({"judge votes": self.judge_votes,
                          "judge votes asked again": self.judge_reasked,
                          "judge votes unparseable": self.judge_unparseable_votes,
                          "inducer answers asked again": self.inducer_reasked,
                          "inducer answers unparseable": self.inducer_unparseable,
                          **{f"note: {k}": v for k, v in self.notes.items()}},
                         name="count").to_frame()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed}


async def _generate(llm: LLM, params: Params, todo: list[dict[str, Any]], done: int,
                    total: int, schema: Callable[[dict[str, Any]], str | None]
                    ) -> tuple[int, list[dict[str, str]], str | None]:
    """Run the pending conversations, `conversations.concurrency` at a time, each appended as
    soon as it completes.

    As many workers as the concurrency take the conversations in order, so the tasks (and the
    memory) do not grow with the number of conversations, and each worker writes its own
    conversation (on a thread: the others go on while it is fsynced) instead of queueing it
    for one writer that a busy event loop would leave behind. Each is written under the
    file's `schema` (which has seen the conversations already written): a tree its readers
    would refuse is never written (SchemaError)."""
    path = params.layout.conversations
    bar = tqdm(total=total, initial=done, desc="conversations", unit="conv", dynamic_ncols=True)
    live = progress.reporter(params.layout.progress, "conversations", total)
    shown = [0.0]

    def show(force: bool = False) -> None:  # at most twice a second: cheap even in Jupyter
        now = time.monotonic()
        if force or now - shown[0] >= 0.5:
            shown[0] = now
            usage = llm.ledger.totals()
            bar.set_postfix(requests=usage.requests, cache_hits=usage.cache_hits,
                            cost=f"${usage.cost_usd:.4f}")
            live.update(bar.n, [progress.count(usage.requests, "requests"),
                                progress.money(usage.cost_usd)], force=force)

    maker = ConversationMaker(llm, params, on_request=show)
    pending = iter(todo)  # shared by the workers: each conversation is taken once
    failures: list[dict[str, str]] = []
    written = 0

    async def worker() -> None:
        nonlocal written
        for item in pending:
            try:
                record = await maker.conversation(item)
            except MissingKeyError:
                raise
            except LLMError as error:
                failures.append({"id": item["id"], "reason": str(error)})
                continue
            await asyncio.to_thread(append_record, path, record, check=schema)
            written += 1
            bar.update(1)
            show()

    show(force=True)
    try:
        await _all(worker() for _ in range(min(params.conversations.concurrency, len(todo))))
    finally:
        show(force=True)
        bar.close()
    return written, failures, maker.judge.logprobs_rejected


async def _all(work: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run coroutines together; the first error cancels the others and is raised as it is
    (not wrapped in an ExceptionGroup, so that its one-line message reaches the user)."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in work:
                group.create_task(coroutine)
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None


def run_stage(params: Params) -> ConversationsSummary:
    """Generate the missing conversations of this run and return (and save) a summary.

    Conversations already in `conversations.jsonl` are skipped; those whose requests fail for
    good are not written but counted with their reason in the summary, and a rerun tries them
    again. When more than `conversations.max_failed_share` of them were lost, the stage fails
    (IncompleteStageError, exit 1) once everything else is written and summarised.
    """
    personas = load_personas(params)
    schema = conversation_check()  # the writer's: it sees what is written, then appends
    written = load_conversations(params, schema)
    items = plan(params, personas, replacements(params, written))
    _check_written(params, written, items)
    done_ids = {r["id"] for r in written}
    todo = [item for item in items if item["id"] not in done_ids]
    done = len(items) - len(todo)
    written_now, failures, rejected = 0, [], None
    with open_llm(params, STAGE) as llm:
        while todo:  # with replace_dropped, each round draws one for every newly dropped
            count, lost, rejected = llm.run(_generate(llm, params, todo, done, len(items),
                                                      schema))
            written_now, failures = written_now + count, failures + lost
            more = plan(params, personas, replacements(params, load_conversations(params)))
            todo, done, items = more[len(items):], len(items), more
        usage = llm.ledger.totals()
    summary = summarise(load_conversations(params), params, personas)
    summary.found_done, summary.written_now, summary.failures = (len(done_ids), written_now,
                                                                 failures)
    summary.requests, summary.cache_hits = usage.requests, usage.cache_hits
    summary.retries, summary.cost_usd = usage.retries, round(usage.cost_usd, 6)
    if rejected:
        summary.notes["logprobs_rejected"] = rejected
    write_json(params.layout.conversations_summary, summary.to_json())
    check_lost_items("conversations", [(f["id"], f["reason"]) for f in failures], len(items),
                     params.conversations.max_failed_share, "conversations.max_failed_share")
    return summary


def replacements(params: Params, written: Sequence[dict[str, Any]]) -> int:
    """How many conversations beyond `n_conversations` to draw: one for each dropped one with
    `conversations.replace_dropped` (as released, which writes until it has its 3,000), at
    most `n_conversations` more; none without it."""
    c = params.conversations
    if not c.replace_dropped:
        return 0
    return min(sum(bool(r.get("dropped")) for r in written), c.n_conversations)


def _check_written(params: Params, written: list[dict[str, Any]],
                   items: list[dict[str, Any]]) -> None:
    """The conversations already written must be the ones this plan asks for: the same number
    of turns, the same persona for the same id."""
    where = params.layout.conversations
    other = sorted({len(r["turns"]) for r in written if not r.get("dropped")}
                   - {params.conversations.turns})
    if other:
        raise ConversationsError(
            f"{where}: holds conversations of {other[0]} turns but conversations.turns is "
            f"{params.conversations.turns}; use another run.name")
    planned = {item["id"]: str(item["persona"]["id"]) for item in items}
    for record in written:
        wanted = planned.get(record["id"])
        if wanted is not None and str(record["persona"]["id"]) != wanted:
            raise ConversationsError(
                f"{where}: {record['id']} talks with {record['persona']['id']} but the plan "
                f"gives it {wanted} (the personas or run.seed changed); use another run.name")


def summarise(records: list[dict[str, Any]], params: Params,
              personas: Sequence[dict[str, Any]] = ()) -> ConversationsSummary:
    """Counts over written conversations: verdicts, turns each rule decided, unparseables,
    dropped conversations, and how many of the personas' profiles they cover."""
    def profile(persona: dict[str, Any]) -> str:
        return str(persona.get("profile_id") or persona["id"])

    turns = [t for r in records for t in r["turns"]]
    verdicts = Counter(t["verdict"]["preferred"] for t in turns)
    decided = Counter(t["verdict"]["rule"] for t in turns
                      if t["verdict"]["preferred"] in BRANCHES)
    asked_by_rule = Counter(t["verdict"]["rule"] for t in turns)
    notes = Counter(t["verdict"]["note"] for t in turns if t["verdict"].get("note"))
    votes = [v for t in turns for v in t["verdict"]["votes"]]
    return ConversationsSummary(
        configured=params.conversations.n_conversations,
        judge_rule=params.conversations.judge_rule,
        prompt_style=params.conversations.prompt_style,
        conversations=len(records),
        dropped=sum(bool(r.get("dropped")) for r in records),
        profiles_covered=len({profile(r["persona"]) for r in records}),
        profiles_total=len({profile(p) for p in personas}),
        turns=len(turns),
        verdicts={k: verdicts.get(k, 0) for k in (HINTED, PLAIN, INCONSISTENT, UNPARSEABLE)},
        decided_by_rule={rule: {"turns": n, "decided": decided.get(rule, 0)}
                         for rule, n in asked_by_rule.items()},
        judge_votes=len(votes),
        judge_reasked=sum(len(v["text"]) > 1 for v in votes),
        judge_unparseable_votes=sum(v["pick"] is None for v in votes),
        inducer_reasked=sum(t["inferred"].get("asked", 1) > 1 for t in turns),
        inducer_unparseable=sum(not t["inferred"].get("parsed", True) for t in turns),
        notes=dict(notes),
    )



# ------------------------------------------------------------------------------------------
# What the stage will send (`aloe plan`)
# ------------------------------------------------------------------------------------------
def planned_requests(params: Params, lengths: Lengths) -> list[PlannedRequest]:
    """Stage 2's requests for `aloe plan`: every turn of `n_conversations` conversations as
    `ConversationMaker.conversation` asks it (the user, the inducer, the two replies, the
    judge's `votes_per_turn`), each history at its length, built with the stage's own message
    builders; the re-asks (a redrawn user message, an inducer or judge answer asked again)
    apart. Conversations the reference prompts drop, and their replacements, are not
    counted."""
    c = params.conversations
    votes = votes_per_turn(c.judge_rule)
    style = c.prompt_style
    n = c.n_conversations
    user, reply = lengths.completion["user"], lengths.completion["assistant"]
    inducer, judge = lengths.completion["inducer"], lengths.completion["judge"]
    planned = []
    for turn in range(1, c.turns + 1):
        start = len(planned)
        counter = lengths.counter()
        persona = persona_slots(counter, lengths.persona)
        earlier = [{"turn": k, "user": counter.slot(user), HINTED: counter.slot(reply),
                    PLAIN: counter.slot(reply), "continued_with": HINTED,
                    "inferred": {"raw": counter.slot(inducer), "profile": counter.slot(inducer),
                                 "personality": counter.slot(0)}}
                   for k in range(1, turn)]
        before = continued_chat(earlier)
        said = counter.slot(user)
        history = before + [{"role": "user", "content": said}]
        asking_user = counter.tokens(simulator_messages(persona, before, style=style))
        induce = inducer_messages(persona, history, style)
        inferred = {"raw": counter.slot(inducer), "profile": counter.slot(inducer),
                    "personality": counter.slot(0)}
        judging = preference_messages(persona, history, counter.slot(reply), counter.slot(reply),
                                      style)
        reask_judge = preference_reask(c.judge_rule, style)
        planned += [
            PlannedRequest("user", n, asking_user, user),
            PlannedRequest("user", n * (SIMULATOR_ATTEMPTS - 1), asking_user, user, reask=True),
            PlannedRequest("inducer", n, counter.tokens(induce), inducer),
            PlannedRequest("inducer", n, counter.tokens(
                induce if INDUCER_REASK[style] is None  # drawn again as it is
                else reasked(counter, induce, inducer, INDUCER_REASK[style])),
                inducer, reask=True),
            *(PlannedRequest("assistant", n, counter.tokens(
                reply_messages(earlier, said, hint, style)), reply) for hint in (inferred, None)),
            PlannedRequest("judge", n * votes, counter.tokens(judging), judge),
        ]
        if reask_judge is not None:
            planned.append(PlannedRequest("judge", n * votes, counter.tokens(
                reasked(counter, judging, judge, reask_judge)), judge, reask=True))
        at_turn(planned[start:], turn)
    return planned
