"""Shared fixtures: the real embedded model behind one real `transformers serve` for the whole
session (exported so papermill kernels reuse it), and parameter files in temporary folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from aloe.core.config import Params, load_params, params_from_dict
from aloe.stages import reference
from tests.support.stub_server import StubServer

ROOT = Path(__file__).resolve().parents[1]
LOCAL_REFERENCE = ROOT / reference.DEFAULT_FOLDER  # where `aloe reference fetch` puts them
SHARED_REFERENCE = ROOT.parent / "shared" / "aloe_reference"  # this workspace's copies (CI)
MODEL_CACHE = ROOT / "outputs" / "models"  # the converted embedded model, shared by all tests

os.environ.setdefault("ALOE_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _find_reference() -> tuple[Path, str | None]:
    """The folder of the official ALOE files, and why the tests that need them skip (None:
    they run). $ALOE_REFERENCE_DIR alone when set (an empty folder shows what skips without
    them); else the project's own fetched copy, then the workspace's shared one: the first
    whose four files are all sound (the pinned sha256s), so that a fetched copy wins."""
    chosen = os.environ.get(reference.ENV_DIR)
    folders = [Path(chosen)] if chosen else [LOCAL_REFERENCE, SHARED_REFERENCE]
    problems = []
    for folder in folders:
        problem = reference.problem(folder)
        if problem is None:
            return folder, None
        problems.append(f"{folder}: {problem}")
    return folders[0], ("the official ALOE files are not here (" + "; ".join(problems) +
                        "): run `aloe reference fetch` (docs/reference-files.md)")


REFERENCE, REFERENCE_MISSING = _find_reference()


def embedded_model() -> Path:
    """The embedded model's folder under MODEL_CACHE, converted from its GGUF file on first
    use: a test that reads it never depends on another test having converted it."""
    from aloe.core.local_model import ensure_embedded_model

    return ensure_embedded_model(MODEL_CACHE)


def tiny_dict(tmp_path: Path, **overrides: dict) -> dict:
    """The tiny profile as a dict, writing under tmp_path, with section overrides merged in.
    Every key resolved (tiny.yaml holds only its differences from the schema's defaults), so
    that a test may read or change any of them; the keys left null are left out (they are null
    by default: no second judge, no preference shift), so every role present is a mapping."""
    data = load_params(ROOT / "params" / "tiny.yaml").model_dump(mode="json", exclude_none=True)
    data["run"]["output_dir"] = str(tmp_path / "outputs")
    data["run"]["cache_path"] = str(tmp_path / "outputs" / "cache" / "llm.sqlite")
    data["local_model"]["cache_dir"] = str(MODEL_CACHE)
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return data


def stub_roles(base_url: str, **settings: object) -> dict:
    """Every LLM role pointed at one OpenAI-protocol server (e.g. tests/support/stub_server)."""
    return {name: {"model": "stub", "base_url": base_url, "temperature": 0.7, "max_tokens": 64,
                   "concurrency": 8, "timeout": 30.0, **settings}
            for name in ("generator", "user", "inducer", "assistant", "judge")}


def write_params(tmp_path: Path, name: str = "params.yaml", **overrides: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_dict(tmp_path, **overrides), sort_keys=False))
    return path


@pytest.fixture
def tiny_params(tmp_path: Path) -> Params:
    """The tiny profile, writing into this test's own folder."""
    return params_from_dict(tiny_dict(tmp_path), source="tiny(test)")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One response cache for the tests that run the same small stage of conversations (the
    second is free), in stage 2's tests and in the exports' tests alike."""
    folder = tmp_path_factory.getbasetemp() / "conversations_cache"
    folder.mkdir(exist_ok=True)
    return folder / "llm.sqlite"


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator["object"]:
    """One real `transformers serve` with the embedded model for the session."""
    from aloe.core.local_model import ensure_embedded_model
    from aloe.llm.server import ENV_MODEL, ENV_URL, export_to_children, start_server

    model = ensure_embedded_model(MODEL_CACHE)
    log = tmp_path_factory.mktemp("server") / "serve.log"
    server = start_server(model, log, timeout=600)
    export_to_children(server)
    yield server
    os.environ.pop(ENV_URL, None)
    os.environ.pop(ENV_MODEL, None)
    server.stop()


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    """The stub server (tests/support/stub_server.py, seed 0) for one test module: every role
    answered at once and always the same way, where what is tested is not what a model writes."""
    with StubServer(seed=0) as server:
        yield server


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The official ALOE files' folder (`_find_reference`); the test skips without them."""
    if REFERENCE_MISSING:
        pytest.skip(REFERENCE_MISSING)
    return REFERENCE


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that reads the official files (`-m needs_reference` lists those that
    skip without them; docs/reference-files.md counts them). Under pytest-xdist, the modules
    with the most slow tests first (`heaviest_modules_first`)."""
    for item in items:
        if "reference_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.needs_reference)
    if _under_xdist(config):
        items[:] = heaviest_modules_first(items)


def _under_xdist(config: pytest.Config) -> bool:
    """A pytest-xdist worker (or its controller): only there does the order of modules decide
    how long the run takes."""
    return hasattr(config, "workerinput") or bool(getattr(config.option, "numprocesses", None))


def heaviest_modules_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """The tests module by module, those with the most tests marked slow first, else in
    collection order. `--dist loadscope` hands a worker a whole module at a time in this order:
    the workbook drill's long shared run starts at once instead of last (its module sorts last
    by name), so that no worker is left alone with it at the end."""
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)

    def slow_tests(module: list[pytest.Item]) -> int:
        return sum(item.get_closest_marker("slow") is not None for item in module)

    ordered = sorted(modules.values(), key=slow_tests, reverse=True)  # stable: ties keep order
    return [item for module in ordered for item in module]


__all__ = ["ROOT", "REFERENCE", "load_params", "stub_roles", "tiny_dict", "write_params"]
