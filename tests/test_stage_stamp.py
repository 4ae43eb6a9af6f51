"""Stage stamps (`aloe.operations.stage_stamp`) on real files: a stage is fresh only while its
parameters, code, inputs and products are what they were when it finished; anything else reruns it.

Here the "stages" are functions that write real files into a real run folder, as a notebook
would; `tests/test_runner.py` runs the real notebooks through papermill twice."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from aloe.core.config import Params, params_from_dict
from aloe.operations.stage_stamp import StageStamps, code_digest, listing, stamp_path
from tests.conftest import tiny_dict


def _notebook(folder: Path, stem: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(f"print('{stem}')")]
    path = folder / f"{stem}.ipynb"
    nbformat.write(notebook, path)
    return path


class Workbook:
    """A run folder, three notebooks and the stamps of one invocation."""

    def __init__(self, tmp_path: Path, params: Params) -> None:
        self.params, self.layout = params, params.layout
        source = tmp_path / "notebooks"
        source.mkdir(exist_ok=True)
        self.personas, self.conversations, self.report = (
            _notebook(source, stem) for stem in ("01_personas", "02_conversations",
                                                 "06_report"))

    def stamps(self, params: Params | None = None) -> StageStamps:
        """What a new `aloe run` reads (its hashes are remembered per invocation)."""
        return StageStamps(self.layout, params or self.params)

    def run(self, notebook: Path, work: Callable[[Path], None], complete: bool = True) -> None:
        """Run a stage as the runner does: list, work, keep an executed notebook, stamp."""
        stamps = self.stamps()
        before = listing(self.layout.run_dir)
        stamps.start(notebook.stem, before)
        self.layout.run_dir.mkdir(parents=True, exist_ok=True)
        work(self.layout.run_dir)
        self.layout.notebooks.mkdir(exist_ok=True)
        shutil.copy(notebook, self.layout.executed_notebook(notebook.name))
        stamps.record(notebook, before, complete=complete)

    def fresh(self, notebook: Path, params: Params | None = None) -> tuple[bool, str]:
        verdict = self.stamps(params).check(notebook)
        return verdict.fresh, verdict.reason


def _personas(run_dir: Path) -> None:
    (run_dir / "personas.jsonl").write_text('{"id": "p0"}\n')
    (run_dir / "card.md").write_text("personas: 1")  # the report writes it again
    (run_dir / "usage").mkdir(exist_ok=True)
    (run_dir / "usage" / "personas.json").write_text('{"requests": 3}')
    with open(run_dir / "usage" / "history.jsonl", "a") as history:
        history.write('{"stage": "personas"}\n')


def _conversations(run_dir: Path) -> None:
    personas = (run_dir / "personas.jsonl").read_text()
    (run_dir / "conversations.jsonl").write_text(personas.replace("p0", "c0"))
    with open(run_dir / "usage" / "history.jsonl", "a") as history:
        history.write('{"stage": "conversations"}\n')


def _report(run_dir: Path) -> None:
    (run_dir / "report.html").write_text("<p>" + (run_dir / "usage" / "history.jsonl")
                                         .read_text() + "</p>")
    (run_dir / "card.md").write_text("personas: 1, conversations: 1")


@pytest.fixture
def workbook(tmp_path: Path) -> Workbook:
    (tmp_path / "imported.jsonl").write_text('{"text": "She is a potter."}\n')
    data = tiny_dict(tmp_path, personas={"import_profiles": str(tmp_path / "imported.jsonl")})
    found = Workbook(tmp_path, params_from_dict(data, source="tiny(test)"))
    found.run(found.personas, _personas)
    found.run(found.conversations, _conversations)
    found.run(found.report, _report)
    return found


def test_an_unchanged_run_is_fresh_and_a_later_stage_is_no_input(workbook: Workbook) -> None:
    """Files stage 2 wrote are no inputs of stage 1; a file the report wrote over (a model
    card) is the report's, and changes no earlier stage. The usage ledger, which every stage
    adds to, is no stage's product and the report's input only."""
    for notebook in (workbook.personas, workbook.conversations, workbook.report):
        assert workbook.fresh(notebook) == (True, "unchanged"), notebook.stem
    stamp = stamp_path(workbook.layout, "02_conversations").read_text()
    assert '"personas.jsonl"' in stamp and "usage/" not in stamp
    with open(workbook.layout.usage_history, "a") as history:
        history.write('{"stage": "preflight"}\n')  # a preflight that ran since
    assert workbook.fresh(workbook.personas)[0] and workbook.fresh(workbook.conversations)[0]
    assert workbook.fresh(workbook.report) == (False, "input usage/history.jsonl changed")


def test_a_changed_parameter_reruns_and_a_location_does_not(workbook: Workbook,
                                                            tmp_path: Path) -> None:
    data = tiny_dict(tmp_path, personas={"import_profiles": str(tmp_path / "imported.jsonl")})
    data["conversations"]["turns"] = 3
    assert workbook.fresh(workbook.conversations, params_from_dict(data)) == (
        False, "parameters changed")
    data["conversations"]["turns"] = 2
    data["run"]["cache_path"] = str(tmp_path / "elsewhere" / "llm.sqlite")
    assert workbook.fresh(workbook.conversations, params_from_dict(data))[0]


def test_a_changed_input_reruns_the_stages_that_read_it(workbook: Workbook,
                                                        tmp_path: Path) -> None:
    """A file a parameter names (outside the run folder), then a file in the run folder that
    no stage wrote (a person put it there), then one an earlier stage wrote."""
    (tmp_path / "imported.jsonl").write_text('{"text": "She is a sailor."}\n')
    assert workbook.fresh(workbook.personas) == (False, "outside inputs changed")
    (tmp_path / "imported.jsonl").write_text('{"text": "She is a potter."}\n')
    assert workbook.fresh(workbook.personas)[0]

    (workbook.layout.run_dir / "notes.txt").write_text("by hand")
    assert workbook.fresh(workbook.conversations) == (False, "input notes.txt changed")
    (workbook.layout.run_dir / "notes.txt").unlink()

    (workbook.layout.run_dir / "personas.jsonl").write_text('{"id": "p1"}\n')
    assert workbook.fresh(workbook.conversations) == (False, "input personas.jsonl changed")
    assert workbook.fresh(workbook.personas) == (False, "personas.jsonl changed")


def test_a_changed_notebook_or_package_file_reruns(workbook: Workbook, tmp_path: Path) -> None:
    notebook = nbformat.read(workbook.conversations, as_version=4)
    notebook.cells.append(nbformat.v4.new_markdown_cell("A note."))
    nbformat.write(notebook, workbook.conversations)
    assert workbook.fresh(workbook.conversations) == (False, "code changed")
    assert workbook.fresh(workbook.personas)[0]

    import aloe

    package = tmp_path / "package"
    shutil.copytree(Path(aloe.__file__).parent, package,
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = code_digest(workbook.personas, package)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    assert code_digest(workbook.personas, package) == before
    prompt = next((package / "prompts").rglob("*.*"))
    prompt.write_text(prompt.read_text() + " ")
    assert code_digest(workbook.personas, package) != before


@pytest.mark.parametrize("damage", ["delete", "modify"])
def test_a_deleted_or_modified_product_reruns_its_stage(workbook: Workbook, damage: str) -> None:
    product = workbook.layout.run_dir / "conversations.jsonl"
    if damage == "delete":
        product.unlink()
    else:
        product.write_text(product.read_text() + '{"id": "c1"}\n')
    reason = "is missing" if damage == "delete" else "changed"
    assert workbook.fresh(workbook.conversations) == (False, f"conversations.jsonl {reason}")
    assert workbook.fresh(workbook.personas)[0]  # stage 1 never read it
    assert not workbook.fresh(workbook.report)[0]  # the report reads everything before it


def test_a_missing_executed_notebook_reruns(workbook: Workbook) -> None:
    workbook.layout.executed_notebook(workbook.conversations.name).unlink()
    assert workbook.fresh(workbook.conversations) == (False, "its executed notebook is missing")


def test_a_failed_stage_is_never_fresh_and_keeps_its_files(workbook: Workbook) -> None:
    """Stage 2 fails after writing half its work: it is not fresh, ever, even with nothing
    changed since; what it wrote stays its own, no input of stage 1."""
    def half(run_dir: Path) -> None:
        (run_dir / "conversations.jsonl").write_text('{"id": "c0"}\n{"id": "c')
    workbook.run(workbook.conversations, half, complete=False)
    assert workbook.fresh(workbook.conversations) == (False, "did not finish last time")
    assert workbook.fresh(workbook.personas)[0]


def test_a_stage_killed_midway_is_not_fresh_and_its_files_are_its_own(
        workbook: Workbook) -> None:
    """A run killed in the middle of stage 2 (no chance to stamp it) leaves no stamp that
    vouches for its half-rewritten files; the next run credits the files it wrote to it, so
    they are no inputs of stage 1, while stage 1's own product stays stage 1's."""
    before = listing(workbook.layout.run_dir)
    workbook.stamps().start("02_conversations", before)
    (workbook.layout.run_dir / "conversations.jsonl").write_text('{"id": "c0"}\n{"id"')
    (workbook.layout.run_dir / "extra.jsonl").write_text("{}\n")
    personas = workbook.layout.run_dir / "personas.jsonl"
    personas.write_bytes(personas.read_bytes())  # saved again by a person meanwhile
    stamps = workbook.stamps()
    stamps.settle()
    assert (stamps.check(workbook.conversations).reason) == "did not finish last time"
    products = stamps.read("02_conversations")["products"]
    assert {"conversations.jsonl", "extra.jsonl"} <= set(products)
    assert "personas.jsonl" not in products and "running_since" not in stamps.read(
        "02_conversations")
    assert workbook.fresh(workbook.personas) == (True, "unchanged")


def test_a_rerun_stage_that_writes_nothing_keeps_its_products(workbook: Workbook) -> None:
    """Training that finds its adapter finished writes nothing: the adapter stays its own."""
    workbook.run(workbook.conversations, lambda run_dir: None)
    stamp = stamp_path(workbook.layout, "02_conversations").read_text()
    assert '"conversations.jsonl"' in stamp.split('"products"')[1]
    assert workbook.fresh(workbook.conversations)[0] and workbook.fresh(workbook.report)[0]
