"""What a reader copies from README.md and docs/*.md works: every shell command shown either runs
here or is on SKIP with the reason it cannot; every file a command names exists; every
relative link and anchor resolves; the module map names every module of src/aloe and no other.

What counts as a command shown (the rule this test applies):
- every line of a fenced code block tagged `bash`, `sh` or `shell` (a fence may be indented,
  as in a list item), and in a block tagged `console` every line that starts with `$ `;
- a line ending in a backslash continues on the next; `# ...` comments (shlex's rule) and blank
  lines are dropped. Inline code in a sentence (`aloe run --set ...`) is a name in prose, not a
  command shown: it is not run (the parameter files it names are checked, see below).

How each command is checked, from the repository root with .venv/bin first on PATH:
- a synopsis (a word in brackets, an upper-case placeholder such as PARAMS, RUN or FILE..., or
  KEY=VALUE) is not run: its `aloe` subcommand's --help must work and list every option it
  names;
- `aloe plan ...`, `aloe ... --help` and `aloe --version` run as written, exit 0 expected;
- `aloe cache check ...` runs in an empty copy of the project (params/ and notebooks/, no
  cache: exit 0, "nothing to check"), never on the repository's own cache;
- `aloe reference status ...` runs in the same empty project, where the official files are
  absent: the documented exit 1 ("exit 1 unless all four are");
- `make TARGET ...` runs as `make -n TARGET ...`: the target exists and its variables parse
  (the recipe is printed, not run; `make run` runs for real in tests/test_workbook.py, `make
  test` is this suite);
- every other command must match a prefix of SKIP, which says why it is not run here; an
  `aloe run|train|evaluate` among them is still checked by `aloe plan` with the same parameter
  file, `--set` and `--run-name` (offline: the file and keys load);
- every word naming a path into the repository (params/, configs/, notebooks/, scripts/, bench/,
  docs/, src/, tests/, .venv/bin/) must exist, for commands run or skipped alike: the old README
  example `aloe run params/beta-half.yaml` fails here.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from aloe.operations import cli
from tests.conftest import ROOT
from tests.support.layers import LAYERS

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_TAGS = {"bash", "sh", "shell", "console"}
REPO_DIRS = ("params/", "configs/", "notebooks/", "scripts/", "bench/", "docs/", "src/", "tests/",
             ".venv/bin/")
# Parameter files named in prose as examples of a file a reader writes, not as files of ours.
EXAMPLE_FILES = {"params/mine.yaml"}
# Commands shown but not run here, by prefix, each with why (every prefix must still match).
SKIP = {
    "aloe run": "a whole run: tests/test_workbook.py runs `aloe run` on the tiny profile; the "
                "paper profiles need an API key or a GPU (checked by `aloe plan` instead)",
    "aloe compare": "needs finished runs (metrics.json): tests/test_compare.py and "
                    "tests/test_workbook.py run it",
    "aloe reference fetch": "downloads the official files: needs the network",
    "accelerate launch": "training on several GPUs (checked by `aloe plan` instead)",
    "rm -rf .venv": "deletes the environment these tests run in",
    ".venv/bin/jupyter lab": "starts a server that waits for a browser",
    ".venv/bin/hf": "needs the network and a Hugging Face account",
    "export HF_TOKEN=": "sets a secret for one shell: nothing to run",
    "python3 -m venv ~/venvs/vllm": "vLLM's own venv, beside .venv: needs the network",
    "~/venvs/vllm/bin/": "vLLM: needs the network (pip) and a GPU (serve)",
}
PLACEHOLDER = re.compile(r"^\[|\]$|^[A-Z][A-Z_]*(\.\.\.)?$|KEY=VALUE|^[A-Z]+\|[A-Z]+$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


@dataclass(frozen=True)
class Shown:
    """One command as a page shows it."""

    page: str  # relative to the repository root
    line: int
    words: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(tag, line number of the first content line, content lines with the fence's indent
    removed) of every fenced block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        indent, tag, start, body = len(opened.group(1)), opened.group(2).lower(), i + 2, []
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
            i += 1
        blocks.append((tag, start, body))
        i += 1
    return blocks


def shown_commands(page: str, text: str) -> list[Shown]:
    """Every command of `text`'s shell blocks, by the rule of the module docstring."""
    found = []
    for tag, start, body in fenced_blocks(text):
        if tag not in SHELL_TAGS:
            continue
        pending, first = "", start
        for number, line in enumerate(body, start):
            if tag == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if not pending:
                first = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            words = shlex.split(pending + line, comments=True)
            pending = ""
            if words:
                found.append(Shown(page, first, tuple(words)))
    return found


