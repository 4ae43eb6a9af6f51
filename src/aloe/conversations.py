"""Stage 2: tree-structured multi-turn preference conversations (the paper's training data).

At every turn of a conversation with a simulated persona:

1. the user simulator writes the persona's next message (`aloe.simulator`);
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
import html
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from aloe.config import Params
from aloe.llm import LLM, Completion, LLMError, MissingKeyError, open_llm, run_sync
from aloe.prompts import render
from aloe.records import append_record, read_records, write_json
from aloe.simulator import draw, simulate_user, trim_unfinished

HINTED, PLAIN = "hinted", "plain"
INCONSISTENT, UNPARSEABLE = "inconsistent", "unparseable"
BRANCHES = (HINTED, PLAIN)
NONE = "none"
STAGE = "conversations"


class ConversationsError(RuntimeError):
    """The stage cannot start (no personas); the message says what is missing and where."""


# ------------------------------------------------------------------------------------------
# Files and the plan
# ------------------------------------------------------------------------------------------
def conversations_path(params: Params) -> Path:
    return params.run_dir / "conversations.jsonl"


def summary_path(params: Params) -> Path:
    return params.run_dir / "conversations_summary.json"


def load_personas(params: Params) -> list[dict[str, Any]]:
    """Stage 1's personas, checked for the fields a conversation needs."""
    path = params.run_dir / "personas.jsonl"
    personas = read_records(path)
    if not personas:
        raise ConversationsError(f"{path}: no personas; run stage 1 (01_personas) first")
    for number, persona in enumerate(personas, start=1):
        missing = [k for k in ("id", "profile", "personality") if not persona.get(k)]
        if missing:
            raise ConversationsError(f"{path}:{number}: persona without {', '.join(missing)}")
    return personas


def conversation_id(index: int) -> str:
    return f"conv-{index:05d}"


