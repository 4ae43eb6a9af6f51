"""Write docs/errors.md: every class of refusal and failure `aloe` reports, each with a message
the current code really produces (each example is triggered here, in a scratch folder), and the
fuzz test's seed and counts. `tests/test_errors_doc.py` checks that the page is what this
script writes, so the examples cannot go stale.

    python scripts/errors_doc.py          # rewrite docs/errors.md
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from aloe.core import errors  # noqa: E402
from aloe.core.config import check_api_keys, load_params, params_from_dict  # noqa: E402

PAGE = ROOT / "docs" / "errors.md"
Example = Callable[[Path], None]  # raises the error to show, given a scratch folder


def _tiny(folder: Path, **sections: dict) -> dict:
    import yaml

    data = yaml.safe_load((ROOT / "params" / "tiny.yaml").read_text())
    data["run"]["output_dir"] = str(folder / "outputs")
    data.update(sections)
    return data


def _file(folder: Path, text: str | bytes, name: str = "params.yaml") -> Path:
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _bomb() -> str:
    names = "abcdefghij"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{n}: &{n} [" + ", ".join([f"*{p}"] * 9) + "]" for p, n in zip(names, names[1:])]
    return "\n".join(lines) + "\n"


def _with_trainer(folder: Path, **options: object) -> None:
    data = _tiny(folder)
    data["sft"]["trainer"].update(options)
    params_from_dict(data, source="params.yaml")


def _stages(spec: str) -> Example:
    def run(folder: Path) -> None:
        from aloe.operations.runner import notebooks, parse_stages

        parse_stages(spec, notebooks())
    return run


def _key(value: str | None) -> Example:
    def run(folder: Path) -> None:
        if value is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = value
        check_api_keys(load_params(ROOT / "params" / "paper.yaml"), [2])
    return run


def _locked(folder: Path) -> None:
    from aloe.core.layout import RunLayout
    from aloe.operations.runner import run_lock

    layout = RunLayout(run_dir=folder / "outputs" / "tiny", cache_path=folder / "c.sqlite")
    with run_lock(layout), run_lock(layout):
        pass


def _damaged_cache(folder: Path) -> None:
    from aloe.llm.cache import ResponseCache

    ResponseCache(_file(folder, b"this is not a database" * 200, "llm.sqlite"))


def _foreign_database(folder: Path) -> None:
    from aloe.llm.cache import check_cache

    with sqlite3.connect(folder / "llm.sqlite") as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    check_cache(folder / "llm.sqlite")


def _score_off_scale(folder: Path) -> None:
    from aloe.core.records import write_records
    from aloe.stages import evaluation

    params = params_from_dict(_tiny(folder), source="params.yaml")
    write_records(params.layout.benchmark, [{"id": "b0", "profile": "p", "personality": "q"}])
    write_records(params.layout.eval_records("base"),
                  [{"model": "base", "persona_id": "b0", "turn": 1, "score": 99}])
    evaluation.load_records(params)


def _conversation_twice(folder: Path) -> None:
    from aloe.core.records import write_records
    from aloe.stages.conversations import load_conversations

    params = params_from_dict(_tiny(folder), source="params.yaml")
    tree = {"id": "conv-00000", "index": 0, "turns": []}
    write_records(params.layout.conversations, [tree, tree])
    load_conversations(params)


def _probe_twice(folder: Path) -> None:
    from aloe.core.records import write_records
    from aloe.stages import evaluation

    data = _tiny(folder)
    data["evaluation"]["inference_probe"] = True
    params = params_from_dict(data, source="params.yaml")
    persona = {"id": "b0", "profile": "p", "personality": "q"}
    probe = {"model": "base", "persona_id": "b0", "turn": 1, "accuracy": 0.5}
    write_records(params.layout.probe_records("base"), [probe, probe])
    evaluation.compute_metrics(params, [{"model": "base", "persona_id": "b0", "turn": 1,
                                         "score": 4}], [persona])


def _key_edited(folder: Path) -> None:
    from aloe.core import protocols
    from aloe.presentation import ratings

    params = params_from_dict(_tiny(folder), source="params.yaml")
    key = params.layout.rating_key(protocols.variant_name(params.evaluation))
    key.parent.mkdir(parents=True)
    key.write_text(json.dumps({"kit": "k1", "categories": [1, 2, 3, 4, 5, 6], "items": {}}))
    ratings.import_ratings(params, [])


def _written_off_schema(folder: Path) -> None:
    from aloe.core.records import append_records
    from aloe.core.schemas import probe_check

    params = params_from_dict(_tiny(folder), source="params.yaml")
    append_records(params.layout.probe_records("base"),
                   [{"model": "base", "persona_id": "b0", "turn": 1, "accuracy": 7.0}],
                   check=probe_check("base"))


def _rating_true(folder: Path) -> None:
    from aloe.presentation.ratings import read_ratings_file

    key = {"kit": "k1", "categories": [1, 2, 3, 4, 5], "items": {"item-1": {}}}
    path = _file(folder, json.dumps({"kit": "k1", "rater": "ann",
                                     "ratings": {"item-1": True}}), "ratings-k1-ann.json")
    read_ratings_file(path, key, "live")


def _request_failed(folder: Path) -> None:
    from aloe.core.config import RoleConfig
    from aloe.core.layout import RunLayout
    from aloe.llm import LLM
    from tests.support.scripted_server import ScriptedServer, completion

    with ScriptedServer([completion(5)]) as server:
        role = RoleConfig(model="served-model", base_url=server.base_url, max_retries=1)
        llm = LLM({"judge": role}, stage="evaluate", retry_base=0.0,
                  layout=RunLayout(run_dir=folder / "run", cache_path=folder / "c.sqlite"))
        try:
            llm.run(llm.chat("judge", [{"role": "user", "content": "Score it."}]))
        except errors.AloeError as error:  # the port changes from run to run
            raise type(error)(str(error).replace(server.base_url, "http://127.0.0.1:8000/v1"))


def _lost_items(folder: Path) -> None:
    errors.check_lost_items("conversations", [(
        "conv-00003", "role 'judge' (model gpt-4o-mini at https://api.openai.com/v1): failed "
        "after 6 attempts: RateLimitError: Rate limit reached")], 40,
        setting="conversations.max_failed_share")


def _disk_full(folder: Path) -> None:
    raise errors.DiskFullError(errors.disk_full_message(folder / "outputs" / "tiny" /
                                                        "conversations.jsonl"))


def _budget(folder: Path) -> None:
    from aloe.llm.budget import Budget

    params = params_from_dict(_tiny(folder, run={**_tiny(folder)["run"], "budget_usd": 0.001}),
                              source="params.yaml")
    budget = Budget.for_run(params)
    budget.reserve("conversations", 0.01, "judge", "gpt-4o-mini")


def _tampered_reference(folder: Path) -> None:
    from aloe.stages.reference import fetch

    (folder / "copies").mkdir()
    _file(folder / "copies", '"a persona"\n', "profile.jsonl")
    fetch(folder / "reference", folder / "copies")


# What, when, and how to trigger it: (exit code, class, what it means, example).
CLASSES: list[tuple[int, str, str, Example]] = [
    (2, "ParamsError", "a parameter file that is missing",
     lambda f: load_params(f / "missing.yaml")),
    (2, "ParamsError", "an empty parameter file", lambda f: load_params(_file(f, ""))),
    (2, "ParamsError", "a file that is not UTF-8", lambda f: load_params(_file(f, b"run: \xff\n"))),
    (2, "ParamsError", "a file that is not YAML", lambda f: load_params(_file(f, "run: [\n"))),
    (2, "ParamsError", "a control character (NUL, form feed, ...)",
     lambda f: load_params(_file(f, "run:\n  name: a\x00b\n"))),
    (2, "ParamsError", "a key given twice",
     lambda f: load_params(_file(f, "run: {name: a}\nrun: {name: b}\n"))),
    (2, "ParamsError", "aliases that expand past 100,000 values (an alias bomb)",
     lambda f: load_params(_file(f, _bomb()))),
    (2, "ParamsError", "an alias that refers to itself",
     lambda f: load_params(_file(f, "run: &r\n  name: [*r]\n"))),
    (2, "ParamsError", "nesting deeper than 64 levels",
     lambda f: load_params(_file(f, "run: " + "[" * 80 + "]" * 80 + "\n"))),
    (2, "ParamsError", "an unknown key",
     lambda f: params_from_dict({"run": {"nmae": "x"}}, source="params.yaml")),
    (2, "ParamsError", "a value of the wrong type",
     lambda f: params_from_dict({"conversations": {"turns": True}}, source="params.yaml")),
    (2, "ParamsError", "a number out of its range (every count has bounds)",
     lambda f: _with_trainer(f, max_steps=-5)),
    (2, "ParamsError", "a number that is not finite",
     lambda f: _with_trainer(f, learning_rate=float("nan"))),
    (2, "ParamsError", "an option that would upload or hold a token",
     lambda f: _with_trainer(f, hub_token="hf_...")),
    (2, "ParamsError", "a base_url that is neither `local` nor an http(s) URL",
     lambda f: params_from_dict({"roles": {"judge": {"base_url": "api.openai.com"}}},
                                source="params.yaml")),
    (2, "ParamsError", "a run name that is too long, or a folder every run shares",
     lambda f: params_from_dict({"run": {"name": "cache"}}, source="params.yaml")),
    (2, "StageSelectionError", "a `--stages` past the last stage", _stages("0-200000000")),
    (2, "StageSelectionError", "a reversed `--stages` range", _stages("4-2")),
    (2, "ParamsError", "a role's API key variable not set", _key(None)),
    (2, "ParamsError", "an API key no HTTP header can carry", _key("sk-abc\n")),
    (2, "RunLockedError", "a run folder another command holds", _locked),
    (2, "CacheError", "a damaged response cache", _damaged_cache),
    (2, "DataError", "a run file's value off its schema (named by file and line)",
     _score_off_scale),
    (2, "DataError", "a conversation written twice", _conversation_twice),
    (2, "DataError", "a record written twice where its key must be unique (a probe, a "
     "simulator check, a second judgement, a rating, a pool item, a round, a leakage line)",
     _probe_twice),
    (2, "DataError", "a JSON file off its schema (a rating kit's key), named by file",
     _key_edited),
    (2, "RatingsError", "a ratings file the kit does not accept", _rating_true),
    (1, "CacheUnavailable", "a cache file that is not a response cache, or cannot be read or "
     "written just now (full disk, I/O error): nothing is changed", _foreign_database),
    (1, "LLMError", "a request that failed for good: role, model, server and cause",
     _request_failed),
    (1, "IncompleteStageError", "a stage that could not finish some items", _lost_items),
    (1, "SchemaError", "a record a stage was about to write that its file's schema refuses "
     "(a value no reader would accept): nothing of it is written", _written_off_schema),
    (1, "BudgetExceededError", "a request that would pass `run.budget_usd`", _budget),
    (1, "ReferenceFilesError", "`aloe reference fetch`: an official ALOE file whose sha256 "
     "is not the pinned one (nothing of it is written), a source folder without it, a URL "
     "that cannot be reached", _tampered_reference),
    (1, "DiskFullError", "a full disk while writing", _disk_full),
]


def example(trigger: Example) -> tuple[str, int, str]:
    """The error's class, exit code and message, the same on every machine: the scratch folder
    as `…`, the project's folder left out, a process id as 12345."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        saved = dict(os.environ)
        try:
            trigger(folder)
        except errors.AloeError as error:  # the error is what is shown
            message = " ".join(str(error).split())
            message = message.replace(str(folder), "…").replace(f"{ROOT}/", "")
            return type(error).__name__, error.exit_code, re.sub(r"pid \d+", "pid 12345",
                                                                 message)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    raise SystemExit(f"errors_doc: {trigger} raised no error of the workbook's")


