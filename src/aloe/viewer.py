"""The transcript viewer: every benchmark conversation and every training tree of a run on one
page, `RUN/viewer.html`, linked from the report's first screen.

The report shows one conversation tree; the viewer shows them all:

- **Benchmark conversations** (stage 5, `eval/[VARIANT/]MODEL.jsonl`): one row per model,
  persona and turn, with the user's message, the model's reply, the judge's score and its
  whole answer (the reason it gave), filterable by evaluation variant, model, persona, turn and
  score.
- **Training trees** (stage 2, `conversations.jsonl`): one row per conversation turn, with the
  user's message, what the inducer inferred, the hinted and the plain reply, the judge's
  verdict (which reply it preferred, under which rule, each vote's answer) and the branch that
  continued; filterable by assistant model, persona, turn and verdict.

The page is self-contained: no server, no URL, nothing fetched; its data is one inline JSON
blob and its rows are drawn by its inline script a page at a time, so a paper-size run (tens of
thousands of turns) stays usable. Every text an LLM wrote reaches the page only through
`textContent` (never as markup), and the JSON blob is escaped for a script element
(`aloe.tables.script_json`): a reply holding `<script>` shows as that text and runs nothing.

`write_viewer` is called by the report notebook (06) before the summary, and by
`aloe view RUN`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aloe import manifest, protocols
from aloe.layout import DEFAULT_VARIANT, RunLayout
from aloe.records import read_json, read_records, replace_file
from aloe.schemas import conversation_check, persona_check
from aloe.tables import script_json

if TYPE_CHECKING:
    from aloe.config import Params

PAGE_ROWS = 200  # rows drawn at a time; "show more" draws the next ones
SIDE_FOLDERS = ("probes", "simulator")  # side measures inside a variant's folder, not models


# ------------------------------------------------------------------------------------------
# What the page holds
# ------------------------------------------------------------------------------------------
def variants(layout: RunLayout) -> list[tuple[str, Path]]:
    """Every evaluation variant the run holds records of, with its folder: the default's
    (eval/ itself) first, then eval/VARIANT/ for each other protocol, replay or shift."""
    found = []
    if layout.eval_dir.is_dir():
        found.append((DEFAULT_VARIANT, layout.eval_dir))
        for folder in sorted(layout.eval_dir.iterdir()):
            if folder.is_dir() and folder.name not in SIDE_FOLDERS \
                    and folder.name.split("-")[0] in protocols.PROTOCOLS:
                found.append((folder.name, folder))
    return [(name, folder) for name, folder in found if _model_files(folder)]


def _model_files(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.glob("*.jsonl")) if f.name != "judge_check.jsonl"]


def _model_order(layout: RunLayout, variant: str, files: Sequence[Path]) -> list[Path]:
    """The variant's models in the order its metrics list them (the configured order: base,
    then sft, then dpo), any other after them by name."""
    metrics = layout.variant_metrics(variant)
    listed = list((read_json(metrics).get("models") or {}) if metrics.exists() else {})
    rank = {name: i for i, name in enumerate(listed)}
    return sorted(files, key=lambda f: (rank.get(f.stem, len(rank)), f.stem))


def _number(value: Any) -> float | int | None:
    """A score or probability for JSON: a boolean verdict as 1/0, nothing that is not finite."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def benchmark_rows(layout: RunLayout) -> list[dict[str, Any]]:
    """One row per recorded (variant, model, persona, turn): the record a reader of the
    evaluation uses (the first of a turn), read with the evaluation's own schema."""
    from aloe.schemas import record_check

    rows = []
    for variant, folder in variants(layout):
        protocol = protocols.of_variant(variant)
        for file in _model_order(layout, variant, _model_files(folder)):
            seen: set[tuple[str, int]] = set()
            records = read_records(file, check=record_check(protocol, file.stem))
            for r in sorted(records, key=lambda r: int(r["turn"])):  # stable: first kept
                key = (str(r["persona_id"]), int(r["turn"]))
                if key in seen:
                    continue
                seen.add(key)
                rows.append({"variant": variant, "model": file.stem, "persona": key[0],
                             "turn": key[1], "user": _text(r.get("user")),
                             "reply": _text(r.get("reply")), "score": _number(r.get("score")),
                             "expected": _number(r.get("expected_score")),
                             "reason": _text(r.get("raw_judgement")),
                             "attempts": r.get("judge_attempts"),
                             "truncated": bool(r.get("truncated")),
                             "shifted": bool(r.get("shifted")),
                             "users": _text(r.get("user_source"))})
    # each model's conversations one after another, personas in the order they were first met
    # (the benchmark's: stage 5 appends a turn of every conversation at once)
    persona_rank = {pid: i for i, pid in enumerate(dict.fromkeys(r["persona"] for r in rows))}
    groups = list(dict.fromkeys((r["variant"], r["model"]) for r in rows))
    return sorted(rows, key=lambda r: (groups.index((r["variant"], r["model"])),
                                       persona_rank[r["persona"]], r["turn"]))


