"""The human-rating kit: a blinded, self-contained HTML form of a sample of stage 5's replies,
the ratings file it saves, their import, and judge-human agreement in metrics.json.

The evaluated run is made against the stub server (a real process speaking the OpenAI
protocol) standing in for the models; the slow test fills the form in real headless Chromium
and imports the file the browser downloads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aloe import evaluation, ratings
from aloe.records import read_json, read_records
from tests.conftest import ROOT
from tests.support.stub_server import StubServer
from tests.test_evaluation_modes import stub_dict, with_benchmark


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, reference_dir):
    tmp_path = tmp_path_factory.mktemp("rated")
    with StubServer(seed=0) as stub:
        data = stub_dict(tmp_path, stub, human_sample=8)
        params, _ = with_benchmark(data, reference_dir)
        evaluation.run_stage(params)
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump(data, sort_keys=False))
        yield params, params_file


def rater_file(folder: Path, key: dict, rater: str, rate=lambda score: score) -> Path:
    path = folder / f"ratings-{key['kit']}-{rater}.json"
    path.write_text(json.dumps({"kit": key["kit"], "variant": key["variant"], "rater": rater,
                                "protocol": key["protocol"],
                                "ratings": {item: rate(k["judge_score"])
                                            for item, k in key["items"].items()}}))
    return path


def test_the_form_is_blinded_and_self_contained(evaluated) -> None:
    params, _ = evaluated
    form, key_path = ratings.export_kit(params)
    page = form.read_text()
    key = read_json(key_path)
    assert len(key["items"]) == 8 and key["categories"] == [1, 2, 3, 4, 5]
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|\bsrc=|@import|<link", page)
    records = {(r["model"], r["persona_id"], r["turn"]): r for r in evaluation.load_records(params)}
    for item, where in key["items"].items():
        record = records[(where["model"], where["persona_id"], where["turn"])]
        assert where["judge_score"] == record["score"]
        section = page.split(f'data-item="{item}"')[1].split("</section>")[0]
        assert record["reply"].replace("'", "&#x27;") in section
        assert "stub-a" not in section and "stub-b" not in section  # no model named
        assert "score" not in section.lower().replace("one overall score", "")
        assert section.count('type="radio"') == 5
    again, _ = ratings.export_kit(params)
    assert again.read_text() == page  # the same seeded kit


def test_ratings_import_and_judge_human_agreement(evaluated, tmp_path) -> None:
    params, params_file = evaluated
    ratings.export_kit(params)
    key = read_json(params.layout.rating_key())
    same = rater_file(tmp_path, key, "ann")
    off = rater_file(tmp_path, key, "bob", rate=lambda s: 6 - s)  # the scale read backwards
    result = subprocess.run([sys.executable, "-m", "aloe.cli", "ratings", "import",
                             str(params_file), str(same), str(off)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "ALOE_ROOT": str(ROOT)})
    assert result.returncode == 0, result.stderr
    kept = read_records(params.layout.human_ratings())
    assert len(kept) == 16 and {r["rater"] for r in kept} == {"ann", "bob"}
    human = json.loads(params.layout.metrics.read_text())["human_agreement"]
    assert human["n"] == 16 and human["raters"] == ["ann", "bob"]
    assert human["items_rated"] == 8
    # the wiring (issue 22): the judge against the people, not against itself: bob read the
    # scale backwards, so the two do not fully agree
    assert human["agreement"]["value"] < 1 and human["kappa"]["value"] < 1
    ann_only = ratings.import_ratings(params, [same])  # ann again: her ratings replaced
    assert len(read_records(ann_only)) == 16
    ratings.import_ratings(params, [rater_file(tmp_path, key, "bob")])  # bob agrees now
    agree = evaluation.human_agreement(params)
    assert agree["agreement"]["value"] == 1.0 and agree["weighted_kappa"]["value"] in (1.0, None)


def test_a_foreign_or_bad_ratings_file_is_refused(evaluated, tmp_path) -> None:
    params, _ = evaluated
    ratings.export_kit(params)
    key = read_json(params.layout.rating_key())
    other = {**key, "kit": "0000000000"}
    with pytest.raises(ratings.RatingsError, match="belongs to kit '0000000000'"):
        ratings.import_ratings(params, [rater_file(tmp_path, other, "eve")])
    with pytest.raises(ratings.RatingsError, match="has value 9; the kit asks for one of"):
        ratings.import_ratings(params, [rater_file(tmp_path, key, "eve", rate=lambda s: 9)])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ratings.RatingsError, match="not a ratings file the form saved"):
        ratings.import_ratings(params, [broken])
    # issue 27: `true` counted as the rating 1; a wrong shape or deep nesting was a traceback
    with pytest.raises(ratings.RatingsError, match="has value True; the kit asks for one of"):
        ratings.import_ratings(params, [rater_file(tmp_path, key, "eve", rate=lambda s: True)])
    good = json.loads(rater_file(tmp_path, key, "eve").read_text())
    for name, data, said in [
            ("list", {**good, "ratings": [1, 2]}, "'ratings' is list, not the form's mapping"),
            ("rater", {**good, "rater": ["eve"]}, "names no rater"),
            ("nested", None, "not a ratings file the form saved (nested too deeply)")]:
        shaped = tmp_path / f"{name}.json"
        shaped.write_text("[" * 100_000 + "]" * 100_000 if data is None else json.dumps(data))
        with pytest.raises(ratings.RatingsError) as error:
            ratings.import_ratings(params, [shaped])
        assert said in str(error.value) and "\n" not in str(error.value), name


def test_the_key_and_imported_ratings_off_their_schema_are_refused(evaluated, tmp_path,
                                                                    monkeypatch) -> None:
    """The kit's key and the imported ratings have their schemas (issue 27): a rating of 9 or
    `true`, or a rater's item twice, in ratings/VARIANT-human.jsonl is named by file and line
    wherever it is read (the agreement figures, the next import); a key whose categories or
    items were edited is refused naming the key; and neither file is written with such a
    value."""
    from aloe.records import DataError, SchemaError, write_records

    params, _ = evaluated
    path, key_path = params.layout.human_ratings(), params.layout.rating_key()
    before = path.read_bytes() if path.exists() else None
    ratings.export_kit(params)
    key = read_json(key_path)
    ratings.import_ratings(params, [rater_file(tmp_path, key, "ann")])
    kept = [r for r in read_records(path) if r["rater"] == "ann"]
    readers = [lambda: evaluation.human_agreement(params),
               lambda: ratings.import_ratings(params, [rater_file(tmp_path, key, "cat")])]
    first = kept[0]["item"]
    for bad, said in [({**kept[1], "rating": 9},
                       "rating 9 is not one of the kit's categories [1, 2, 3, 4, 5]"),
                      ({**kept[1], "rating": True},
                       "rating True is not one of the kit's categories [1, 2, 3, 4, 5]"),
                      ({**kept[1], "turn": "2"}, "turn '2' is not a turn number (1-1000)"),
                      (kept[0], f"the rating of item {first!r} by 'ann' is written twice "
                                "(first on line 1)")]:
        write_records(path, [kept[0], bad])
        for read in readers:
            with pytest.raises(DataError) as error:
                read()
            assert str(error.value) == (f"{path}:2: {said}; correct or remove the line (a "
                                        "rerun redoes what is removed)")
    write_records(path, kept)
    reply = next(iter(key["items"]))
    for edited, said in [
            ({**key, "categories": [1, 2, 3, 4, 5, 6]},
             "categories [1, 2, 3, 4, 5, 6] are not the protocol's [1, 2, 3, 4, 5]"),
            ({**key, "items": {**key["items"], reply: {**key["items"][reply], "turn": 0}}},
             f"item {reply!r}: turn 0 is not a turn number (1-1000)"),
            ({**key, "items": {**key["items"], reply: {**key["items"][reply],
                                                        "judge_score": 7}}},
             f"item {reply!r}: judge_score 7 is not one of the kit's categories "
             "[1, 2, 3, 4, 5]"),
            ({**key, "items": list(key["items"])}, "items ["),
            ([key], "a rating kit's key is an object, not list")]:
        key_path.write_text(json.dumps(edited))
        with pytest.raises(DataError) as error:
            ratings.import_ratings(params, [rater_file(tmp_path, key, "ann")])
        assert str(error.value).startswith(f"{key_path}: {said}"), str(error.value)
        assert str(error.value).endswith("; correct the file or write it again")
    ratings.export_kit(params)
    # the writers: an import never keeps a value outside the kit, an export never a key
    # that an import would refuse
    held, form = path.read_bytes(), params.layout.rating_form()
    monkeypatch.setattr(ratings, "read_ratings_file",
                        lambda file, key, variant: ("eve", {item: 9 for item in key["items"]}))
    with pytest.raises(SchemaError) as refused:
        ratings.import_ratings(params, [tmp_path / "eve.json"])
    assert str(refused.value).startswith(f"{path}: refusing to write a record that breaks its "
                                         "schema (rating 9 is not one of the kit's categories")
    assert path.read_bytes() == held
    kit, items = ratings.kit_items(params)
    items[0]["key"]["judge_score"] = 7
    monkeypatch.setattr(ratings, "kit_items", lambda params, size=None: (kit, items))
    key_path.unlink()
    form.unlink()
    with pytest.raises(SchemaError, match="judge_score 7 is not one of the kit's categories"):
        ratings.export_kit(params)
    assert not key_path.exists() and not form.exists()
    monkeypatch.undo()
    ratings.export_kit(params)
    if before is None:
        path.unlink()
    else:
        path.write_bytes(before)


@pytest.mark.slow
def test_a_person_fills_the_form_in_a_browser_and_the_download_imports(evaluated,
                                                                       tmp_path) -> None:
    """Real headless Chromium: the form opened from a file, every item rated by clicking, the
    rater's name typed, the button pressed; the browser's download is imported."""
    from tests.support.browser import chromium_path

    browser = chromium_path()
    if browser is None:
        pytest.skip("no chromium on this machine (make test installs Debian's as root)")
    import websocket

    from tests.support import browser as devtools

    params, _ = evaluated
    form, _ = ratings.export_kit(params)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    port = devtools._free_port()
    profile = tmp_path / "profile"
    process = subprocess.Popen([browser, *devtools.CHROMIUM_FLAGS,
                                f"--remote-debugging-port={port}",
                                f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                pages = httpx.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
                target = next(p for p in pages if p.get("type") == "page")
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        tools = devtools._DevTools(target["webSocketDebuggerUrl"])
        tools.call("Browser.setDownloadBehavior", behavior="allow",
                   downloadPath=str(downloads))
        tools.call("Page.enable")
        tools.call("Page.navigate", url=form.as_uri())
        time.sleep(1.0)
        script = """
          document.querySelectorAll('section.item[data-item]').forEach(function (s, i) {
            var boxes = s.querySelectorAll('input[type=radio]');
            boxes[(i % boxes.length)].click();
          });
          document.getElementById('rater').value = 'Tess';
          document.getElementById('save').click();
          document.getElementById('status').textContent;"""
        answer = tools.call("Runtime.evaluate", expression=script, returnByValue=True)
        deadline = time.monotonic() + 30
        while not list(downloads.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
        saved = list(downloads.glob("*.json"))
        assert len(saved) == 1 and saved[0].name.endswith("-Tess.json"), answer
        tools.ws.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
    path = ratings.import_ratings(params, saved)
    kept = [r for r in read_records(path) if r["rater"] == "Tess"]
    assert len(kept) == params.evaluation.human_sample
    assert {r["rating"] for r in kept} <= {1, 2, 3, 4, 5}
    assert websocket  # the DevTools client the browser helper uses
