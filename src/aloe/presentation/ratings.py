"""The human-rating kit: people rate a blinded sample of stage 5's replies, and the report says
how far the judge agrees with them.

1. `export_kit` draws `evaluation.human_sample` scored replies of the configured evaluation
   (seeded; over models and turns) and writes `ratings/VARIANT-form.html`: one self-contained
   page (no script, style or font fetched from anywhere; it works opened from a file, offline)
   that shows each item's persona, the conversation up to the user's message and the reply,
   in a shuffled order, without the model's name or the judge's score, and asks for the
   protocol's judgement (1-5 on ALOE's criteria, or 1/0 on RLPA's). Its button downloads the
   ratings as a JSON file. As the rater goes, it counts "N of M rated", marks the items still
   unrated and keeps every choice in the browser's localStorage under the kit's own name (a
   reload or a closed window loses nothing; a button clears them); a browser that refuses
   storage is told in one line. `ratings/VARIANT-key.json` keeps which model, persona and turn each
   item is, and the judge's score: it stays with the researcher.
2. `import_ratings` reads such files (one per rater; a rater's new file replaces their old
   ratings), checks every item and value against the key, and keeps them in
   `ratings/VARIANT-human.jsonl`.
3. `evaluation.human_agreement` pairs each human rating with the judge's score of the same reply:
   kappa, weighted kappa and Spearman with bootstrap intervals (`aloe.analysis.agreement`), written
   to metrics.json by stage 5 and shown in notebook 05.
"""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path
from typing import Any

from aloe.core import protocols
from aloe.core.chat import seeded, transcript
from aloe.core.config import Params
from aloe.core.errors import BadInputError
from aloe.core.records import read_json, read_records, replace_file, write_json, write_records
from aloe.core.schemas import human_rating_check, rating_key_check
from aloe.presentation import pages, tables
from aloe.stages import evaluation


class RatingsError(BadInputError):
    """A ratings file that does not belong to the kit, or holds a value the kit did not ask."""


def _variant(params: Params) -> str:
    return protocols.variant_name(params.evaluation)