def preflight_example() -> list[str]:
    """What `aloe run` prints for a preflight with two failed checks of five (the checks'
    own words; the runner and the command line turn them into these lines)."""
    from aloe.core.layout import RunLayout
    from aloe.operations import cli, preflight, runner

    checks = [preflight.Check("key OPENAI_API_KEY", preflight.OK, "set (for judge)"),
              preflight.Check("endpoint judge", preflight.FAILED, "LLMError: role 'judge' "
                              "(model gpt-4o-mini at https://api.openai.com/v1): unreachable "
                              "after 6 attempts: APIConnectionError: Connection error; "
                              "check that the server is up and reachable, and roles.judge "
                              "(base_url, model, the key in OPENAI_API_KEY)"),
              preflight.Check("model sft.base_model", preflight.OK, "resolvable on the hub"),
              preflight.Check("gpu for sft", preflight.FAILED, "no GPU is visible "
                              "(torch.cuda.is_available() is False) but training "
                              "meta-llama/Meta-Llama-3-8B-Instruct (8.00B parameters) needs one "
                              "with about 10 GB free (gpu_figures.json: measured peaks scaled to "
                              "this model): run on a GPU machine with a CUDA build of torch, or "
                              "choose a smaller base_model"),
              preflight.Check("disk for the run folder", preflight.OK, "enough")]
    try:
        preflight.require_ready(checks)
    except preflight.NotReadyError as error:
        raised = error

    class KernelError(Exception):  # papermill hands the kernel's error back by name and value
        ename, evalue = "NotReadyError", str(raised)

    layout = RunLayout(run_dir=Path("outputs/paper"), cache_path=Path("llm.sqlite"))
    failure = runner._preflight_failure(KernelError.evalue, layout.executed_notebook(
        "00_preflight.ipynb"), runner.RunResult(layout, params_file="params/paper.yaml"))
    return f"aloe: {cli._error_lines(failure)}".splitlines()


