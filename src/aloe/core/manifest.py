"""The run's manifest: what a run was made with, written by the runner when a run starts.

`RUN/manifest.json` holds the code's git commit and whether its tree was dirty (with a hash of
the uncommitted changes), every parameter as resolved (defaults and command-line overrides
applied: `params.model_dump(mode="json")`), the seeds, the models with their snapshots, package
versions, the hardware and the workbook's version. A later `aloe run` of the same folder with
other code or parameters keeps the earlier ones' commit and changed keys under `earlier`.

The report, the comparison page (`aloe compare`) and the adapters' model cards read it. Nothing
a person reads shows a machine path: `portable` writes a path inside the project relative to
it, and one outside the project as its last component.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from aloe.core.config import Params, is_url, project_root, resolve_path
from aloe.core.layout import RunLayout
from aloe.core.records import read_json, write_json

PACKAGES = ("aloe", "torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate",
            "datasets", "openai", "sentence-transformers", "numpy", "pandas")
# Keys that say where a run's files go, not what the run did: never a difference between runs.
LOCATION_KEYS = frozenset({"run.name", "run.output_dir", "run.cache_path",
                           "local_model.cache_dir"})
EARLIER_KEPT = 20
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]")


# ------------------------------------------------------------------------------------------
# Paths a reader may see
# ------------------------------------------------------------------------------------------
def is_machine_path(value: str) -> bool:
    """An absolute path of this machine (not a URL, not a relative path or a hub id)."""
    return not is_url(value) and (value.startswith(("/", "~")) or bool(_WINDOWS_PATH.match(value)))


def display_path(path: str | os.PathLike[str], root: Path | None = None) -> str:
    """A path as a report may print it: relative to the project root when inside it, else
    only its last component after an ellipsis (`…/SmolLM2-135M-Instruct`)."""
    text = str(path)
    if not is_machine_path(text):
        return text
    absolute = Path(os.path.normpath(Path(text).expanduser()))
    base = Path(os.path.normpath(root or project_root()))
    try:
        relative = absolute.relative_to(base).as_posix()
    except ValueError:
        return f"…/{absolute.name}"
    return relative or "."


def portable(value: Any, root: Path | None = None) -> Any:
    """`value` (a JSON-like structure) with every machine path replaced by `display_path`."""
    if isinstance(value, dict):
        return {key: portable(item, root) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item, root) for item in value]
    if isinstance(value, str) and is_machine_path(value):
        return display_path(value, root)
    return value


def _shown_word(word: str) -> str:
    key, sep, value = word.partition("=")
    if sep and is_machine_path(value):  # --set local_model.path=/home/...
        return f"{key}={display_path(value)}"
    return display_path(word)


def stage_line(params: Params) -> str:
    """The line a stage notebook prints first: the parameter file (with the command line's
    changes) and the run folder, as the report shows paths (never a machine path)."""
    source = " ".join(_shown_word(word) for word in str(params.source).split(" "))
    return f"profile: {source}  ->  run folder: {display_path(params.layout.run_dir)}"


# An absolute path inside a sentence: not part of a URL, a relative path or a unit (tokens/s)
_PATH_IN_TEXT = re.compile(r"(?<![\w.:/~-])~?/(?:[\w.@+-]+/)*[\w.@+-]+")


def shown_text(text: str) -> str:
    """A sentence with every machine path in it written as `display_path` writes it."""
    return _PATH_IN_TEXT.sub(lambda found: display_path(found.group(0)), text)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as dotted keys (`dpo.trainer.beta`); lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# ------------------------------------------------------------------------------------------
# What the manifest records
# ------------------------------------------------------------------------------------------
def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_folder() -> Path:
    """The folder of the `aloe` package that is running (its git repository is the code's)."""
    import aloe

    return Path(aloe.__file__).resolve().parent


def git_state(folder: Path | None = None) -> dict[str, Any]:
    """The commit of the code, whether its tree had uncommitted changes, and a hash of them
    (None everywhere when the code is not in a git repository)."""
    folder = folder or code_folder()
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "changes_sha256": None}
    status = _git(folder, "status", "--porcelain") or ""
    diff = _git(folder, "diff", "HEAD") or ""
    changes = hashlib.sha256((status + diff).encode()).hexdigest()[:16] if status else None
    return {"commit": commit.strip(), "dirty": bool(status.strip()), "changes_sha256": changes}


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Python's version and each package's installed version ("not installed" if absent)."""
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        return None


def hardware() -> dict[str, Any]:
    """CPU, memory and GPUs of the machine the run started on."""
    found: dict[str, Any] = {"machine": platform.machine(), "system": platform.system(),
                             "cpu_cores": os.cpu_count(), "memory_gb": _memory_gb(),
                             "gpus": [], "cuda": None}
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return found
    if torch.cuda.is_available():
        found["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        found["cuda"] = torch.version.cuda
    return found


def hardware_summary(found: dict[str, Any]) -> str:
    """One line: the GPUs, else the CPU cores, and the memory."""
    memory = f", {found['memory_gb']} GB memory" if found.get("memory_gb") else ""
    gpus = found.get("gpus") or []
    if gpus:
        return f"{gpus[0]} x{len(gpus)} (CUDA {found.get('cuda')}){memory}"
    return f"CPU only ({found.get('cpu_cores')} cores, {found.get('machine')}){memory}"


def model_snapshot(reference: str) -> str | None:
    """Which weights a model reference named when the run started: the cached hub revision
    of an id, the content hash of a folder's config.json, the embedded model's package."""
    from aloe.core.local_model import embedded_source, is_embedded

    if reference in ("", "local") or is_url(reference):
        return None
    folder = Path(reference).expanduser()
    if folder.is_dir():
        if is_embedded(folder):
            return embedded_source()
        config = folder / "config.json"
        digest = hashlib.sha256(config.read_bytes()).hexdigest()[:12] if config.exists() else None
        return f"folder, config.json sha256 {digest}" if digest else "folder"
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    try:
        cached = try_to_load_from_cache(reference, "config.json")
    except ValueError:  # neither a folder here nor a hub id (a path of another machine)
        return None
    if isinstance(cached, str) and "/snapshots/" in cached:
        return "hub revision " + cached.split("/snapshots/")[1].split("/")[0]
    return None  # an API model (no snapshot to name) or an id not downloaded yet


def local_model_folder(params: Params) -> str:
    """The model a `base_url: local` role is served and the default policy: local_model.path,
    else the embedded model's folder (named without converting it)."""
    from aloe.core.local_model import EMBEDDED_NAME

    if params.local_model.path:
        return str(resolve_path(params.local_model.path))
    return str(resolve_path(params.local_model.cache_dir) / EMBEDDED_NAME)