def all_commands() -> list[Shown]:
    return [shown for page in PAGES
            for shown in shown_commands(str(page.relative_to(ROOT)), page.read_text())]


COMMANDS = all_commands()


def is_synopsis(shown: Shown) -> bool:
    return any(PLACEHOLDER.search(word) for word in shown.words)


def skip_reason(shown: Shown) -> str | None:
    return next((why for prefix, why in SKIP.items() if shown.text.startswith(prefix)), None)


def missing_paths(shown: Shown) -> list[str]:
    """The words (or the values of NAME=value words) naming a repository path that is not
    there."""
    named = [word.split("=", 1)[1] if "=" in word and not word.startswith("-") else word
             for word in shown.words]
    return [path for path in named if path.startswith(REPO_DIRS) and not (ROOT / path).exists()]


def env_with_venv(project: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("ALOE_REFERENCE_DIR", "OPENAI_API_KEY")}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["ALOE_ROOT"] = str(project)
    return env


def empty_project(tmp_path: Path) -> Path:
    """A project folder with the repository's params/ and notebooks/ and nothing else: no
    cache, no outputs, no official files."""
    project = tmp_path / "project"
    for folder in ("params", "notebooks"):
        shutil.copytree(ROOT / folder, project / folder)
    return project


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env_with_venv(cwd), capture_output=True,
                          text=True, timeout=120)


def how_to_run(shown: Shown) -> tuple[list[str], bool, int] | None:
    """(argv, whether in an empty project rather than the repository, expected exit code)
    for a command this test runs, else None."""
    words = list(shown.words)
    if words[0] == "make":
        return ["make", "-n", *words[1:]], False, 0
    if words[0] != "aloe":
        return None
    if words[1] == "plan" or words[1] in ("--version", "-V") or "--help" in words:
        return words, False, 0
    if words[1:3] == ["cache", "check"]:
        return words, True, 0
    if words[1:3] == ["reference", "status"]:
        return words, True, 1
    return None


def plan_instead(shown: Shown) -> tuple[str, ...] | None:
    """`aloe plan` with the parameter file and options of a run, train or evaluate command
    that is not run here."""
    words = list(shown.words)
    at = next((i for i, w in enumerate(words) if w == "aloe"), None)  # `aloe` or `python -m aloe`
    if at is None or at + 1 >= len(words) or words[at + 1] not in ("run", "train", "evaluate"):
        return None
    rest = words[at + 2:]
    params = next((w for w in rest if w.endswith((".yaml", ".yml"))), "params/tiny.yaml")
    options = [w for i, word in enumerate(rest[:-1]) if word in ("--set", "--run-name")
               for w in (word, rest[i + 1])]
    return ("aloe", "plan", params, "--json", *options)


@functools.lru_cache(maxsize=None)
def plan_exit(plan: tuple[str, ...]) -> tuple[int, str]:
    """(exit code, stderr) of `plan` with an empty output folder; several commands shown
    (`aloe run params/paper.yaml`, both `accelerate launch` lines) share one plan."""
    with tempfile.TemporaryDirectory() as empty:
        done = run([*plan, "--set", f"run.output_dir={empty}"], ROOT)
    return done.returncode, done.stderr