def _verdict(t: Mapping[str, Any]) -> dict[str, Any]:
    verdict = t.get("verdict") or {}
    votes = []
    for vote in verdict.get("votes") or []:
        texts = vote.get("text") or []
        texts = [texts] if isinstance(texts, str) else texts
        votes.append({"first": _text((vote.get("order") or [None])[0]),
                      "pick": _text(vote.get("pick")), "p_hinted": _number(vote.get("p_hinted")),
                      "answers": [str(x) for x in texts]})
    return {"preferred": _text(verdict.get("preferred")), "rule": _text(verdict.get("rule")),
            "note": _text(verdict.get("note")), "p_hinted": _number(verdict.get("p_hinted")),
            "votes": votes}


def tree_rows(layout: RunLayout) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """One row per turn of every conversation tree (in the stage's order), and the training
    personas they talk with (id: profile and personality). A conversation the released
    protocol dropped gets a row saying why, after the turns it had."""
    conversations = sorted(read_records(layout.conversations, check=conversation_check()),
                           key=lambda r: (r.get("index", 0), r["id"]))
    rows: list[dict[str, Any]] = []
    personas: dict[str, dict[str, str]] = {}
    for c in conversations:
        persona = c.get("persona") or {}
        pid = str(persona.get("id", ""))
        personas.setdefault(pid, {"profile": str(persona.get("profile", "")),
                                  "personality": str(persona.get("personality", ""))})
        model = str(((c.get("models") or {}).get("assistant") or {}).get("model") or "")
        model = Path(model).name if manifest.is_machine_path(model) else model  # no local path
        for t in c["turns"]:
            inferred = t.get("inferred") or {}
            rows.append({"conv": c["id"], "persona": pid, "model": model,
                         "turn": t.get("turn"), "user": _text(t.get("user")),
                         "parsed": bool(inferred.get("parsed", True)),
                         "inferred_profile": _text(inferred.get("profile")),
                         "inferred_personality": _text(inferred.get("personality")),
                         "hinted": _text(t.get("hinted")), "plain": _text(t.get("plain")),
                         "continued": _text(t.get("continued_with")), **_verdict(t)})
        if c.get("dropped"):
            rows.append({"conv": c["id"], "persona": pid, "model": model, "turn": None,
                         "dropped": str(c["dropped"]), "preferred": "dropped"})
    return rows, personas


def benchmark_personas(layout: RunLayout,
                       params: Params | None = None) -> dict[str, dict[str, str]]:
    """The benchmark personas' texts by id: the configured benchmark's when `params` is given
    (the official files for `evaluation.benchmark: aloe`), else the run's benchmark.jsonl; {}
    when neither can be read (the rows are shown without them)."""
    from aloe.errors import AloeError

    found: list[dict[str, Any]] = []
    e = params.evaluation if params is not None else None
    remote = e is not None and any(str(source).startswith(("http://", "https://"))
                                   for source in (e.aloe_profiles, e.aloe_personalities)
                                   if isinstance(source, str))
    if params is not None and not remote:  # the page is made offline: no file is fetched
        from aloe.evaluation import benchmark_personas as configured

        try:
            found = configured(params)
        except (AloeError, OSError, ValueError):
            found = []
    if not found and layout.benchmark.exists():
        found = read_records(layout.benchmark, check=persona_check())
    return {str(p["id"]): {"profile": str(p.get("profile", "")),
                           "personality": str(p.get("personality", ""))} for p in found}


