"""The whole workbook, end to end, as a user runs it (`aloe run`), and the failure drills.

One real run of every notebook against the real local model is shared by the tests of this
module, and it is the drills' subject too:

- it goes through a fault-injecting proxy that fails 30% of the LLM requests (429, 500,
  dropped connections): "a whole tiny run through a faulty network";
- it is killed (SIGKILL of the runner and its notebook kernel, as a crash would) once during
  stage 2 and once during stage 5, and each time the same command is run again, as a user
  would: nothing finished before a kill is done again or lost, nothing is written twice.

The other drills (a truncated JSONL line, two runs at once) work on copies of its run folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import psutil
import pytest
import yaml

from aloe.core.config import load_params
from aloe.core.layout import RunLayout
from aloe.core.local_model import EMBEDDED_HUB_ID
from aloe.core.records import read_records
from aloe.llm import load_usage_history
from aloe.llm.cache import ResponseCache
from aloe.llm.server import start_server
from aloe.operations.runner import notebooks
from aloe.presentation.report import product_counts
from tests.conftest import ROOT, tiny_dict
from tests.support.browser import chromium_path, inspect_page
from tests.support.fault_proxy import FaultProxy
from tests.support.pages import param_diff_rows

# pytest-timeout's limit (pyproject.toml: 1,200 s a test) counts a fixture's set-up in the first
# test that uses it: the drill's one run took 560-610 s alone and up to 1,086 s beside the other
# worker's modules (docs/development.md), so its tests get twice the limit.
pytestmark = [pytest.mark.slow, pytest.mark.workbook, pytest.mark.timeout(2400)]

STAGE_PRODUCTS = ["profiles.jsonl", "personalities.jsonl", "personas.jsonl", "benchmark.jsonl"]
TERMINAL = "terminal.log"  # what the runs printed, live progress included (not --quiet)


@dataclass
class Kill:
    """What a run held when it was killed."""
    stage: str
    progress_file: str
    records_before: list[dict]  # the killed stage's records written before the kill
    finished_before: dict[str, bytes]  # earlier stages' products, byte for byte


@dataclass
class FinishedRun:
    root: Path  # a project folder of its own: params/, notebooks/ (linked), outputs/
    params_file: Path
    data: dict
    proxy: FaultProxy
    last: subprocess.CompletedProcess[str]  # the run that finished, after the two kills
    kills: list[Kill] = field(default_factory=list)
    faults_before_last: int = 0  # the proxy's faults before the last run started
    entries_before_last: int = 0  # usage history entries before the last run started

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def run_dir(self) -> Path:
        return self.outputs / self.data["run"]["name"]

    @property
    def layout(self) -> RunLayout:
        return RunLayout(run_dir=self.run_dir, cache_path=Path(self.data["run"]["cache_path"]))

    @property
    def training_notebooks(self) -> Path:
        """Notebooks 03-04 (04_dpo, 04_grpo) as the session that trained wrote them (the last
        run skips training and writes its own copies over them)."""
        return self.root / "notebooks_that_trained"


def aloe_run(root: Path, *args: str, timeout: float = 1500,
             quiet: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALOE_ROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "aloe", "run", *args,
                           *(["--quiet"] if quiet else [])], cwd=root,
                          env=env, capture_output=True, text=True, timeout=timeout)


def start_aloe_run(root: Path, *args: str, terminal: Path | None = None) -> subprocess.Popen[str]:
    """`aloe run` in the background; with `terminal`, what it prints (its live progress
    included) goes to that file, else it runs --quiet."""
    env = {**os.environ, "ALOE_ROOT": str(root)}
    command = [sys.executable, "-m", "aloe", "run", *args, *([] if terminal else ["--quiet"])]
    with open(terminal or os.devnull, "a") as stdout:  # the child keeps its own copy
        return subprocess.Popen(command, cwd=root, env=env, stdout=stdout,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)


def crash(process: subprocess.Popen[str]) -> None:
    """SIGKILL the runner and everything under it at once, its notebook kernel included (a
    kernel runs in a session of its own, so killing the runner's group would spare it)."""
    victims = [psutil.Process(process.pid)]
    victims += victims[0].children(recursive=True)
    for victim in victims:
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=60)
    process.wait(timeout=60)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def whole_lines(path: Path) -> int:
    """Complete records in a JSONL file that another process is writing (never repairs)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def usage_entries(run_dir: Path) -> list[dict]:
    return read_records(run_dir / "usage" / "history.jsonl")


def cached_answers(cache: Path) -> int:
    """How many answers the response cache holds (0 before it exists); read while the run
    writes to it (WAL)."""
    if not cache.exists():
        return 0
    with contextlib.closing(ResponseCache(cache)) as answers:
        return len(answers)


class MidWork:
    """True once the stage has written a record and the cache has an answer that came after
    the newest record: a unit of work (a conversation, a dialogue) is then cut short with
    answers already cached, whatever the timing. Two conversations that finish together
    (both written between two looks) are not taken for that: the look waits for an answer
    after them."""

    def __init__(self, progress: Path, cache: Path) -> None:
        self.progress, self.cache = progress, cache
        self.records, self.answers_then = 0, 0

    def __call__(self) -> bool:
        records = whole_lines(self.progress)
        answers = cached_answers(self.cache)
        if records != self.records:
            self.records, self.answers_then = records, answers
            return False
        return records >= 1 and answers > self.answers_then


def kill_during(root: Path, params: str, run_dir: Path, stage: str, progress_file: str,
                finished_products: list[str], cache: Path) -> Kill:
    """Start the run, SIGKILL it in the middle of the stage's work (`MidWork`: a record
    written and an answer cached after it), and say what the run held at that moment. What
    the run prints goes to `root/terminal.log`."""
    process = start_aloe_run(root, params, terminal=root / TERMINAL)
    progress = run_dir / progress_file
    mid_work = MidWork(progress, cache)
    wait_for(lambda: mid_work() or process.poll() is not None, timeout=1500,
             what=f"a record of {progress_file} and an answer cached after it")
    assert process.poll() is None, f"the run ended before stage {stage} could be killed: " + \
        (process.stderr.read() if process.stderr else "")[-3000:]
    crash(process)
    return Kill(stage, progress_file, read_records(progress),
                {name: (run_dir / name).read_bytes() for name in finished_products})


def copy_run(run: FinishedRun, name: str, cache: str | None = None, **sections: dict) -> Path:
    """A copy of the finished run folder under another run name, with its own params file."""
    shutil.copytree(run.run_dir, run.outputs / name, ignore=shutil.ignore_patterns(".lock"))
    data = json.loads(json.dumps(run.data))
    data["run"]["name"] = name
    if cache:
        data["run"]["cache_path"] = cache
    for section, values in sections.items():
        data[section].update(values)
    path = run.root / "params" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, local_server) -> Iterator[FinishedRun]:
    """The tiny profile through a 30% faulty proxy in front of two servers: killed in stage 2,
    run again, killed in stage 5, run again to the end."""
    root = tmp_path_factory.mktemp("workbook")
    (root / "params").mkdir()
    (root / "notebooks").symlink_to(ROOT / "notebooks")
    # a second server of the model, as the tiny profile's `local_model.servers: 2` starts: the
    # proxy forwards each request to whichever is free, one at a time each
    second = start_server(Path(local_server.model), root / "second_server.log", timeout=600)
    try:
        with FaultProxy([local_server.base_url, second.base_url], rate=0.3, seed=7,
                        one_at_a_time=True) as proxy:
            data = tiny_dict(root)
            data["run"]["cache_path"] = str(root / "outputs" / "cache" / "llm.sqlite")
            for role in data["roles"].values():
                role.update(base_url=proxy.base_url, model=local_server.model, max_retries=10)
            params_file = root / "params" / "tiny.yaml"
            params_file.write_text(yaml.safe_dump(data, sort_keys=False))
            run_dir = root / "outputs" / data["run"]["name"]
            cache = Path(data["run"]["cache_path"])
            kills = [kill_during(root, "params/tiny.yaml", run_dir, "02_conversations",
                                 "conversations.jsonl", STAGE_PRODUCTS, cache),
                     kill_during(root, "params/tiny.yaml", run_dir, "05_evaluate",
                                 "eval/base.jsonl", [*STAGE_PRODUCTS, "conversations.jsonl",
                                                     "adapters/sft/adapter_model.safetensors",
                                                     "adapters/dpo/adapter_model.safetensors"],
                                 cache)]
            faults, entries = proxy.total_faults, len(usage_entries(run_dir))
            kept = root / "notebooks_that_trained"
            kept.mkdir()
            for name in ("03_sft.ipynb", "04_dpo.ipynb", "04_grpo.ipynb"):
                shutil.copy2(run_dir / "notebooks" / name, kept / name)
            last = aloe_run(root, "params/tiny.yaml", quiet=False)
            assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]
            with open(root / TERMINAL, "a") as terminal:
                terminal.write(last.stdout)
            yield FinishedRun(root, params_file, data, proxy, last, kills, faults, entries)
    finally:
        second.stop()


# ------------------------------------------------------------------------------------------
# The run and its products
# ------------------------------------------------------------------------------------------
def test_every_stage_ran_through_a_faulty_network(finished: FinishedRun) -> None:
    executed = sorted(p.name for p in (finished.run_dir / "notebooks").glob("*.ipynb"))
    assert executed == [p.name for p in notebooks(ROOT)]  # the workbook: 07_compare is not run
    assert "total" in finished.last.stdout and "report.html" in finished.last.stdout
    assert finished.proxy.total_faults > 10  # the proxy really failed requests ...
    # ... and every fault the last run met was retried (a killed session's usage dies with it)
    last_entries = usage_entries(finished.run_dir)[finished.entries_before_last:]
    retries = sum(role["retries"] for entry in last_entries for role in entry["roles"].values())
    failures = sum(role["failures"] for entry in usage_entries(finished.run_dir)
                   for role in entry["roles"].values())
    faults_in_last = finished.proxy.total_faults - finished.faults_before_last
    assert faults_in_last > 0 and retries >= faults_in_last and failures == 0
    # what the two killed sessions had spent is in the usage history all the same
    interrupted = [e["stage"] for e in load_usage_history(finished.layout)
                   if e.get("interrupted")]
    assert "conversations" in interrupted and "evaluate" in interrupted


def test_products_are_consistent_with_each_other(finished: FinishedRun) -> None:
    run_dir, data = finished.run_dir, finished.data
    profiles = {r["id"] for r in read_records(run_dir / "profiles.jsonl")}
    personalities = {r["id"] for r in read_records(run_dir / "personalities.jsonl")}
    personas = read_records(run_dir / "personas.jsonl")
    assert personas and all(p["profile_id"] in profiles and p["personality_id"] in personalities
                            for p in personas)
    assert len({p["id"] for p in personas}) == len(personas)

    conversations = read_records(run_dir / "conversations.jsonl")
    assert len(conversations) == data["conversations"]["n_conversations"]
    assert len({c["id"] for c in conversations}) == len(conversations)
    persona_ids = {p["id"] for p in personas}
    assert all(c["persona"]["id"] in persona_ids for c in conversations)
    assert all(len(c["turns"]) == data["conversations"]["turns"] for c in conversations)

    def exportable(turn: dict) -> bool:  # a decided preference for a reply that differs
        preferred = turn["verdict"]["preferred"]
        if preferred not in ("hinted", "plain"):
            return False
        other = "plain" if preferred == "hinted" else "hinted"
        return turn[preferred].strip() not in ("", turn[other].strip())

    decided = sum(exportable(t) for c in conversations for t in c["turns"])
    counts = product_counts(finished.layout)
    sft_rows = counts.get("sft train examples", 0) + counts.get("sft validation examples", 0)
    dpo_rows = counts.get("dpo train examples", 0) + counts.get("dpo validation examples", 0)
    assert sft_rows == dpo_rows == decided > 0
    assert counts["sft adapter"] == counts["dpo adapter"] == 1

    benchmark = read_records(run_dir / "benchmark.jsonl")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for model in ("base", "sft", "dpo"):
        records = read_records(run_dir / "eval" / f"{model}.jsonl")
        assert len(records) == len(benchmark) * data["evaluation"]["turns"]
        assert len({(r["persona_id"], r["turn"]) for r in records}) == len(records)
    assert set(metrics["models"]) >= {"base", "sft", "dpo"}


def test_report_counts_match_the_files(finished: FinishedRun) -> None:
    html = (finished.run_dir / "report.html").read_text()
    counts = product_counts(finished.layout)
    assert counts["conversations"] > 0
    for product, count in counts.items():
        cell = re.compile(rf"<th>{re.escape(product)}</th>\s*<td>{count}</td>")
        assert cell.search(html), f"report does not show {product} = {count}"


def need_chromium() -> None:
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: `make test` installs it (make browser)")
        pytest.skip("chromium is not installed (apt-get install chromium)")


def head_commit() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def test_report_renders_in_headless_chromium(finished: FinishedRun) -> None:
    need_chromium()
    page = inspect_page(finished.run_dir / "report.html")
    assert page.console_errors == [] and page.failed_loads == []
    assert page.title == load_params(finished.params_file).report.heading(
        finished.data["run"]["name"])
    assert len(page.images) >= 10  # pool, conversations, training, benchmark, usage figures
    for image in page.images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert "def " not in (finished.run_dir / "report.html").read_text()  # code is hidden
    # the report links the transcript viewer, written beside it, which lists every tree turn
    assert re.search(r"<a href=[\"']viewer\.html[\"']>",  # nbconvert writes "", report.py ''
                     (finished.run_dir / "report.html").read_text())
    shown = inspect_page(finished.layout.viewer, evaluate=[
        "document.getElementById('trees-status').textContent"])
    assert shown.console_errors == [] and shown.failed_loads == []
    turns = product_counts(finished.layout)["conversation turns"]
    assert shown.evaluated == [f"Showing {min(turns, 200):,} of {turns:,} turns."]
    assert str(finished.root) not in finished.layout.viewer.read_text()  # no machine path


# What a notebook may write to stderr: the workbook's own log lines (notebooks 03-04 log at
# INFO) and the notice that a line cut by a kill was repaired. Anything else fails the test.
ALLOWED_STDERR = (re.compile(r"aloe\.[\w.]+: "),
                  re.compile(r"repaired .+: dropped the truncated line \d+ left by an "
                             r"interrupted write$"))
NEVER = ("Event loop is closed", "Unclosed client session", "Unclosed connector", "Traceback",
         "Warning:", "warnings.warn")
MAX_STDOUT_LINES = 60  # per cell: a text progress bar leaves hundreds


def _unexpected(notebook: Path) -> list[str]:
    """Every output of an executed notebook that a reader should not find in it."""
    found = []
    for number, cell in enumerate(nbformat.read(notebook, as_version=4).cells):
        where = f"{notebook.name} cell {number}"
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                found.append(f"{where}: {output['ename']}: {output['evalue'][:200]}")
                continue
            text = output.get("text", "") if output["output_type"] == "stream" else \
                str(output.get("data", {}).get("text/plain", ""))
            found += [f"{where}: {word!r} in {text[:200]!r}" for word in NEVER if word in text]
            if output["output_type"] != "stream":
                continue
            lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
            if output["name"] == "stderr":
                found += [f"{where} stderr: {line[:200]!r}" for line in lines
                          if not any(p.match(line) for p in ALLOWED_STDERR)]
            elif len(lines) > MAX_STDOUT_LINES:
                found.append(f"{where}: {len(lines)} lines of stdout: {lines[-1][:100]!r}")
    return found


def test_executed_notebooks_hold_no_unexpected_stderr_warning_or_traceback(
        finished: FinishedRun) -> None:
    notebooks = sorted((finished.run_dir / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 8
    trained = sorted(finished.training_notebooks.glob("*.ipynb"))
    assert [nb.name for nb in trained] == ["03_sft.ipynb", "04_dpo.ipynb", "04_grpo.ipynb"]
    problems = [problem for notebook in [*notebooks, *trained] for problem in _unexpected(notebook)]
    assert not problems, "\n".join(problems)
    progress_bars = [o for nb in notebooks for c in nbformat.read(nb, as_version=4).cells
                     for o in c.get("outputs", [])
                     if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert progress_bars  # tqdm found ipywidgets: each bar is one live widget, not text lines


def test_executed_notebooks_print_no_machine_path(finished: FinishedRun) -> None:
    """What the notebooks print names files as the report does (relative to the project),
    never by a machine path."""
    roots = {str(finished.root), str(finished.root.resolve()), str(ROOT)}
    for notebook in sorted((finished.run_dir / "notebooks").glob("*.ipynb")):
        for number, cell in enumerate(nbformat.read(notebook, as_version=4).cells):
            for output in cell.get("outputs", []):
                if output["output_type"] == "stream" and output["name"] == "stdout":
                    shown = [root for root in roots if root in output["text"]]
                    assert not shown, f"{notebook.name} cell {number} prints {shown[0]}"


def test_the_terminal_showed_live_progress_in_every_long_stage(finished: FinishedRun) -> None:
    """What the runs printed (not --quiet, not a terminal: plain lines) holds each long
    stage's progress line, as the issue words it."""
    lines = (finished.root / TERMINAL).read_text().splitlines()
    expected = {"01_personas": re.compile(r"^01_personas \d+ rounds · profiles \d+/\d+ · .* "
                                          r"\d+ requests · \$\d+\.\d\d"),
                "02_conversations": re.compile(r"^02_conversations \d+/4 conversations · "
                                               r"\d+ requests · \$\d+\.\d\d"),
                "03_sft": re.compile(r"^03_sft \d+/4 steps · "),
                "04_dpo": re.compile(r"^04_dpo \d+/4 steps · "),
                "04_grpo": re.compile(r"^04_grpo \d+/3 steps · "),
                "05_evaluate": re.compile(r"^05_evaluate \d+/\d+ turns · model \w+ · "
                                          r"turn \d/2 · \d+ requests")}
    for stage, pattern in expected.items():
        assert any(pattern.match(line) for line in lines), (
            stage, [line for line in lines if line.startswith(stage)])
    assert any(re.match(r"^0[34]_\w+ \d+/4 steps · loss \d+\.\d+ · [\d,]+ tokens/s", line)
               for line in lines)