def kit_items(params: Params, size: int | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(kit id, items): the sampled replies with what a rater sees and what only the key
    holds. The draw is seeded (a rerun draws the same kit); the shown order is shuffled."""
    e = params.evaluation
    personas = evaluation.benchmark_personas(params)
    records = evaluation.load_records(params, personas)
    scored = sorted((r for r in records if r.get("score") is not None),
                    key=lambda r: (str(r["model"]), str(r["persona_id"]), int(r["turn"])))
    if not scored:
        raise RatingsError("no judged replies to rate: run stage 5 (aloe evaluate) first")
    rng = seeded(params.run.seed, "human-kit")
    sample = rng.sample(scored, min(size or e.human_sample, len(scored)))
    who = evaluation.Conversationist.of(params, personas)
    by_id = {str(p["id"]): p for p in personas}
    conversations: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in records:
        conversations.setdefault((str(r["model"]), str(r["persona_id"])), {})[int(r["turn"])] = r
    kit = hashlib.sha256(json.dumps([(r["model"], r["persona_id"], r["turn"]) for r in sample],
                                    sort_keys=True).encode()).hexdigest()[:10]
    items = []
    for r in sample:
        turns = conversations[(str(r["model"]), str(r["persona_id"]))]
        earlier = [m for k in sorted(turns) if k < int(r["turn"])
                   for m in ({"role": "user", "content": turns[k]["user"]},
                             {"role": "assistant", "content": turns[k]["reply"]})]
        persona = who.persona_at(by_id[str(r["persona_id"])], int(r["turn"]))
        item = hashlib.sha256(f"{kit}:{r['model']}:{r['persona_id']}:{r['turn']}".encode()
                              ).hexdigest()[:12]
        items.append({"item": item, "profile": persona["profile"],
                      "personality": persona["personality"], "earlier": transcript(earlier),
                      "message": r["user"], "reply": r["reply"],
                      "key": {"model": r["model"], "persona_id": r["persona_id"],
                              "profile_id": r.get("profile_id"), "turn": r["turn"],
                              "judge_score": r["score"]}})
    rng.shuffle(items)
    return kit, items


def export_kit(params: Params, size: int | None = None) -> tuple[Path, Path]:
    """Write the form and its key; returns (form, key)."""
    protocol = protocols.get(params.evaluation.protocol)
    kit, items = kit_items(params, size)
    variant = _variant(params)
    key = {"kit": kit, "variant": variant, "protocol": protocol.name,
           "version": protocol.version, "categories": protocol.categories,
           "items": {i["item"]: i["key"] for i in items}}
    form = params.layout.rating_form(variant)
    form.parent.mkdir(parents=True, exist_ok=True)
    # the key first, each file whole or not at all: a full disk never leaves a form whose
    # ratings could not be imported
    write_json(params.layout.rating_key(variant), key,
               check=rating_key_check(protocol.categories))
    page = render_form(kit, variant, protocol, items)
    replace_file(form, lambda handle: handle.write(page))
    return form, params.layout.rating_key(variant)


def storage_key(kit: str, variant: str, protocol: protocols.Protocol,
                items: list[dict[str, Any]]) -> str:
    """The name the form keeps its ratings under in the browser. Every page opened from a file
    shares one origin, and a kit drawn again from another run's replies can have the same kit
    id: the name is a hash of what the rater sees, so two kits never share their ratings and
    the same kit written again keeps them."""
    shown = [[i["item"], i["profile"], i["personality"], i["earlier"], i["message"], i["reply"]]
             for i in items]
    content = json.dumps([kit, variant, protocol.name, protocol.version,
                          list(protocol.categories), shown], ensure_ascii=False)
    return f"aloe-rating-kit:{kit}:{hashlib.sha256(content.encode()).hexdigest()[:16]}"



def _item_block(n: int, total: int, item: dict[str, Any], protocol: protocols.Protocol
                ) -> str:
    """One item, every text from the kit escaped; unrated until the page's script says."""
    esc = html.escape
    labels = protocol.rating_labels
    choices = "".join(
        f'<label><input type="radio" name="{esc(item["item"])}" value="{c}" '
        f'autocomplete="off"> {esc(labels[c])}</label>' for c in protocol.categories)
    earlier = esc(item["earlier"]) or "<em>(this is the first message)</em>"
    return f"""
<section class="item unrated" data-item="{esc(item['item'])}">
  <h2>Item {n} of {total} <span class="todo">not rated yet</span></h2>
  <p><b>The person's profile:</b> {esc(item['profile'])}</p>
  <p><b>The person's personality:</b> {esc(item['personality'])}</p>
  <p><b>Earlier in the chat:</b></p><pre>{earlier}</pre>
  <p><b>The person's message:</b></p><pre>{esc(item['message'])}</pre>
  <p><b>The reply to rate:</b></p><pre class="reply">{esc(item['reply'])}</pre>
  <p class="question">{esc(protocol.rating_question())}</p>
  <div class="choices">{choices}</div>
</section>"""





def render_form(kit: str, variant: str, protocol: protocols.Protocol,
                items: list[dict[str, Any]]) -> str:
    """The page: everything inline, no URL anywhere, the ratings saved by a download and kept
    in the browser as the rater goes (a reload or a closed window loses nothing)."""
    esc = html.escape
    blocks = [_item_block(n, len(items), item, protocol) for n, item in enumerate(items, 1)]
    meta = tables.script_json({"kit": kit, "variant": variant, "protocol": protocol.name,
                         "categories": list(protocol.categories),
                         "store": storage_key(kit, variant, protocol, items),
                         "items": [i["item"] for i in items]})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Rate replies - kit {esc(kit)}</title>
<style>{pages.read("rating_form.css")}</style></head>
<body>
<h1>Rating replies to simulated users</h1>
<p>Each item shows a person (a profile and a personality), a chat between that person and a
chatbot, and the chatbot's latest reply. The chatbot was never told who the person is. Rate
each reply as asked under it. The items are in random order and say nothing about which
system wrote them. When you are done, type your name or initials and press the button: your
browser saves a file <code>ratings-{esc(kit)}-NAME.json</code>; send that file back. Nothing is
sent anywhere from this page.</p>
<div id="progress">
  <span id="count">0 of {len(items)} rated</span>
  <button id="next-unrated" type="button">Go to the next unrated item</button>
  <button id="clear-saved" type="button">Clear saved ratings</button>
  <p id="storage-note"></p>
</div>
{''.join(blocks)}
<section class="item">
  <p><label>Your name or initials: <input id="rater" type="text" size="20"
    autocomplete="off"></label></p>
  <p><button id="save" type="button">Download my ratings</button> <span id="status"></span></p>
</section>
<script type="application/json" id="kit-meta">{meta}</script>
<script>{pages.read("rating_form.js")}</script>
</body></html>
"""


def import_ratings(params: Params, files: list[str | Path]) -> Path:
    """Check each downloaded ratings file against the kit's key and keep its ratings (one
    record per rater and item); a rater's new file replaces their earlier ratings."""
    variant = _variant(params)
    key_path = params.layout.rating_key(variant)
    if not key_path.exists():
        raise RatingsError(f"no rating kit at {key_path}: run `aloe ratings export` first")
    categories = protocols.get(params.evaluation.protocol).categories
    key = read_json(key_path, check=rating_key_check(categories))
    kept = read_records(params.layout.human_ratings(variant),
                        check=human_rating_check(categories))
    for file in files:
        rater, ratings = read_ratings_file(Path(file), key, variant)
        kept = [r for r in kept if r["rater"] != rater]
        kept += [{"kit": key["kit"], "rater": rater, "item": item, "rating": value,
                  **key["items"][item]} for item, value in sorted(ratings.items())]
    path = params.layout.human_ratings(variant)
    write_records(path, kept, check=human_rating_check(categories))
    return path


def read_ratings_file(file: Path, key: dict[str, Any], variant: str
                      ) -> tuple[str, dict[str, int]]:
    """A file the form saved: its rater and ratings, each checked against the kit's key (an
    item of the kit, a category of the protocol: an integer, never `true`); RatingsError in one
    line naming the file otherwise."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        why = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise RatingsError(f"{file}: not a ratings file the form saved ({why})") from None
    if not isinstance(data, dict) or data.get("kit") != key["kit"]:
        kit = data.get("kit") if isinstance(data, dict) else None
        raise RatingsError(f"{file}: belongs to kit {str(kit)[:40]!r}, not to this run's kit "
                           f"{key['kit']} ({variant})")
    rater = data.get("rater")
    if not isinstance(rater, str) or not rater.strip() or len(rater) > 200:
        raise RatingsError(f"{file}: names no rater (a name of at most 200 characters)")
    ratings = data.get("ratings") or {}
    if not isinstance(ratings, dict):
        raise RatingsError(f"{file}: 'ratings' is {type(ratings).__name__}, not the form's "
                           "mapping of item to rating")
    for item, value in ratings.items():
        if item not in key["items"]:
            raise RatingsError(f"{file}: item {item[:40]!r} is not in the kit")
        if isinstance(value, bool) or not isinstance(value, int) \
                or value not in key["categories"]:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise RatingsError(f"{file}: item {item} has value {shown}; the kit asks for one "
                               f"of {key['categories']}")
    return rater.strip(), ratings