def scales(names: Sequence[str]) -> dict[str, list[int]]:
    """Each variant's score categories (ALOE's 1-5, RLPA's 0/1)."""
    return {name: protocols.get(name.split("-")[0]).categories for name in names}


def viewer_data(layout: RunLayout, params: Params | None = None) -> dict[str, Any]:
    """Everything the page shows, as one JSON-ready mapping."""
    bench = benchmark_rows(layout)
    trees, train_personas = tree_rows(layout)
    names = [name for name, _ in variants(layout)]
    return {"run": layout.run_dir.name, "page_rows": PAGE_ROWS, "scales": scales(names),
            "benchmark": bench, "trees": trees,
            "personas": {"benchmark": benchmark_personas(layout, params) if bench else {},
                         "training": train_personas}}


# ------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------
def write_viewer(layout: RunLayout, params: Params | None = None,
                 title: str | None = None) -> Path:
    """Write RUN/viewer.html from the run's files (whole or not at all); its path."""
    title = title or f"Transcripts: {layout.run_dir.name}"
    page = render_viewer(viewer_data(layout, params), title)
    replace_file(layout.viewer, lambda handle: handle.write(page), sync=False)
    return layout.viewer


def link_html(layout: RunLayout) -> str:
    """A link to the viewer, relative to the run folder (where report.html is); '' when the
    run has no viewer page."""
    if not layout.viewer.exists():
        return ""
    return (f"<a href='{html.escape(layout.viewer.name)}'>every conversation and training "
            "tree, filterable (the transcript viewer)</a>")


def render_viewer(data: Mapping[str, Any], title: str) -> str:
    """The page: inline style, inline data, inline script; no URL anywhere."""
    n_bench, n_trees = len(data["benchmark"]), len(data["trees"])
    conversations = len({(r["variant"], r["model"], r["persona"]) for r in data["benchmark"]})
    trees = len({r["conv"] for r in data["trees"]})
    return (_PAGE.replace("__TITLE__", html.escape(title))
            .replace("__SUMMARY__", html.escape(
                f"{conversations:,} benchmark conversations ({n_bench:,} turns) and "
                f"{trees:,} training trees ({n_trees:,} turns)."))
            .replace("__DATA__", script_json(data))
            .replace("__SCRIPT__", _SCRIPT))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;font-size:14px;line-height:1.4;margin:1em 1.5em;color:#222}