def test_the_plans_ceiling_bounds_what_the_run_spent(finished: FinishedRun) -> None:
    """Every LLM stage spent no more requests and tokens than `aloe plan` gave as its
    ceiling (the ledgers count what the server's own tokenizer counted), kills and the
    faulty network's resent requests included; the forecast now names those ledgers."""
    from aloe.core.config import load_params
    from aloe.operations.plan import make_plan

    plan = make_plan(load_params(finished.params_file))
    spent: dict[str, dict[str, int]] = {}
    for entry in load_usage_history(finished.layout):
        totals = spent.setdefault(entry["stage"], {"requests": 0, "prompt_tokens": 0,
                                                   "completion_tokens": 0})
        for role in entry["roles"].values():
            for key in totals:
                totals[key] += role[key]
    for stage in ("personas", "conversations", "evaluate"):
        ceiling = {key: sum(r.ceiling.to_json()[key] for r in plan.roles if r.stage == stage)
                   for key in ("requests", "prompt_tokens", "completion_tokens")}
        assert 0 < spent[stage]["requests"], stage
        for key, value in spent[stage].items():
            assert value <= ceiling[key], (stage, key, value, ceiling[key])
    sources = {r.source for r in plan.roles if r.stage == "conversations"}
    assert all(source.startswith("measured: ") for source in sources), sources


