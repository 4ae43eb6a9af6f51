"""Stage 2's conversation trees as a reader sees them: one row per turn (lengths, how much of
the persona the inducer recovered, the judge's verdict), the verdicts per rule, and one
conversation drawn as a tree (notebooks 02 and 06, the report).
"""

from __future__ import annotations

import html
import re
from typing import Any

import pandas as pd

from aloe.presentation import pages
from aloe.roles.conversation_prompts import NONE
from aloe.roles.judges import BRANCHES, HINTED, INCONSISTENT, PLAIN, UNPARSEABLE

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


TURN_COLUMNS = ("conversation_id", "persona_id", "turn", "rule", "preferred", "continued_with",
                "hinted_words", "plain_words", "user_words", "inferred_parsed", "profile_recall",
                "personality_recall")


def turn_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per turn: verdict, reply lengths (words), and persona recovery (lexical recall
    of the true profile and personality in what the inducer wrote down). With no records, an
    empty table that still has its columns (what the notebook's cells select)."""
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
    return pd.DataFrame(rows, columns=list(TURN_COLUMNS))


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


def render_tree_html(record: dict[str, Any]) -> str:
    """A conversation tree as HTML: each user message, under it both replies side by side,
    the judge's preference marked and the branch that continued the conversation outlined (a
    turn continued by the reply the judge did not prefer says why: the draw is random)."""
    esc = html.escape
    persona = record["persona"]
    parts = [f"<style>\n{pages.read('tree.css')}</style>", '<div class="aloe-tree">',
             f'<div class="head"><b>{esc(record["id"])}</b> &middot; persona '
             f'{esc(str(persona["id"]))}<br><i>Profile:</i> {esc(persona["profile"])}<br>'
             f'<i>Personality:</i> {esc(persona["personality"])}</div>']
    for t in record["turns"]:
        inferred = t["inferred"]
        hint = ("<i>(inducer reply unparseable)</i>" if not inferred.get("parsed", True) else
                f'{esc(inferred.get("profile") or NONE)} / '
                f'{esc(inferred.get("personality") or NONE)}')
        preferred = t["verdict"]["preferred"]
        why = (f'<div class="hint">{esc(preferred)} preferred, {esc(t["continued_with"])} '
               'continued: the branch that continues is drawn at random (seeded) whatever the '
               'verdict, by design, as in the released ALOE code.</div>'
               if preferred in BRANCHES and t["continued_with"] != preferred else "")
        parts.append(f'<div class="turn"><div class="label">Turn {t["turn"]} &middot; judge: '
                     f'{esc(preferred)} ({esc(t["verdict"]["rule"])})</div>{why}'
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