def models(params: Params) -> dict[str, Any]:
    """Each LLM role's model and backend, and the trained policy's base, with snapshots."""
    local = local_model_folder(params)
    roles = {}
    for name, role in params.roles.as_mapping().items():
        model = local if role.is_local else role.model
        roles[name] = {"model": model, "base_url": role.base_url,
                       "snapshot": model_snapshot(model)}
    policy = params.sft.base_model or local
    return {"roles": roles, "policy": {"base_model": policy, "snapshot": model_snapshot(policy)},
            "evaluated": [m.model_dump(mode="json") for m in params.evaluation.models]}


def seeds(params: Params) -> dict[str, int]:
    """Every seed of a run: each comes from run.seed."""
    seed = params.run.seed
    return {"run.seed": seed, "sampling and conversation choices": seed, "training": seed,
            "bootstrap": seed}


def params_file_label(params_file: str | os.PathLike[str] | None) -> str | None:
    return display_path(params_file) if params_file else None


def build(params: Params, params_file: str | os.PathLike[str] | None = None,
          stages: list[str] | None = None) -> dict[str, Any]:
    """The manifest of a run starting now (not written)."""
    return {
        "run": params.run.name,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "workbook_version": package_versions()["aloe"],
        "git": git_state(),
        "params_file": params_file_label(params_file),
        "stages": stages,
        "params": params.model_dump(mode="json"),
        "seeds": seeds(params),
        "models": models(params),
        "packages": package_versions(),
        "hardware": hardware(),
    }


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The dotted parameter keys whose values differ (locations left out)."""
    a, b = flatten(before), flatten(after)
    return sorted(k for k in a.keys() | b.keys()
                  if k not in LOCATION_KEYS and a.get(k) != b.get(k))


def _earlier(previous: dict[str, Any] | None, current: dict[str, Any]) -> list[dict[str, Any]]:
    """The earlier invocations worth keeping: those with other code or other parameters."""
    if not previous:
        return []
    kept = list(previous.get("earlier") or [])
    changed = changed_keys(previous.get("params") or {}, current["params"])
    if previous.get("git") != current["git"] or changed:
        kept.append({"started": previous.get("started"), "stages": previous.get("stages"),
                     "git": previous.get("git"), "changed": changed})
    return kept[-EARLIER_KEPT:]


def write(params: Params, params_file: str | os.PathLike[str] | None = None,
          stages: list[str] | None = None) -> Path:
    """Write `RUN/manifest.json` for a run that starts now (the runner calls this)."""
    layout = params.layout
    current = build(params, params_file, stages)
    current["earlier"] = _earlier(read(layout), current)
    write_json(layout.manifest, current)
    return layout.manifest


def read(layout: RunLayout) -> dict[str, Any] | None:
    """A run's manifest, or None for a run made before manifests (or not by the runner)."""
    return read_json(layout.manifest) if layout.manifest.exists() else None


def load_or_build(params: Params) -> dict[str, Any]:
    """The run's manifest, or one built now (a notebook run outside `aloe run`), marked so."""
    found = read(params.layout)
    if found is not None:
        return found
    built = build(params, params.source)
    built["note"] = "no manifest.json in the run folder: built when read, not when the run started"
    return built


def commit_label(manifest: dict[str, Any]) -> str:
    """`abc1234` , `abc1234 + uncommitted changes`, or `not in a git repository`."""
    git = manifest.get("git") or {}
    if not git.get("commit"):
        return "not in a git repository"
    return git["commit"][:12] + (" + uncommitted changes" if git.get("dirty") else "")


def started_label(manifest: dict[str, Any]) -> str:
    """When the run started, as '2026-11-30 14:40 UTC'."""
    started = manifest.get("started")
    if not started:
        return "not recorded"
    return dt.datetime.fromisoformat(started).astimezone(dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")


def dumps(manifest: dict[str, Any]) -> str:
    """The manifest as a reader may see it: indented JSON without machine paths."""
    return json.dumps(portable(manifest), indent=2, sort_keys=False)