def test_training_curves_are_written_for_tensorboard(finished: FinishedRun) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for stage in ("sft", "dpo"):
        folder = finished.run_dir / "tensorboard" / stage
        events = EventAccumulator(str(folder))
        events.Reload()
        assert "train/loss" in events.Tags()["scalars"], (stage, events.Tags())
        assert len(events.Scalars("train/loss")) >= 1
def test_the_report_opens_with_its_summary_and_caveats(finished: FinishedRun) -> None:
    """One screen holds the question, the headline numbers per model and over the base, the
    data, cost and time, the commit and the caveats; the findings name a constant judge."""
    need_chromium()
    page = inspect_page(finished.run_dir / "report.html")
    first = page.first_screen
    for text in ("Question.", "Headline", "sft − base", "dpo − base", "Data.", "Cost and time.",
                 "Caveats", "demonstrates the machinery, not the method", head_commit()[:12]):
        assert text in first, f"not on the first screen: {text!r}"
    for model in ("base", "sft", "dpo"):
        assert re.search(rf"\b{model} \d\.\d{{3}} \[", first), model  # mean AL [interval]
    models = json.loads((finished.run_dir / "metrics.json").read_text())["models"]
    scores = [r["score"] for m in models  # every model evaluated: base, sft, dpo and grpo
              for r in read_records(finished.run_dir / "eval" / f"{m}.jsonl")]
    scored = [s for s in scores if s is not None]
    constant = f"every one of the {len(scored)} scored replies a {scored[0]}"
    if len(set(scored)) == 1:  # the tiny run's 135M judge gives every reply the same score
        assert constant in first
    else:
        assert "scored replies a" not in page.text