h1{font-size:22px;margin:0 0 4px}
.lead{color:#555;margin:0 0 10px}
nav.tabs button{font-size:14px;padding:5px 12px;border:1px solid #999;background:#f4f4f4;
  border-radius:6px 6px 0 0;cursor:pointer}
nav.tabs button[aria-selected=true]{background:#fff;border-bottom-color:#fff;font-weight:600}
section.view{border-top:1px solid #999;padding-top:8px}
.filters{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:center;margin:4px 0 8px}
.filters label{white-space:nowrap}
.filters select{font-size:13px;max-width:16em}
.filters input{font-size:13px;width:18em}
.status{font-weight:600;margin:4px 0}
.persona{background:#f6f6f0;border-left:4px solid #bba;padding:4px 10px;margin:6px 0}
table.rows{border-collapse:collapse;width:100%;table-layout:fixed}
table.rows th{text-align:left;background:#eee;padding:4px 6px;position:sticky;top:0}
table.rows td{vertical-align:top;padding:5px 6px;border-top:1px solid #ddd;
  white-space:pre-wrap;overflow-wrap:anywhere}
table.rows col.meta{width:11em}
table.rows col.judge,table.rows col.verdict{width:22%}
.meta .sub{color:#666;font-size:12px}
button.link{background:none;border:none;padding:0;color:#1a5fb4;text-decoration:underline;
  cursor:pointer;font:inherit}
.score{display:inline-block;min-width:1.6em;text-align:center;border-radius:4px;font-weight:700;
  padding:0 4px;margin-right:4px}
.s1{background:#f4c7c3}.s2{background:#fbe0c3}.s3{background:#fdf3c4}.s4{background:#d9f0c8}
.s5{background:#b7e1a1}.snone{background:#ddd}
.reason,.answer{color:#444;font-size:12.5px}
.flag{display:inline-block;font-size:11px;background:#eee;border-radius:4px;padding:0 5px;
  margin:0 3px 2px 0;white-space:nowrap}
.hint{color:#666;font-size:12.5px;margin-top:4px}
td.preferred{background:#fff8d6}
.badge{display:inline-block;font-size:11px;border-radius:4px;padding:0 5px;margin-right:3px;
  background:#fd6;white-space:nowrap}
.badge.cont{background:#cde9d6}
.empty{color:#666;font-style:italic}
.more{margin:8px 0}
</style></head>
<body>
<h1>__TITLE__</h1>
<p class="lead">__SUMMARY__ Every text an LLM wrote is shown as it was written. Filter with
the menus; a persona's id shows its whole conversation. This page works offline: it holds all
its data and fetches nothing.</p>
<noscript><p>This page draws its rows with JavaScript: allow scripts for this file to see
them.</p></noscript>
<nav class="tabs" role="tablist">
<button type="button" role="tab" id="tab-benchmark" aria-controls="benchmark">Benchmark
conversations (stage 5)</button>
<button type="button" role="tab" id="tab-trees" aria-controls="trees">Training trees
(stage 2)</button>
</nav>
<section class="view" id="benchmark" role="tabpanel">
<p>Each model talks with each benchmark persona; the judge scores every reply. One row per
turn: the user's message, the model's reply, the judge's score and its answer.</p>
<div class="filters" id="benchmark-filters"></div>
<p class="status" id="benchmark-status" aria-live="polite"></p>
<div id="benchmark-who"></div>
<table class="rows"><colgroup><col class="meta"><col><col><col class="judge"></colgroup>
<thead><tr><th>model · persona · turn</th><th>user message</th><th>reply</th>
<th>judge: score and answer</th></tr></thead><tbody id="benchmark-rows"></tbody></table>
<p class="more"><button type="button" id="benchmark-more" hidden></button></p>
</section>
<section class="view" id="trees" role="tabpanel">
<p>At every turn of a training conversation the assistant answers twice, with a hint of what
the user has revealed so far (hinted) and without (plain); the judge picks the reply the user
would prefer (highlighted); one of the two, drawn at random with the run's seed whatever the
verdict, continues the conversation.</p>
<div class="filters" id="trees-filters"></div>
<p class="status" id="trees-status" aria-live="polite"></p>
<div id="trees-who"></div>
<table class="rows"><colgroup><col class="meta"><col><col><col><col class="verdict">
</colgroup><thead><tr><th>conversation · persona · turn</th><th>user message</th>
<th>hinted reply</th><th>plain reply</th><th>verdict</th></tr></thead>
<tbody id="trees-rows"></tbody></table>
<p class="more"><button type="button" id="trees-more" hidden></button></p>
</section>
<script type="application/json" id="viewer-data">__DATA__</script>
<script>
__SCRIPT__
</script>
</body></html>
"""

# Every value from the data reaches the page through text nodes (`el`, `textContent`): never as
# markup, so no text an LLM wrote can add an element or run a script.
_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("viewer-data").textContent);
  var PAGE = data.page_rows;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      if (arguments[i]) { parent.appendChild(arguments[i]); }
    }
    return parent;
  }
  function count(n) { return n.toLocaleString("en-US"); }
  function distinct(rows, key) {
    var seen = {}, out = [];
    rows.forEach(function (r) {
      var v = r[key];
      if (v !== null && v !== undefined && !seen.hasOwnProperty(String(v))) {
        seen[String(v)] = true; out.push(v);
      }
    });
    return out;
  }
  function badge(score, scale) {  // coloured from the scale's floor (red) to its top (green)
    var top = scale ? scale[scale.length - 1] : 5, low = scale ? scale[0] : 1;
    var step = score === null ? "none" : Math.round(1 + 4 * (score - low) / ((top - low) || 1));
    return el("span", "score s" + step, score === null ? "–" : score);
  }
  function flag(text) { return el("span", "flag", text); }
  function missing(text) { return text === null || text === undefined ? "(not recorded)" : text; }

  // -- one filterable list --------------------------------------------------------------------
  function View(name, rows, noun, filters, draw, personas) {
    var self = this;
    this.name = name; this.rows = rows; this.noun = noun; this.draw = draw;
    this.personas = personas; this.controls = {}; this.shown = 0; this.matching = rows;
    var box = document.getElementById(name + "-filters");
    filters.forEach(function (f) {
      var select = el("select");
      select.id = name + "-" + f.key;
      select.setAttribute("data-filter", f.key);
      add(select, option("", "all"));
      f.values.forEach(function (v) { add(select, option(String(v), f.label(v))); });
      select.addEventListener("change", function () { self.apply(); });
      self.controls[f.key] = {node: select, match: f.match};
      var label = el("label", null, f.title + " ");
      add(box, add(label, select));
    });
    var search = el("input");
    search.type = "search"; search.id = name + "-search";
    search.placeholder = "words in a message, reply or answer";
    var timer = null;
    search.addEventListener("input", function () {
      clearTimeout(timer); timer = setTimeout(function () { self.apply(); }, 200);
    });
    this.search = search;
    add(box, add(el("label", null, "text "), search));
    var reset = el("button", null, "clear filters");
    reset.type = "button";
    reset.addEventListener("click", function () { self.set({}); });
    add(box, reset);
    this.body = document.getElementById(name + "-rows");
    this.status = document.getElementById(name + "-status");
    this.personaBox = document.getElementById(name + "-who");
    this.more = document.getElementById(name + "-more");
    this.more.addEventListener("click", function () { self.page(); });
    this.apply();
  }
  function option(value, text) {
    var node = el("option", null, text);
    node.value = value;
    return node;
  }
  View.prototype.set = function (values) {  // set several filters at once, the rest to all
    var self = this;
    Object.keys(this.controls).forEach(function (key) {
      self.controls[key].node.value = values.hasOwnProperty(key) ? String(values[key]) : "";
    });
    this.search.value = "";
    this.apply();
    this.status.scrollIntoView({block: "nearest"});
  };
  View.prototype.apply = function () {
    var self = this, wanted = [];
    Object.keys(this.controls).forEach(function (key) {
      var c = self.controls[key];
      if (c.node.value !== "") { wanted.push({value: c.node.value, match: c.match}); }
    });
    var words = this.search.value.trim().toLowerCase();
    this.matching = this.rows.filter(function (r) {
      for (var i = 0; i < wanted.length; i++) {
        if (!wanted[i].match(r, wanted[i].value)) { return false; }
      }
      return !words || self.haystack(r).indexOf(words) >= 0;
    });
    this.body.textContent = "";
    this.shown = 0;
    this.page();
    this.showPersona();
  };
  View.prototype.haystack = function (r) {
    if (r._text === undefined) {
      var parts = [];
      Object.keys(r).forEach(function (k) {
        var v = r[k];
        if (typeof v === "string") { parts.push(v); }
        else if (Array.isArray(v)) { parts.push(JSON.stringify(v)); }
      });
      Object.defineProperty(r, "_text", {value: parts.join("\n").toLowerCase()});
    }
    return r._text;
  };
  View.prototype.page = function () {
    var end = Math.min(this.shown + PAGE, this.matching.length);
    var fragment = document.createDocumentFragment();
    for (var i = this.shown; i < end; i++) {
      var tr = this.draw(this.matching[i], this);
      tr.className = (tr.className ? tr.className + " " : "") + "row";
      fragment.appendChild(tr);
    }
    this.body.appendChild(fragment);
    this.shown = end;
    var total = this.rows.length, n = this.matching.length;
    var text;
    if (!total) {
      text = "Nothing to show: " + (this.name === "benchmark"
        ? "the run has no evaluation records yet (stage 5)."
        : "the run has no conversation trees yet (stage 2).");
    } else if (n === total) {
      text = "Showing " + count(this.shown) + " of " + count(total) + " " + this.noun + ".";
    } else {
      text = "Showing " + count(this.shown) + " of " + count(n) + " matching " + this.noun +
        " (" + count(total) + " in all).";
    }
    this.status.textContent = text;
    var left = n - this.shown;
    this.more.hidden = left <= 0;
    this.more.textContent = "Show " + count(Math.min(PAGE, left)) + " more (" + count(left) +
      " not shown)";
  };
  View.prototype.showPersona = function () {
    this.personaBox.textContent = "";
    var id = this.controls.persona.node.value;
    var p = id ? this.personas[id] : null;
    if (!p) { return; }
    add(this.personaBox, add(el("div", "persona"),
      add(el("div"), el("b", null, "Persona " + id + ". "), el("i", null, "Profile: "),
          document.createTextNode(p.profile)),
      add(el("div"), el("i", null, "Personality: "), document.createTextNode(p.personality))));
  };

  function cell(cls) { return el("td", cls); }
  function personaLink(view, values, text) {
    var b = el("button", "link", text);
    b.type = "button";
    b.title = "show this whole conversation";
    b.addEventListener("click", function () { view.set(values); });
    return b;
  }

  // -- benchmark conversations ----------------------------------------------------------------
  function drawBenchmark(r, view) {
    var tr = el("tr");
    var meta = cell("meta");
    add(meta, el("div", null, r.model), personaLink(view, {variant: r.variant, model: r.model,
        persona: r.persona}, r.persona), el("div", null, "turn " + r.turn));
    if (multipleVariants) { add(meta, el("div", "sub", r.variant)); }
    if (r.users && r.users !== "live") { add(meta, el("div", "sub", "users: " + r.users)); }
    if (r.shifted) { add(meta, el("div", "sub", "after the preference shift")); }
    var reply = cell();
    add(reply, document.createTextNode(missing(r.reply)));
    if (r.truncated) { add(reply, el("div", "hint", "(cut at the token limit)")); }
    var judge = cell();
    add(judge, badge(r.score, data.scales[r.variant]));
    if (r.score === null) { add(judge, flag("no readable score")); }
    if (r.expected !== null) { add(judge, flag("expected " + r.expected.toFixed(2))); }
    if (r.attempts > 1) { add(judge, flag("asked " + r.attempts + " times")); }
    add(judge, el("div", "reason", missing(r.reason)));
    return add(tr, meta, add(cell(), document.createTextNode(missing(r.user))), reply, judge);
  }

  // -- training trees -------------------------------------------------------------------------
  var VERDICTS = {hinted: "hinted preferred", plain: "plain preferred",
                  inconsistent: "inconsistent (the votes disagree)",
                  unparseable: "unparseable (no vote read)", dropped: "conversation dropped"};
  function drawTree(r, view) {
    var tr = el("tr");
    var meta = cell("meta");
    add(meta, el("div", null, r.conv), personaLink(view, {persona: r.persona}, r.persona),
        el("div", null, r.turn === null ? "" : "turn " + r.turn),
        r.model ? el("div", "sub", r.model) : null);
    if (r.dropped) {
      var note = cell();
      note.colSpan = 4;
      add(note, el("b", null, "Dropped: "), document.createTextNode(r.dropped));
      return add(tr, meta, note);
    }
    var user = add(cell(), document.createTextNode(missing(r.user)));
    add(user, el("div", "hint", r.parsed
      ? "inferred so far: " + (r.inferred_profile || "none") + " / " +
        (r.inferred_personality || "none")
      : "inferred so far: (the inducer's answer could not be read)"));
    var branches = ["hinted", "plain"].map(function (b) {
      var td = cell(r.preferred === b ? "preferred" : null);
      if (r.preferred === b) { add(td, el("span", "badge", "preferred")); }
      if (r.continued === b) { add(td, el("span", "badge cont", "continued")); }
      if (r.preferred === b || r.continued === b) { add(td, el("br")); }
      add(td, document.createTextNode(missing(r[b])));
      return td;
    });
    var verdict = cell();
    add(verdict, el("b", null, VERDICTS[r.preferred] || String(r.preferred)),
        el("div", "sub", "rule: " + r.rule + (r.p_hinted !== null
          ? "; P(hinted) " + r.p_hinted.toFixed(2) : "")));
    if (r.note) { add(verdict, el("div", "sub", r.note)); }
    r.votes.forEach(function (v, i) {
      add(verdict, el("div", "answer", "vote " + (i + 1) + " (" + v.first + " shown first): " +
        (v.pick ? "picked " + v.pick : "no pick") + (v.answers.length
          ? " · answer: " + v.answers[v.answers.length - 1] : "")));
    });
    return add(tr, meta, user, branches[0], branches[1], verdict);
  }

  // -- the filters ----------------------------------------------------------------------------
  function same(key) {
    return function (r, value) { return String(r[key]) === value; };
  }
  function plain(v) { return String(v); }
  var bench = data.benchmark, trees = data.trees;
  var variantNames = Object.keys(data.scales);
  var multipleVariants = variantNames.length > 1;
  var scores = [];
  variantNames.forEach(function (v) {
    data.scales[v].forEach(function (s) { if (scores.indexOf(s) < 0) { scores.push(s); } });
  });
  scores.sort(function (a, b) { return a - b; });
  var benchFilters = [
    {key: "model", title: "model", values: distinct(bench, "model"), label: plain,
     match: same("model")},
    {key: "persona", title: "persona", values: distinct(bench, "persona"), label: plain,
     match: same("persona")},
    {key: "turn", title: "turn", values: distinct(bench, "turn").sort(function (a, b) {
      return a - b; }), label: plain, match: same("turn")},
    {key: "score", title: "score", values: scores.concat(["none"]),
     label: function (v) { return v === "none" ? "no score" : String(v); },
     match: function (r, v) { return v === "none" ? r.score === null : String(r.score) === v; }}];
  if (multipleVariants) {
    benchFilters.unshift({key: "variant", title: "evaluation", values: variantNames,
                          label: plain, match: same("variant")});
  }
  var treeFilters = [
    {key: "model", title: "assistant model", values: distinct(trees, "model"), label: plain,
     match: same("model")},
    {key: "persona", title: "persona", values: distinct(trees, "persona"), label: plain,
     match: same("persona")},
    {key: "turn", title: "turn", values: distinct(trees, "turn").sort(function (a, b) {
      return a - b; }), label: plain, match: same("turn")},
    {key: "verdict", title: "verdict", values: Object.keys(VERDICTS).filter(function (v) {
      return trees.some(function (r) { return r.preferred === v; }); }),
     label: function (v) { return VERDICTS[v]; }, match: same("preferred")}];

  var views = {
    benchmark: new View("benchmark", bench, "turns", benchFilters, drawBenchmark,
                        data.personas.benchmark),
    trees: new View("trees", trees, "turns", treeFilters, drawTree, data.personas.training)};
  window.aloeViewer = views;  // for a reader's console, and the page's tests

  function show(name) {
    Object.keys(views).forEach(function (key) {
      document.getElementById(key).hidden = key !== name;
      document.getElementById("tab-" + key).setAttribute("aria-selected", String(key === name));
    });
  }
  Object.keys(views).forEach(function (key) {
    document.getElementById("tab-" + key).addEventListener("click", function () { show(key); });
  });
  var asked = window.location.hash.replace("#", "");
  show(views.hasOwnProperty(asked) ? asked : (bench.length || !trees.length ? "benchmark"
                                                                              : "trees"));
})();
"""