def help_text(path: list[str]) -> tuple[int, str]:
    """`aloe PATH --help` through the real parser, in this process: (exit code, text)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = cli.main([*path, "--help"])
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
    return code, out.getvalue()


@pytest.mark.parametrize("shown", COMMANDS, ids=[f"{s.page}:{s.line}" for s in COMMANDS])
def test_every_command_shown_runs_or_says_why_not(shown: Shown, tmp_path: Path) -> None:
    missing = missing_paths(shown)
    if shown.text.split(" ", 2)[:2] != ["aloe", "compare"]:  # compare's words are run names
        assert not missing, f"{shown}: names {', '.join(missing)}, which do not exist"
    if is_synopsis(shown):
        assert shown.words[0] == "aloe", f"{shown}: a synopsis of something other than aloe"
        path = [w for w in shown.words[1:4] if re.fullmatch(r"[a-z]+", w)]
        code, text = help_text(path)
        assert code == 0, f"{shown}: `aloe {' '.join(path)} --help` exited {code}"
        named = {m for w in shown.words for m in re.findall(r"--[a-z][a-z-]*", w)}
        assert all(option in text for option in named), \
            f"{shown}: options not in `aloe {' '.join(path)} --help`: " \
            f"{sorted(o for o in named if o not in text)}"
        return
    planned = how_to_run(shown)
    if planned is not None:
        argv, in_empty_project, expected = planned
        done = run(argv, empty_project(tmp_path) if in_empty_project else ROOT)
        assert done.returncode == expected, \
            f"{shown}: exit {done.returncode}, expected {expected}\n{done.stderr[-2000:]}"
        return
    assert skip_reason(shown), (f"{shown}: no rule runs it and SKIP gives no reason: run it "
                                "here or add its prefix to SKIP with why")
    plan = plan_instead(shown)
    if plan is not None:
        code, stderr = plan_exit(plan)
        assert code == 0, f"{shown}: {' '.join(plan)} failed:\n{stderr[-2000:]}"


def test_every_skip_reason_is_used() -> None:
    """A SKIP prefix that matches no command shown is stale: remove it."""
    stale = [prefix for prefix in SKIP if not any(s.text.startswith(prefix) for s in COMMANDS)]
    assert not stale, stale


def test_a_command_naming_a_missing_file_is_caught() -> None:
    """The rule itself: the old README example, a compare example, a make variable."""
    page = ("```bash\naloe run params/beta-half.yaml --stages 0   # a profile that is not there\n"
            "make run PARAMS=params/nope.yaml\n```\n")
    shown = shown_commands("example.md", page)
    assert [missing_paths(s) for s in shown] == [["params/beta-half.yaml"], ["params/nope.yaml"]]
    assert shown[0].line == 2 and shown[0].words[-1] == "0"


def test_the_rule_reads_continuations_console_prompts_and_indented_fences() -> None:
    page = ("- a list item:\n\n  ```bash\n  aloe plan params/tiny.yaml \\\n      --json\n  ```\n\n"
            "```console\n$ aloe --version\naloe 0.1.0\n```\n\n```text\naloe run\n```\n")
    assert [s.words for s in shown_commands("x.md", page)] == [
        ("aloe", "plan", "params/tiny.yaml", "--json"), ("aloe", "--version")]


def test_every_parameter_file_named_exists() -> None:
    """Also in prose and inline code: a `params/NAME.yaml` the docs name is one of ours (or a
    file the reader is told to write, EXAMPLE_FILES)."""
    named = {(page.name, match) for page in PAGES
             for match in re.findall(r"params/[\w.-]+\.ya?ml", page.read_text())}
    missing = sorted(f"{page}: {path}" for page, path in named
                     if path not in EXAMPLE_FILES and not (ROOT / path).is_file())
    assert not missing, missing


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (outside code blocks), duplicates numbered."""
    seen: dict[str, int] = {}
    inside = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside and (heading := re.match(r"#{1,6} (.+)", line)):
            base = slug(heading.group(1))
            seen[base if base not in seen else f"{base}-{seen[base]}"] = 0
            seen[base] = seen.get(base, 0) + 1
    return set(seen)


def links(page: Path) -> list[str]:
    """Relative link targets outside code blocks and inline code."""
    found, inside = [], False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            found += LINK.findall(re.sub(r"`[^`]*`", "", line))
    return [target for target in found if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_slug_is_githubs() -> None:
    assert slug("What a run will cost: `aloe plan`") == "what-a-run-will-cost-aloe-plan"
    assert slug("Beyond the paper's evaluation") == "beyond-the-papers-evaluation"


def _entries(folder: Path, prefix: str = "") -> set[str]:
    return {prefix + p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()
            if p.name not in ("__init__.py", "__pycache__") and not p.name.startswith(".")
            and (p.is_dir() or p.suffix in (".py", ".json"))}


def test_the_module_map_names_every_module() -> None:
    """docs/development.md's module map and the README's stage table together name every
    module and package of src/aloe's layers (and what sits beside them), and nothing that is
    not there."""
    package = ROOT / "src" / "aloe"
    layers = [p for p in package.iterdir() if p.is_dir() and p.name in LAYERS]
    actual = (_entries(package) - {f"{p.name}/" for p in layers}) | {
        entry for layer in layers for entry in _entries(layer, f"{layer.name}/")}
    text = (ROOT / "docs" / "development.md").read_text()
    rows = [line.split("|")[1] for line in text[text.index("## Module map"):].splitlines()
            if line.startswith("| `")]
    rows += [line.split("|")[3] for line in (ROOT / "README.md").read_text().splitlines()
             if re.match(r"\| \d \| `", line)]
    named = {name for cell in rows
             for name in re.findall(r"`((?:\w+/)*\w+(?:\.py|\.json|/))`", cell)}
    assert actual - named == set(), f"modules the map leaves out: {sorted(actual - named)}"
    assert named - actual == set(), f"the map names what is not there: {sorted(named - actual)}"