def test_the_report_shows_no_machine_path(finished: FinishedRun) -> None:
    html = (finished.run_dir / "report.html").read_text()
    for path in {str(finished.root), str(ROOT), str(finished.root.resolve())}:
        assert path not in html, f"the report shows a machine path: {path}"
    assert "Parameters as resolved" in html and ">dpo.trainer.beta</th>" in html


def test_the_manifest_records_the_run(finished: FinishedRun) -> None:
    found = json.loads((finished.run_dir / "manifest.json").read_text())
    assert found["git"]["commit"] == head_commit()
    assert found["params"]["run"]["name"] == finished.data["run"]["name"]
    assert found["params"]["dpo"]["trainer"] == load_params(finished.params_file).dpo.trainer
    assert found["packages"]["transformers"] and found["hardware"]["cpu_cores"] >= 1
    assert found["stages"] == [p.stem for p in notebooks(ROOT)]


def test_the_adapters_travel(finished: FinishedRun) -> None:
    export = json.loads((finished.run_dir / "data" / "export_summary.json").read_text())
    metrics = json.loads((finished.run_dir / "metrics.json").read_text())
    for stage in ("sft", "dpo"):
        folder = finished.run_dir / "adapters" / stage
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == EMBEDDED_HUB_ID
        card = (folder / "README.md").read_text()
        assert card.startswith(f"---\nbase_model: {EMBEDDED_HUB_ID}\n")
        assert f"- train: {export['train']['examples']} example" in card
        assert f"- lora_r: {finished.data[stage]['lora_r']}" in card
        mean_al = metrics["models"][stage]["mean_al"]["value"]
        assert f"- mean AL (1-5): {mean_al:.3f} [" in card
        assert head_commit()[:12] in card
        assert str(finished.root) not in card and str(ROOT) not in card


