"""The transcript viewer (`aloe.presentation.viewer`) on a hand-made run folder whose files are in
the real formats (stage 5's records, stage 2's trees, read back with their own schemas): every turn
is a row, the filters work in real headless Chromium, LLM-written text runs nothing, a large run
draws a page of rows at a time, and the report links to the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aloe.core.layout import RunLayout, run_layout
from aloe.core.records import write_json, write_records
from aloe.presentation import viewer
from tests.support.browser import chromium_path, inspect_page

# What a hostile or broken LLM could write: markup that would run if it reached the page as HTML
SCRIPT = "<script>window.injected = 'script'; console.error('injected')</script>"
IMAGE = "<img src=x onerror=\"window.injected='img'; console.error('injected')\">"
CLOSING = "</script><script>window.injected = 'closed'</script>"
PAYLOAD = f"Sure! {SCRIPT} {IMAGE} {CLOSING} & <b>bold</b>"

BENCHMARK = [{"id": f"bench-{i:03d}", "profile_id": f"bp{i}", "personality_id": "bq0",
              "profile": f"A nurse in Lisbon who keeps bees (persona {i}).",
              "personality": "Direct, impatient with small talk."} for i in (1, 2)]
MODELS = ("base", "sft", "dpo")
TURNS = (1, 2)


def eval_record(model: str, persona: dict, turn: int, score: int | None,
                reply: str | None = None) -> dict:
    """A stage 5 record as `evaluation.dialogue.turn_record` writes it."""
    return {"model": model, "persona_id": persona["id"], "profile_id": persona["profile_id"],
            "turn": turn, "user": f"Turn {turn}: any tips for my hives in {persona['id']}?",
            "reply": reply or f"{model} says: check the brood every week ({turn}).",
            "truncated": turn == 2 and model == "base", "score": score,
            "raw_judgement": (f"Score: {score}. The reply ignores that the user is a nurse."
                              if score is not None else "I cannot rate this."),
            "judge_attempts": 1 if score is not None else 2, "protocol": "aloe",
            "user_source": "live", "shifted": False}


def tree(index: int, persona: dict, preferred: list[str], dropped: str | None = None) -> dict:
    """A stage 2 conversation tree as `Conversationist.conversation` writes it: the judge's one
    vote in a seeded order (`single_random`), or both orders disagreeing (`inconsistent`)."""
    def vote(order: list[str], pick: str) -> dict:
        number = order.index(pick) + 1
        return {"order": order, "text": [f"Reply {number}"], "choice": number, "pick": pick}

    turns = []
    for k, choice in enumerate(preferred, start=1):
        verdict = ({"rule": "both_orders", "preferred": choice,
                    "votes": [vote(["hinted", "plain"], "hinted"),
                              vote(["plain", "hinted"], "plain")]}
                   if choice == "inconsistent" else
                   {"rule": "single_random", "preferred": choice,
                    "votes": [vote(["plain", "hinted"], choice)]})
        turns.append({
            "turn": k, "user": f"Hi, turn {k}: I have a question about tea.",
            "inferred": {"profile": "likes tea" if k > 1 else None, "personality": None,
                         "parsed": True, "asked": 1, "raw": "Profile: likes tea"},
            "hinted": f"Hinted reply {index}.{k}: green tea suits you.",
            "plain": f"Plain reply {index}.{k}: tea is a drink.",
            "verdict": verdict, "continued_with": "plain"})
    record = {"id": f"conv-{index:05d}", "index": index, "persona": persona, "turns": turns,
              "judge_rule": "single_random", "prompt_style": "workbook", "seed": 0,
              "models": {role: {"model": "/home/me/models/SmolLM2-135M-Instruct",
                                "base_url": "local"}
                         for role in ("user", "inducer", "assistant", "judge")}}
    if dropped:
        record["dropped"] = dropped
    return record


def hand_made_run(run_dir: Path) -> RunLayout:
    """benchmark.jsonl, eval/{base,sft,dpo}.jsonl (2 personas x 2 turns; one reply carries the
    payloads, one score is missing), an RLPA variant, and three training trees (one dropped)."""
    layout = run_layout(run_dir)
    write_records(layout.benchmark, BENCHMARK)
    scores = {"base": [2, 3, 2, None], "sft": [3, 4, 3, 4], "dpo": [4, 5, 4, 5]}
    for model in MODELS:
        records = [eval_record(model, p, k, scores[model][2 * i + k - 1],
                               PAYLOAD if (model, p["id"], k) == ("dpo", "bench-002", 2) else None)
                   for i, p in enumerate(BENCHMARK) for k in TURNS]
        write_records(layout.eval_records(model), records)
    write_json(layout.variant_metrics(), {"models": {m: {} for m in MODELS}})
    rlpa = [{**eval_record("base", BENCHMARK[0], 1, 1), "protocol": "rlpa", "score": True}]
    write_records(layout.eval_records("base", "rlpa"), rlpa)
    write_records(layout.judge_check(), [{"persona_id": "bench-001", "turn": 1}])  # not a model
    training = [{"id": f"t{i}", "profile_id": f"tp{i}", "profile": f"Trainee {i} {PAYLOAD}",
                 "personality": "Curious."} for i in range(3)]
    write_records(layout.conversations, [
        tree(0, training[0], ["hinted", "plain"]),
        tree(1, training[1], ["inconsistent", "hinted"]),
        tree(2, training[2], [], dropped="turn 1: the inducer's answer could not be read")])
    return layout


def test_every_turn_is_a_row_read_with_the_files_schemas(tmp_path: Path) -> None:
    layout = hand_made_run(tmp_path / "run")
    data = viewer.viewer_data(layout)
    bench = data["benchmark"]
    assert len(bench) == 3 * 2 * 2 + 1  # three models x two personas x two turns, and RLPA
    assert [(r["model"], r["persona"], r["turn"]) for r in bench[:5]] == [
        ("base", "bench-001", 1), ("base", "bench-001", 2), ("base", "bench-002", 1),
        ("base", "bench-002", 2), ("sft", "bench-001", 1)]  # the configured model order
    assert bench[-1]["variant"] == "rlpa" and bench[-1]["score"] == 1  # a boolean verdict
    assert data["scales"] == {"aloe": [1, 2, 3, 4, 5], "rlpa": [0, 1]}
    missing = next(r for r in bench if r["score"] is None)
    assert missing["reason"] == "I cannot rate this." and missing["attempts"] == 2
    assert data["personas"]["benchmark"]["bench-001"]["profile"].startswith("A nurse")
    trees = data["trees"]
    assert len(trees) == 2 + 2 + 1  # the dropped conversation says why in a row of its own
    assert trees[0]["preferred"] == "hinted" and trees[0]["votes"][0]["answers"] == ["Reply 2"]
    assert trees[-1] == {"conv": "conv-00002", "persona": "t2", "turn": None,
                         "model": "SmolLM2-135M-Instruct",  # a local model by its name alone
                         "dropped": "turn 1: the inducer's answer could not be read",
                         "preferred": "dropped"}
    # a record that breaks stage 5's schema is refused with its file and line, as stage 5 does
    with open(layout.eval_records("sft"), "a") as handle:
        handle.write(json.dumps({**eval_record("sft", BENCHMARK[0], 3, 9)}) + "\n")
    with pytest.raises(Exception, match=r"sft\.jsonl:5: score 9 is not on the aloe"):
        viewer.viewer_data(layout)


def test_the_page_holds_everything_and_no_markup_from_the_data(tmp_path: Path) -> None:
    layout = hand_made_run(tmp_path / "run")
    page = viewer.write_viewer(layout).read_text()
    assert viewer.write_viewer(layout) == layout.viewer == tmp_path / "run" / "viewer.html"
    blob = page[page.index('id="viewer-data">'):page.index("</script>")]
    markup = page.replace(blob, "")
    assert "http" not in markup and " src=" not in markup and "<img" not in markup
    assert "/home/me" not in page  # no machine path
    for text in (SCRIPT, IMAGE, CLOSING, "<b>bold</b>", "</script><script>"):
        assert text not in page  # the data is JSON with <, > and & escaped
    assert page.count("<script") == 2  # the data and the page's own script, nothing else
    assert json.loads(blob.removeprefix('id="viewer-data">')) == json.loads(
        json.dumps(viewer.viewer_data(layout)))  # read back whole: the payloads as written
    assert "7 benchmark conversations (13 turns) and 3 training trees (5 turns)." in page


def test_an_empty_run_gives_a_page_that_says_so(tmp_path: Path) -> None:
    layout = run_layout(tmp_path / "empty")
    data = viewer.viewer_data(layout)
    assert data["benchmark"] == [] and data["trees"] == [] and data["scales"] == {}
    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    shown = inspect_page(viewer.write_viewer(layout), settle=1.0)
    assert shown.console_errors == [] and shown.failed_loads == []
    assert "the run has no evaluation records yet (stage 5)" in shown.text


def rows(view: str) -> str:
    """The number of rows the page shows in a view."""
    return f"document.querySelectorAll('#{view}-rows > tr.row').length"


def choose(view: str, key: str, value: str) -> str:
    """Pick a menu's value as a reader does (the control's value, then its change event); the
    rows then shown."""
    return (f"(() => {{ const s = document.getElementById('{view}-{key}'); s.value = "
            f"{json.dumps(value)}; s.dispatchEvent(new Event('change')); "
            f"return {rows(view)}; }})()")


def click(selector: str, then: str) -> str:
    return f"(() => {{ document.querySelector({json.dumps(selector)}).click(); return {then}; }})()"


def text(selector: str) -> str:
    return f"document.querySelector({json.dumps(selector)}).textContent"


def test_filters_work_and_nothing_a_model_wrote_runs_in_chromium(tmp_path: Path) -> None:
    """Real headless Chromium: the page's own menus set through the DevTools session, the
    rows then shown counted; the payloads shown as text, no element added, no script run."""
    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = viewer.write_viewer(hand_made_run(tmp_path / "run"))
    steps = {
        "all": rows("benchmark"), "status": text("#benchmark-status"),
        "aloe": choose("benchmark", "variant", "aloe"),  # 3 models x 2 personas x 2 turns
        "dpo": choose("benchmark", "model", "dpo"),
        "dpo turn 2": choose("benchmark", "turn", "2"),
        "dpo turn 2 scored 5": choose("benchmark", "score", "5"),
        "... with bench-002": choose("benchmark", "persona", "bench-002"),
        "status filtered": text("#benchmark-status"),
        "persona shown": text("#benchmark-who"),
        "scored 3": choose("benchmark", "score", "3"),
        "cleared": click("#benchmark-filters button", rows("benchmark")),
        "no score": choose("benchmark", "score", "none"),
        # a persona's id shows that model's whole conversation with the persona
        "conversation": click("#benchmark-rows button.link", rows("benchmark")),
        "its filters": "['model', 'persona', 'turn', 'score'].map(k => "
                       "document.getElementById('benchmark-' + k).value)",
        # the text box filters 0.2 s after the last keystroke
        "words": "(() => { const s = document.getElementById('benchmark-search');"
                 " s.value = 'Lisbon'; s.dispatchEvent(new Event('input'));"
                 " return new Promise(r => setTimeout(() => r(" + rows("benchmark") + "), 600));"
                 " })()",
        "trees": click("#tab-trees", "[document.getElementById('trees').hidden,"
                       " document.getElementById('benchmark').hidden, " + rows("trees") + "]"),
        "tree status": text("#trees-status"),
        "hinted preferred": choose("trees", "verdict", "hinted"),
        "... at turn 1": choose("trees", "turn", "1"),
        "any verdict at turn 1": choose("trees", "verdict", ""),
        "dropped": click("#trees-filters button", choose("trees", "verdict", "dropped")),
        "why": text("#trees-rows td[colspan]"),
        "t0": choose("trees", "verdict", "") + " && " + choose("trees", "persona", "t0"),
        "preferred cell": text("#trees-rows td.preferred"),
        "training persona": text("#trees-who"),
        "back": click("#tab-benchmark", click("#benchmark-filters button", "0")
                      + " || document.body.innerText.includes("
                      + json.dumps(SCRIPT) + ") && document.body.innerText.includes("
                      + json.dumps(IMAGE) + ")"),
        "nothing injected": "[document.images.length, document.scripts.length,"
                            " typeof window.injected, document.querySelectorAll('img').length]",
    }
    shown = inspect_page(page, settle=1.5, evaluate=list(steps.values()))
    got = dict(zip(steps, shown.evaluated))
    assert shown.console_errors == [] and shown.failed_loads == []
    assert got["all"] == 13 and got["status"] == "Showing 13 of 13 turns."
    assert (got["aloe"], got["dpo"], got["dpo turn 2"], got["dpo turn 2 scored 5"],
            got["... with bench-002"]) == (12, 4, 2, 2, 1)
    assert got["status filtered"] == "Showing 1 of 1 matching turns (13 in all)."
    assert got["persona shown"].startswith("Persona bench-002. Profile: A nurse in Lisbon")
    assert got["scored 3"] == 0 and got["cleared"] == 13 and got["no score"] == 1
    assert got["conversation"] == 2 and got["its filters"] == ["base", "bench-002", "", ""]
    assert got["words"] == 0  # persona texts are not searched; replies and messages are
    assert got["trees"] == [False, True, 5] and got["tree status"] == "Showing 5 of 5 turns."
    assert (got["hinted preferred"], got["... at turn 1"], got["any verdict at turn 1"],
            got["dropped"]) == (2, 1, 2, 1)
    assert got["why"] == "Dropped: turn 1: the inducer's answer could not be read"
    assert got["t0"] == 2
    assert got["preferred cell"] == "preferredHinted reply 0.1: green tea suits you."
    assert PAYLOAD in got["training persona"]
    assert got["back"] is True
    assert got["nothing injected"] == [0, 2, "undefined", 0]


def test_a_large_run_draws_a_page_of_rows_at_a_time(tmp_path: Path) -> None:
    """3,000 tree turns and 1,200 benchmark turns: 200 rows drawn per view, the status says
    how many of how many, "show more" draws the next 200; filtering stays instant."""
    layout = run_layout(tmp_path / "large")
    personas = [{**BENCHMARK[0], "id": f"bench-{i:03d}"} for i in range(40)]
    write_records(layout.benchmark, personas)
    for model in MODELS:
        write_records(layout.eval_records(model), [eval_record(model, p, k, 1 + (i + k) % 5)
                                                   for i, p in enumerate(personas)
                                                   for k in range(1, 11)])
    write_records(layout.conversations, [
        tree(i, {"id": f"t{i % 50}", "profile": "A baker.", "personality": "Shy."},
             ["hinted", "plain"] * 5) for i in range(300)])
    page = viewer.write_viewer(layout)
    assert viewer.viewer_data(layout)["page_rows"] == viewer.PAGE_ROWS == 200
    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    timed = ("(() => { const t = performance.now(); const n = " + choose("trees", "turn", "3")
             + "; return [n, performance.now() - t]; })()")
    shown = inspect_page(page, settle=2.0, evaluate=[
        rows("benchmark"), text("#benchmark-status"), text("#benchmark-more"),
        click("#benchmark-more", rows("benchmark")), text("#benchmark-status"),
        choose("benchmark", "model", "sft") + " && " + choose("benchmark", "turn", "10"),
        text("#benchmark-status"), "document.getElementById('benchmark-more').hidden",
        rows("trees"), text("#trees-status"), timed, text("#trees-status")])
    got = shown.evaluated
    assert shown.console_errors == [] and shown.failed_loads == []
    assert got[0] == 200 and got[1] == "Showing 200 of 1,200 turns."
    assert got[2] == "Show 200 more (1,000 not shown)"
    assert got[3] == 400 and got[4] == "Showing 400 of 1,200 turns."
    assert got[5] == 40 and got[6] == "Showing 40 of 40 matching turns (1,200 in all)."
    assert got[7] is True  # nothing left to show
    assert got[8] == 200 and got[9] == "Showing 200 of 3,000 turns."
    assert got[10][0] == 200 and got[10][1] < 1000  # milliseconds
    assert got[11] == "Showing 200 of 300 matching turns (3,000 in all)."


def test_aloe_view_writes_the_page_of_a_named_run(tmp_path: Path, capsys) -> None:
    from aloe.core.config import load_params
    from aloe.operations.cli import main
    from tests.conftest import write_params

    params_file = write_params(tmp_path, run={"name": "mine", "seed": 0,
                                              "output_dir": str(tmp_path / "outputs")})
    layout = hand_made_run(load_params(params_file).layout.run_dir)
    assert main(["view", str(params_file)]) == 0
    assert capsys.readouterr().out.strip().endswith("outputs/mine/viewer.html")
    assert "7 benchmark conversations (13 turns)" in layout.viewer.read_text()
    assert main(["view", str(params_file), "--run-name", "other"]) == 2  # no such run: refused
    assert "no run folder" in capsys.readouterr().err
    assert not (tmp_path / "outputs" / "other").exists()


def test_the_report_links_the_viewer_once_it_exists(tmp_path: Path) -> None:
    from aloe.presentation import report
    from tests.support.run_folders import hand_made_run as report_run

    params, found = report_run(tmp_path)
    assert "viewer.html" not in report.summary_html(params, found, None, [])
    viewer.write_viewer(params.layout, params)
    meta = report.summary_html(params, found, None, [])
    assert "<a href='viewer.html'>every conversation and training tree, filterable" in meta