def fuzz_line() -> str:
    spec = importlib.util.spec_from_file_location("test_fuzz", ROOT / "tests" / "test_fuzz.py")
    assert spec and spec.loader
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    counts = ", ".join(f"{n:,} {kind}" for kind, n in fuzz.COUNTS.items())
    return (f"`tests/test_fuzz.py` (seed {fuzz.SEED}) mutates {counts}: "
            f"{sum(fuzz.COUNTS.values()):,} inputs in all, each of which must end in an "
            "accepted value or in one of the one-line refusals below, within "
            f"{fuzz.HANG_S:g} s, never a traceback, a hang or an answer the cache would keep "
            "that the client could not use.")


def render() -> str:
    lines = [
        "# Errors and exit codes", "",
        "Written by `python scripts/errors_doc.py`: each example below is the message the "
        "current code produces for it (`tests/test_errors_doc.py` checks that this page is "
        "what the script writes). Every message is one line: what, where, and what to do "
        "(a failed preflight alone lists its failed checks, one line each, below); `…` stands "
        "for the folder the example ran in.", "",
        "`aloe` exits with **0** when everything asked for is done, **2** when input is refused "
        "(before anything is written), and **1** when work failed (a stage, the network, the "
        "disk). A run that lost items never exits 0.", "",
        fuzz_line(), "",
        "| exit | error | when | example |", "| ---: | --- | --- | --- |"]
    for code, expected, when, trigger in CLASSES:
        name, exit_code, message = example(trigger)
        if (name, exit_code) != (expected, code):
            raise SystemExit(f"errors_doc: '{when}' raised {name} (exit {exit_code}), not "
                             f"{expected} (exit {code}): {message}")
        cell = message.replace("|", "\\|")
        lines.append(f"| {code} | `{name}` | {when} | {cell} |")
    lines += ["", "A stage that fails in a notebook ends `aloe run` with `RunError` (exit 1): "
              "the notebook, the cell, the error and the executed notebook that holds the "
              "traceback. A preflight whose readiness checks failed (stage 0's "
              "`NotReadyError`) ends it with exit 1 and a headline naming the parameter file, "
              "then one line per failed check, whole (what, where, what to do), then where "
              "every check and the plan are:", "", "```text", *preflight_example(), "```", ""]
    return "\n".join(lines)


def main() -> int:
    PAGE.write_text(render())
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