def test_aloe_compare_shows_the_one_parameter_that_differs(finished: FinishedRun) -> None:
    """Two tiny runs that differ in DPO's beta (a copy of the finished run whose manifest says
    it was run with another beta): the page's parameter table has exactly that row."""
    copy_run(finished, "beta-half")
    manifest_file = finished.outputs / "beta-half" / "manifest.json"
    found = json.loads(manifest_file.read_text())
    found["params"]["run"]["name"] = "beta-half"
    found["params"]["dpo"]["trainer"]["beta"] = 0.5
    manifest_file.write_text(json.dumps(found))
    env = {**os.environ, "ALOE_ROOT": str(finished.root)}
    result = subprocess.run([sys.executable, "-m", "aloe", "compare",
                             finished.data["run"]["name"], "beta-half", "--quiet"],
                            cwd=finished.root, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    page = finished.outputs / "compare" / f"{finished.data['run']['name']}-vs-beta-half.html"
    assert result.stdout.strip().endswith(page.name) and page.exists()
    text = page.read_text()
    assert param_diff_rows(text) == ["dpo.trainer.beta"]
    assert str(finished.root) not in text and str(ROOT) not in text
    need_chromium()
    shown = inspect_page(page)
    assert shown.console_errors == [] and shown.failed_loads == []
    assert len(shown.images) == 1 and shown.images[0]["width"] > 0
    assert "dpo: beta-half" in shown.text and "Cost and time" in shown.text


def test_rerun_sends_no_request_and_skips_training(finished: FinishedRun) -> None:
    before = len(usage_entries(finished.run_dir))
    rerun = aloe_run(finished.root, "params/tiny.yaml", "--force")  # unchanged: else skipped
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    new_entries = usage_entries(finished.run_dir)[before:]
    assert new_entries and sum(e["totals"]["requests"] for e in new_entries) == 0
    assert sum(e["totals"]["cache_hits"] for e in new_entries) > 0
    notebooks = finished.run_dir / "notebooks"
    for name in ("03_sft", "04_dpo"):  # training skipped; curves, costs and comparison shown
        text = (notebooks / f"{name}.ipynb").read_text()
        assert "found finished" in text and "tokens/s" in text
        assert "image/png" in text and "preferred (data)" in text
    assert "stage stop reason (training pools)" in (notebooks / "01_personas.ipynb").read_text()


# ------------------------------------------------------------------------------------------
# Drills
# ------------------------------------------------------------------------------------------
def _check_kill(finished: FinishedRun, kill: Kill, expected: int,
                key: Callable[[dict], object]) -> None:
    """After the kill and the reruns: the stage's records are complete and unique, those
    written before the kill are still there unchanged, and the products of the stages that
    had finished before the kill were not written again."""
    records = read_records(finished.run_dir / kill.progress_file)
    keys = [key(r) for r in records]
    assert 1 <= len(kill.records_before) < expected, "the kill did not land mid-stage"
    assert len(keys) == len(set(keys)) == expected  # nothing lost, nothing twice
    assert records[: len(kill.records_before)] == kill.records_before
    for name, content in kill.finished_before.items():
        assert (finished.run_dir / name).read_bytes() == content, f"{name} was redone"


def test_killed_during_stage_2_resumes(finished: FinishedRun) -> None:
    kill = finished.kills[0]
    assert kill.stage == "02_conversations"
    _check_kill(finished, kill, finished.data["conversations"]["n_conversations"],
                key=lambda r: r["id"])
    # the conversation the kill cut short was resumed from the cache, not asked again: the
    # first completed stage-2 session (the one after the kill) was answered from it
    resumed = [e for e in usage_entries(finished.run_dir) if e["stage"] == "conversations"][0]
    assert resumed["totals"]["cache_hits"] >= 1


def test_killed_during_stage_5_resumes(finished: FinishedRun) -> None:
    kill = finished.kills[1]
    assert kill.stage == "05_evaluate"
    benchmark = read_records(finished.run_dir / "benchmark.jsonl")
    expected = len(benchmark) * finished.data["evaluation"]["turns"]
    _check_kill(finished, kill, expected, key=lambda r: (r["persona_id"], r["turn"]))
    for model in ("sft", "dpo"):  # the models the kill never reached are complete too
        records = read_records(finished.run_dir / "eval" / f"{model}.jsonl")
        assert len({(r["persona_id"], r["turn"]) for r in records}) == len(records) == expected


def test_truncated_and_corrupt_jsonl_are_caught(finished: FinishedRun) -> None:
    params_file = copy_run(finished, "damaged")
    path = finished.outputs / "damaged" / "conversations.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 40])  # a crash in the middle of the last append
    rerun = aloe_run(finished.root, str(params_file.relative_to(finished.root)), "--stages", "2")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    records = read_records(path)
    assert len(records) == finished.data["conversations"]["n_conversations"]  # redone, once
    assert len({r["id"] for r in records}) == len(records)

    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"  # damage in the middle is never data
    path.write_text("".join(lines))
    broken = aloe_run(finished.root, str(params_file.relative_to(finished.root)), "--stages", "2")
    assert broken.returncode == 1
    assert "02_conversations" in broken.stderr and "conversations.jsonl:2" in broken.stderr


def test_two_runs_at_once(finished: FinishedRun) -> None:
    """Two different run names at the same time do not interfere; the same name is refused
    while the first run holds its folder."""
    names = ["left", "right"]
    files = [copy_run(finished, name) for name in names]
    for name in names:  # stage 1 from nothing (its LLM requests come from the shared cache)
        for product in (finished.outputs / name).glob("*.json*"):
            if product.name.startswith(("persona", "profiles", "benchmark")):
                product.unlink()
    runs = [start_aloe_run(finished.root, str(f.relative_to(finished.root)), "--stages", "1")
            for f in files]
    lock = finished.outputs / "left" / ".lock"
    wait_for(lambda: lock.exists() and "pid" in lock.read_text(), 120, "the first run's lock")
    same = aloe_run(finished.root, str(files[0].relative_to(finished.root)), "--stages", "1")
    assert same.returncode == 2 and "is in use by pid" in same.stderr
    for process in runs:
        assert process.wait(timeout=900) == 0, process.stderr.read()[-3000:]
    original = read_records(finished.run_dir / "personas.jsonl")
    for name in names:
        assert read_records(finished.outputs / name / "personas.jsonl") == original
