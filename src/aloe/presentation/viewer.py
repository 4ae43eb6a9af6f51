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
(`aloe.presentation.tables.script_json`): a reply holding `<script>` shows as that text and runs
nothing.

`write_viewer` is called by the report notebook (06) before the summary, and by
`aloe view RUN`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aloe.core import manifest, protocols
from aloe.core.layout import DEFAULT_VARIANT, RunLayout
from aloe.core.records import read_json, read_records, replace_file
from aloe.core.schemas import conversation_check, persona_check
from aloe.presentation import pages
from aloe.presentation.tables import script_json

if TYPE_CHECKING:
    from aloe.core.config import Params

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
    from aloe.core.schemas import record_check

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
    from aloe.core.errors import AloeError

    found: list[dict[str, Any]] = []
    e = params.evaluation if params is not None else None
    remote = e is not None and any(str(source).startswith(("http://", "https://"))
                                   for source in (e.aloe_profiles, e.aloe_personalities)
                                   if isinstance(source, str))
    if params is not None and not remote:  # the page is made offline: no file is fetched
        from aloe.stages.evaluation import benchmark_personas as configured

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
    return (pages.read("viewer.html").replace("__TITLE__", html.escape(title))
            .replace("__SUMMARY__", html.escape(
                f"{conversations:,} benchmark conversations ({n_bench:,} turns) and "
                f"{trees:,} training trees ({n_trees:,} turns)."))
            .replace("__DATA__", script_json(data))
            .replace("__SCRIPT__", pages.read("viewer.js")))