def plan(params: Params, personas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conversation i talks with persona i (cycling); `sample` tells the cycles apart so that
    the same persona met twice starts a different conversation (a different cached draw)."""
    return [{"index": i, "id": conversation_id(i), "persona": personas[i % len(personas)],
             "sample": i // len(personas)}
            for i in range(params.conversations.n_conversations)]


def load_conversations(params: Params) -> list[dict[str, Any]]:
    """The written conversation trees, one per id (the first if an id occurs twice), by index."""
    seen: dict[str, dict[str, Any]] = {}
    for record in read_records(conversations_path(params)):
        seen.setdefault(record["id"], record)
    return sorted(seen.values(), key=lambda r: (r.get("index", 0), r["id"]))


def seeded(seed: int, *parts: object) -> random.Random:
    """A random generator fixed by the run's seed and a name: the same on every rerun and
    independent of the order in which concurrent conversations happen to run."""
    return random.Random(":".join(map(str, (seed, *parts))))


# ------------------------------------------------------------------------------------------
# Parsing model replies
# ------------------------------------------------------------------------------------------
_FIELD = re.compile(
    r"^[\s*#>\-\d.]*(profile|personality)\b[\s*_]*(?:\([^)]*\))?[\s*_]*[:\-]\s*(.*)$",
    re.IGNORECASE)
_NONE_WORDS = re.compile(r"^(?:none|nothing|n/?a|unknown|-+|(?:not(?:hing)?|no)(?:\s+\w+)?\s+"
                         r"(?:yet\s+)?(?:revealed|mentioned|shared|known|given|info\w*)"
                         r"(?:\s+yet)?)\W*$", re.IGNORECASE)

_OTHER_LABEL = re.compile(r"^[\s*#>\-]*[A-Za-z][\w ]{0,24}[*_]*:")


def _field_value(text: str) -> str:
    value = " ".join(text.split()).strip(" *_<>\"'")
    return NONE if not value or _NONE_WORDS.match(value) else value


def parse_inferred(text: str) -> dict[str, str] | None:
    """The inducer's `Profile: ... / Personality: ...` answer, or None when it has neither.

    Tolerates markdown (bold labels, bullets), values running over several lines (up to a
    blank line or another label such as "User:"), labels in any case, "none"-like values, and
    one missing field (read as "none").
    """
    fields: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _FIELD.match(line)
        if match:
            current = match.group(1).lower()
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


_CHOICE_START = re.compile(r"^\W*(?:reply|response|answer|option)?\s*#?\s*([12])(?!\d)",
                           re.IGNORECASE)
_CHOICE_NAMED = re.compile(r"(?:reply|response|option)\s*#?\s*([12])(?!\d)", re.IGNORECASE)
_CHOICE_DIGIT = re.compile(r"(?<![\d.])([12])(?!\d|\.\d)")  # not part of 12 or 1.5
_ORDINALS = {"first": 1, "second": 2}


def parse_choice(text: str) -> int | None:
    """The judge's 1 or 2, or None when its answer names neither (or both, undecided)."""
    match = _CHOICE_START.match(text) or _CHOICE_NAMED.search(text)
    if match:
        return int(match.group(1))
    digits = {int(d) for d in _CHOICE_DIGIT.findall(text)}
    if len(digits) == 1:
        return digits.pop()
    words = {_ORDINALS[w.lower()] for w in re.findall(r"\b(first|second)\b", text, re.IGNORECASE)}
    return words.pop() if len(words) == 1 else None


def choice_probabilities(logprobs: list[dict[str, Any]] | None) -> dict[str, float] | None:
    """P("1") and P("2"), renormalised over the two, at the first answer token that offers
    either; None when the backend returned no log-probabilities or neither digit."""
    for token in logprobs or []:
        candidates = dict(token.get("top") or {})
        candidates.setdefault(token.get("token", ""), token.get("logprob", -math.inf))
        mass = {"1": 0.0, "2": 0.0}
        for text, logprob in candidates.items():
            digit = str(text).strip()
            if digit in mass and logprob is not None:
                mass[digit] += math.exp(logprob)
        total = mass["1"] + mass["2"]
        if total > 0:
            return {d: p / total for d, p in mass.items()}
        if str(token.get("token", "")).strip():  # a real token that is no digit: give up
            return None
    return None


def chat_transcript(history: list[dict[str, str]]) -> str:
    """The chat as a neutral transcript for the inducer and the judge."""
    return "\n".join(f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content'].strip()}"
                     for m in history)


def annotator_messages(task: str, question: str) -> list[dict[str, str]]:
    """The inducer's or judge's request: a system message, one worked example of the task
    (its question and answer, templates `TASK_example` and `TASK_example_answer`), then the
    real question. The example pins down the answer format, which small models otherwise
    ignore; large ones lose nothing by it."""
    return [{"role": "system", "content": render("annotator_system")},
            {"role": "user", "content": render(f"{task}_example")},
            {"role": "assistant", "content": render(f"{task}_example_answer")},
            {"role": "user", "content": question}]


def _http_rejection(error: LLMError) -> bool:
    """A request the backend refused as invalid (4xx other than 429), not a transient fault."""
    match = re.search(r"HTTP (\d{3})", str(error))
    return bool(match) and match.group(1).startswith("4") and match.group(1) != "429"


# ------------------------------------------------------------------------------------------
# One conversation
# ------------------------------------------------------------------------------------------
class ConversationMaker:
    """Writes conversation trees with the roles of one LLM session."""

    def __init__(self, llm: LLM, params: Params, on_request: Callable[[], None] | None = None):
        self.llm = llm
        self.seed = params.run.seed
        self.turns = params.conversations.turns
        self.rule = params.conversations.judge_rule
        self.on_request = on_request or (lambda: None)
        self.logprobs_rejected: str | None = None  # the backend refused `logprobs`: why

    async def _chat(self, role: str, messages: list[dict[str, str]], sample: int,
                    **kwargs: Any) -> Completion:
        completion = await self.llm.chat(role, messages, sample=sample, **kwargs)
        self.on_request()
        return completion

    # -- the roles ---------------------------------------------------------------------------
    async def induce(self, persona: dict[str, Any], history: list[dict[str, str]],
                     sample: int) -> dict[str, Any]:
        """What the user has revealed so far; asked again once if the answer has no format."""
        messages = annotator_messages("induce", render(
            "induce_persona", profile=persona["profile"], personality=persona["personality"],
            transcript=chat_transcript(history)))
        first = await self._chat("inducer", messages, draw(sample, 0))
        parsed, raw, asked = parse_inferred(first.text), first.text, 1
        if parsed is None:
            messages += [{"role": "assistant", "content": first.text},
                         {"role": "user", "content": render("induce_persona_reask")}]
            second = await self._chat("inducer", messages, draw(sample, 1))
            parsed, raw, asked = parse_inferred(second.text), second.text, 2
        if parsed is None:
            return {"profile": None, "personality": None, "parsed": False, "asked": asked,
                    "raw": raw}
        return {**parsed, "parsed": True, "asked": asked, "raw": raw}

    async def reply(self, history: list[dict[str, str]], inferred: dict[str, Any] | None,
                    sample: int) -> str:
        """The assistant's reply; with the inferred persona as a hint when `inferred` is given."""
        if inferred is None:
            system = render("assistant_plain")
        else:
            system = render("assistant_hinted", profile=inferred.get("profile") or NONE,
                            personality=inferred.get("personality") or NONE)
        completion = await self._chat("assistant", [{"role": "system", "content": system},
                                                    *history], draw(sample, 0))
        return trim_unfinished(completion.text.strip(), completion.finish_reason)

    async def vote(self, persona: dict[str, Any], history: list[dict[str, str]],
                   replies: dict[str, str], order: tuple[str, str], sample: int,
                   logprobs: bool = False) -> dict[str, Any]:
        """One judge vote with the replies shown in `order`; re-asked once if unparseable."""
        messages = annotator_messages("judge", render(
            "judge_preference", profile=persona["profile"], personality=persona["personality"],
            transcript=chat_transcript(history), reply_1=replies[order[0]],
            reply_2=replies[order[1]]))
        vote: dict[str, Any] = {"order": list(order)}
        offset = 2 if logprobs else 0  # a log-probability request is a draw of its own
        completion = await self._chat("judge", messages, draw(sample, offset), logprobs=logprobs)
        texts = [completion.text]
        if logprobs:
            probabilities = choice_probabilities(completion.logprobs)
            if probabilities is not None:
                vote["p"] = probabilities
                vote["p_hinted"] = probabilities["1" if order[0] == HINTED else "2"]
        choice = parse_choice(completion.text)
        if choice is None and "p" not in vote:
            messages += [{"role": "assistant", "content": completion.text},
                         {"role": "user", "content": render("judge_preference_reask")}]
            again = await self._chat("judge", messages, draw(sample, offset + 1))
            texts.append(again.text)
            choice = parse_choice(again.text)
        vote.update(text=texts, choice=choice, pick=order[choice - 1] if choice else None)
        return vote

    async def judge(self, conv_id: str, turn: int, persona: dict[str, Any],
                    history: list[dict[str, str]], replies: dict[str, str],
                    sample: int) -> dict[str, Any]:
        """The turn's verdict under the configured rule (see the module docstring)."""
        both = [(HINTED, PLAIN), (PLAIN, HINTED)]
        if self.rule == "single_random":
            order = tuple(seeded(self.seed, conv_id, turn, "judge-order").sample(BRANCHES, 2))
            vote = await self.vote(persona, history, replies,
                                   order, sample)  # type: ignore[arg-type]
            return {"rule": "single_random", "preferred": vote["pick"] or UNPARSEABLE,
                    "votes": [vote]}
        if self.rule == "logprobs" and self.logprobs_rejected is None:
            try:
                votes = await asyncio.gather(*(self.vote(persona, history, replies, o, sample,
                                                         logprobs=True) for o in both))
            except LLMError as error:
                if not _http_rejection(error):
                    raise
                self.logprobs_rejected = str(error)
            else:
                if all("p_hinted" in v for v in votes):
                    p_hinted = sum(v["p_hinted"] for v in votes) / 2
                    preferred = (HINTED if p_hinted > 0.5 else PLAIN if p_hinted < 0.5
                                 else INCONSISTENT)
                    return {"rule": "logprobs", "preferred": preferred, "votes": list(votes),
                            "p_hinted": p_hinted}
                verdict = _agreement(list(votes))
                verdict["note"] = "no log-probabilities returned; decided by both_orders"
                return verdict
        votes = await asyncio.gather(*(self.vote(persona, history, replies, o, sample)
                                       for o in both))
        verdict = _agreement(list(votes))
        if self.rule == "logprobs":
            verdict["note"] = "the backend rejected logprobs; decided by both_orders"
        return verdict

    # -- the tree ----------------------------------------------------------------------------
    async def conversation(self, item: dict[str, Any]) -> dict[str, Any]:
        """One whole conversation tree; raises LLMError when a request fails for good."""
        conv_id, persona, sample = item["id"], item["persona"], item["sample"]
        history: list[dict[str, str]] = []
        turns = []
        for turn in range(1, self.turns + 1):
            user = await simulate_user(self.llm, persona, history, sample=sample)
            self.on_request()
            history.append({"role": "user", "content": user})
            inferred = await self.induce(persona, history, sample)
            hinted, plain = await asyncio.gather(self.reply(history, inferred, sample),
                                                 self.reply(history, None, sample))
            replies = {HINTED: hinted, PLAIN: plain}
            verdict = await self.judge(conv_id, turn, persona, history, replies, sample)
            continued = seeded(self.seed, conv_id, turn, "continue").choice(BRANCHES)
            turns.append({"turn": turn, "user": user, "inferred": inferred, HINTED: hinted,
                          PLAIN: plain, "verdict": verdict, "continued_with": continued})
            history.append({"role": "assistant", "content": replies[continued]})
        return {"id": conv_id, "index": item["index"], "persona": persona, "turns": turns,
                "judge_rule": self.rule, "seed": self.seed, "models": self.models()}

    def models(self) -> dict[str, dict[str, Any]]:
        roles = self.llm.params.roles
        return {role: {"model": getattr(roles, role).model,
                       "base_url": getattr(roles, role).base_url}
                for role in ("user", "inducer", "assistant", "judge")}


def _agreement(votes: list[dict[str, Any]]) -> dict[str, Any]:
    """Both orders: agreeing votes decide, disagreeing ones make the turn inconsistent."""
    picks = [v["pick"] for v in votes]
    if None in picks:
        preferred = UNPARSEABLE
    elif picks[0] == picks[1]:
        preferred = picks[0]
    else:
        preferred = INCONSISTENT
    return {"rule": "both_orders", "preferred": preferred, "votes": votes}


# ------------------------------------------------------------------------------------------
# The stage
# ------------------------------------------------------------------------------------------
async def _generate(llm: LLM, params: Params, todo: list[dict[str, Any]], done: int,
                    total: int) -> tuple[int, list[dict[str, str]], str | None]:
    """Run the pending conversations concurrently, appending each as it completes."""
    path = conversations_path(params)
    limit = asyncio.Semaphore(params.conversations.concurrency)
    bar = tqdm(total=total, initial=done, desc="conversations", unit="conv", dynamic_ncols=True)

    shown = [0.0]

    def show(force: bool = False) -> None:  # at most twice a second: cheap even in Jupyter
        now = time.monotonic()
        if force or now - shown[0] >= 0.5:
            shown[0] = now
            usage = llm.ledger.totals()
            bar.set_postfix(requests=usage.requests, cache_hits=usage.cache_hits,
                            cost=f"${usage.cost_usd:.4f}")

    maker = ConversationMaker(llm, params, on_request=show)

    async def one(item: dict[str, Any]) -> dict[str, Any] | dict[str, str]:
        async with limit:
            try:
                return await maker.conversation(item)
            except MissingKeyError:
                raise
            except LLMError as error:
                return {"failed": item["id"], "reason": str(error)}

    written, failures = 0, []
    try:
        for next_done in asyncio.as_completed([one(item) for item in todo]):
            result = await next_done
            if "failed" in result:
                failures.append({"id": result["failed"], "reason": result["reason"]})
            else:
                append_record(path, result)
                written += 1
                bar.update(1)
            show(force=True)
    finally:
        bar.close()
        await llm.aclose()
    return written, failures, maker.logprobs_rejected


def run_stage(params: Params) -> dict[str, Any]:
    """Generate the missing conversations of this run and return (and save) a summary.

    Conversations already in `conversations.jsonl` are skipped; those whose requests fail for
    good are not written but counted with their reason, and a rerun tries them again.
    """
    personas = load_personas(params)
    items = plan(params, personas)
    written = load_conversations(params)
    other = sorted({len(r["turns"]) for r in written} - {params.conversations.turns})
    if other:
        raise ConversationsError(
            f"{conversations_path(params)}: holds conversations of {other[0]} turns but "
            f"conversations.turns is {params.conversations.turns}; use another run.name")
    done_ids = {r["id"] for r in written}
    todo = [item for item in items if item["id"] not in done_ids]
    done = len(items) - len(todo)
    with open_llm(params, STAGE) as llm:
        written, failures, rejected = run_sync(_generate(llm, params, todo, done, len(items)))
        usage = llm.ledger.totals()
    summary = summarise(load_conversations(params), params)
    summary.update(found_done=done, written_now=written, failed=len(failures),
                   failures=failures, requests=usage.requests, cache_hits=usage.cache_hits,
                   retries=usage.retries, cost_usd=round(usage.cost_usd, 6))
    if rejected:
        summary["notes"]["logprobs_rejected"] = rejected
    write_json(summary_path(params), summary)
    return summary


def summarise(records: list[dict[str, Any]], params: Params | None = None) -> dict[str, Any]:
    """Counts over written conversations: verdicts, turns each rule decided, unparseables."""
    turns = [t for r in records for t in r["turns"]]
    verdicts = Counter(t["verdict"]["preferred"] for t in turns)
    decided = Counter(t["verdict"]["rule"] for t in turns
                      if t["verdict"]["preferred"] in BRANCHES)
    asked_by_rule = Counter(t["verdict"]["rule"] for t in turns)
    notes = Counter(t["verdict"]["note"] for t in turns if t["verdict"].get("note"))
    votes = [v for t in turns for v in t["verdict"]["votes"]]
    return {
        "configured": params.conversations.n_conversations if params else None,
        "judge_rule": params.conversations.judge_rule if params else None,
        "conversations": len(records),
        "turns": len(turns),
        "verdicts": {k: verdicts.get(k, 0) for k in (HINTED, PLAIN, INCONSISTENT, UNPARSEABLE)},
        "decided_by_rule": {rule: {"turns": n, "decided": decided.get(rule, 0)}
                            for rule, n in asked_by_rule.items()},
        "judge_votes": len(votes),
        "judge_reasked": sum(len(v["text"]) > 1 for v in votes),
        "judge_unparseable_votes": sum(v["pick"] is None for v in votes),
        "inducer_reasked": sum(t["inferred"].get("asked", 1) > 1 for t in turns),
        "inducer_unparseable": sum(not t["inferred"].get("parsed", True) for t in turns),
        "notes": dict(notes),
    }


# ------------------------------------------------------------------------------------------
# Tables for the notebook and the report
# ------------------------------------------------------------------------------------------
_STOPWORDS = set("""a an the and or but if of to in on at for with from by as is are was were be
been being has have had do does did not no she he her his him they them their it its this that
these those who whom which what when where how very also loves love enjoys enjoy likes like
always often year years old lives live who's she's he's i'm you your our we us me my about
into than then there here just more most much many some any all both each own so such too can
will would should could may might""".split())


def _content_words(text: str | None) -> set[str]:
    """Crudely stemmed content words (first five letters), for a lexical recall measure."""
    words = re.findall(r"[a-z0-9]+", (text or "").lower())
    return {w[:5] for w in words if len(w) > 2 and w not in _STOPWORDS}


def recall(truth: str, inferred: str | None) -> float:
    """Share of the true description's content words that the inferred text mentions."""
    target = _content_words(truth)
    if not target or not inferred or inferred == NONE:
        return 0.0
    return len(target & _content_words(inferred)) / len(target)


def turn_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per turn: verdict, reply lengths (words), and persona recovery (lexical recall
    of the true profile and personality in what the inducer wrote down)."""
    rows = []
    for record in records:
        persona = record["persona"]
        for t in record["turns"]:
            inferred = t["inferred"]
            rows.append({
                "conversation_id": record["id"], "persona_id": persona["id"], "turn": t["turn"],
                "rule": t["verdict"]["rule"], "preferred": t["verdict"]["preferred"],
                "continued_with": t["continued_with"],
                "hinted_words": len(t[HINTED].split()), "plain_words": len(t[PLAIN].split()),
                "user_words": len(t["user"].split()),
                "inferred_parsed": bool(inferred.get("parsed", True)),
                "profile_recall": recall(persona["profile"], inferred.get("profile")),
                "personality_recall": recall(persona["personality"], inferred.get("personality")),
            })
    return pd.DataFrame(rows)


def rule_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Per judge rule used: turns judged, decided, inconsistent, unparseable."""
    table = turn_table(records)
    if table.empty:
        return pd.DataFrame(columns=["rule", "turns", "decided", INCONSISTENT, UNPARSEABLE])
    grouped = table.groupby("rule")["preferred"]
    return pd.DataFrame({
        "turns": grouped.size(),
        "decided": grouped.apply(lambda s: int(s.isin(BRANCHES).sum())),
        INCONSISTENT: grouped.apply(lambda s: int((s == INCONSISTENT).sum())),
        UNPARSEABLE: grouped.apply(lambda s: int((s == UNPARSEABLE).sum())),
    }).reset_index()


# ------------------------------------------------------------------------------------------
# One conversation drawn as a tree (HTML)
# ------------------------------------------------------------------------------------------
_TREE_CSS = """
<style>
.aloe-tree{font-family:system-ui,sans-serif;font-size:13px;max-width:960px}
.aloe-tree .head{margin-bottom:8px;color:#444}
.aloe-tree .turn{border-left:3px solid #999;margin:0 0 10px 6px;padding-left:10px}
.aloe-tree .user{background:#eef3fb;border-radius:8px;padding:6px 9px;margin:4px 0}
.aloe-tree .hint{color:#666;font-size:12px;margin:2px 0 4px}
.aloe-tree .branches{display:flex;gap:10px}
.aloe-tree .branch{flex:1;border:1px solid #ccc;border-radius:8px;padding:6px 9px;opacity:.55}
.aloe-tree .branch.continued{opacity:1;border:2px solid #2a7}
.aloe-tree .label{font-weight:600;font-size:12px;margin-bottom:3px}
.aloe-tree .badge{display:inline-block;border-radius:4px;padding:0 5px;margin-left:4px;
 font-size:11px;background:#ddd}
.aloe-tree .badge.win{background:#fd6;}
</style>
"""


def render_tree_html(record: dict[str, Any]) -> str:
    """A conversation tree as HTML: each user message, under it both replies side by side,
    the judge's preference marked and the branch that continued the conversation outlined."""
    esc = html.escape
    persona = record["persona"]
    parts = [_TREE_CSS, '<div class="aloe-tree">',
             f'<div class="head"><b>{esc(record["id"])}</b> &middot; persona '
             f'{esc(str(persona["id"]))}<br><i>Profile:</i> {esc(persona["profile"])}<br>'
             f'<i>Personality:</i> {esc(persona["personality"])}</div>']
    for t in record["turns"]:
        inferred = t["inferred"]
        hint = ("<i>(inducer reply unparseable)</i>" if not inferred.get("parsed", True) else
                f'{esc(inferred.get("profile") or NONE)} / '
                f'{esc(inferred.get("personality") or NONE)}')
        preferred = t["verdict"]["preferred"]
        parts.append(f'<div class="turn"><div class="label">Turn {t["turn"]} &middot; judge: '
                     f'{esc(preferred)} ({esc(t["verdict"]["rule"])})</div>'
                     f'<div class="user"><b>User:</b> {esc(t["user"])}</div>'
                     f'<div class="hint">inferred so far: {hint}</div><div class="branches">')
        for branch in BRANCHES:
            classes = "branch continued" if t["continued_with"] == branch else "branch"
            badges = '<span class="badge win">preferred</span>' if preferred == branch else ""
            if t["continued_with"] == branch:
                badges += '<span class="badge">continued</span>'
            parts.append(f'<div class="{classes}"><div class="label">{branch}{badges}</div>'
                         f'{esc(t[branch])}</div>')
        parts.append("</div></div>")
    parts.append("</div>")
    return "".join(parts)
