"""Stage stamps: recognise a finished stage whose parameters, inputs and code are unchanged.

After a stage's notebook succeeds the runner records, in `RUN/stamps/NN_name.json`, hashes of

- the parameters as resolved (every key but the locations: `manifest.LOCATION_KEYS`);
- the code: the stage's notebook, every file of the `aloe` package (prompts included) and the
  versions of the packages a run records;
- what the run reads from outside its folder: each file or folder a parameter names, the local
  model by its content (`local_model.model_identity`), the hub snapshots of named models;
- its inputs: every file of the run folder that no stage from this one on wrote (the usage
  ledger only for the report, its one reader);
- its products: every file of the run folder it wrote (found by comparing the folder's listing
  before and after it ran), and those it wrote before and still owns; the ledger aside.

A stage is fresh when its stamp is whole and every hash matches the files as they are now: the
runner then keeps its executed notebook and starts no kernel. A file written by several stages
(a model card the report rewrites) belongs to the last of them. Bookkeeping the runner rewrites
on every invocation (runner.json, manifest.json, progress.json, the executed notebooks) is
neither an input nor a product. A stage that starts is marked unfinished, which never matches,
until it succeeds; a failed stage keeps the files it wrote as its own, and so does one killed
midway (the next run credits it with what changed since it started: `StageStamps.settle`).

Hashes are of content (sha256), read once per file per invocation.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aloe.core.config import Params, is_url, resolve_path
from aloe.core.layout import RunLayout
from aloe.core.records import write_json

STAMP_VERSION = 1
# The runner's own files and folders, rewritten by every invocation whatever ran.
BOOKKEEPING_FILES = frozenset({".lock", "runner.json", "progress.json", "manifest.json"})
BOOKKEEPING_DIRS = ("notebooks/", "stamps/", "usage/live/")
_CODE_SKIPPED = ("__pycache__",)
# The usage ledger: every stage that sends requests adds to it, only the report reads it (its
# spend tables). It is no stage's product and no input but the report's: else the preflight,
# which runs whenever anything does, would make the stages after it run again.
LEDGER = "usage/"
LEDGER_READERS = frozenset({"06_report"})

Listing = dict[str, tuple[int, int]]  # relative path -> (size, modification time in ns)


def stamp_dir(layout: RunLayout) -> Path:
    return layout.run_dir / "stamps"


def stamp_path(layout: RunLayout, stage: str) -> Path:
    """Where stage `stage` (a notebook's stem, e.g. 02_conversations) keeps its stamp."""
    return stamp_dir(layout) / f"{stage}.json"


def stage_number(stage: str) -> int:
    return int(stage[:2])


def _is_bookkeeping(relative: str) -> bool:
    return relative in BOOKKEEPING_FILES or relative.startswith(BOOKKEEPING_DIRS)


def listing(run_dir: Path) -> Listing:
    """Every file of the run folder but the bookkeeping, with its size and modification time:
    cheap enough to take before and after each stage."""
    found: Listing = {}
    if not run_dir.is_dir():
        return found
    for path in run_dir.rglob("*"):
        relative = path.relative_to(run_dir).as_posix()
        if _is_bookkeeping(relative) or not path.is_file() or path.is_symlink():
            continue
        status = path.stat()
        found[relative] = (status.st_size, status.st_mtime_ns)
    return found


def written_between(before: Listing, after: Listing) -> set[str]:
    """The files that appeared or changed between two listings."""
    return {name for name, seen in after.items() if before.get(name) != seen}


@dataclass
class Hasher:
    """Content hashes, each file read once per invocation (kept by path, size, mtime)."""

    known: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def file(self, path: Path) -> str:
        status = path.stat()
        key = (str(path), status.st_size, status.st_mtime_ns)
        if key not in self.known:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            self.known[key] = digest.hexdigest()
        return self.known[key]

    def files(self, run_dir: Path, names: Iterable[str]) -> dict[str, str]:
        return {name: self.file(run_dir / name) for name in sorted(names)}


# ------------------------------------------------------------------------------------------
# What a stage is made with: parameters, code, what it reads from outside the run folder
# ------------------------------------------------------------------------------------------
def _digest_of(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _without_locations(tree: dict[str, Any]) -> dict[str, Any]:
    from aloe.core.manifest import LOCATION_KEYS

    kept = json.loads(json.dumps(tree))
    for key in LOCATION_KEYS:
        section, name = key.split(".")
        kept.get(section, {}).pop(name, None)
    return kept


def params_digest(params: Params) -> str:
    """The resolved parameters, less where files go (the run's name and folders)."""
    return _digest_of(_without_locations(params.model_dump(mode="json")))


def package_folder() -> Path:
    import aloe

    return Path(aloe.__file__).resolve().parent


def package_digest(package: Path | None = None) -> str:
    """Every file of the package (code, prompts, seeds) and the versions of the libraries a
    run records."""
    from aloe.core.manifest import package_versions

    digest = hashlib.sha256()
    folder = package or package_folder()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(part in _CODE_SKIPPED for part in path.parts):
            digest.update(f"\0{path.relative_to(folder).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    digest.update(json.dumps(package_versions(), sort_keys=True).encode())
    return digest.hexdigest()


def code_digest(notebook: Path, package: Path | None = None, packaged: str | None = None) -> str:
    """The notebook and the package (`packaged`: its digest, when known): a change to either
    reruns the stage."""
    digest = hashlib.sha256(notebook.read_bytes())
    digest.update((packaged or package_digest(package)).encode())
    return digest.hexdigest()


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string leaf of the parameters with its dotted key (lists included)."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _strings(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{key}[{index}]")
    elif isinstance(value, str):
        yield key, value


def _folder_digest(folder: Path, hasher: Hasher) -> str:
    """A model folder by its content identity; any other folder by every file's content."""
    from aloe.core.local_model import model_identity

    identity = model_identity(str(folder))
    if identity != str(folder):
        return identity
    return _digest_of({path.relative_to(folder).as_posix(): hasher.file(path)
                       for path in sorted(folder.rglob("*")) if path.is_file()})


def outside_inputs(params: Params, hasher: Hasher) -> dict[str, str]:
    """What a run reads from outside its folder, by content: each file or folder a parameter
    names (seeds, reference files, models, adapters), the local model, the hub snapshots of
    the models named (the embedding model's included)."""
    from aloe.core import manifest

    dump = _without_locations(params.model_dump(mode="json"))
    found: dict[str, str] = {}
    for key, value in _strings(dump):
        if not value or is_url(value) or "\n" in value or len(value) > 4096:
            continue
        path = resolve_path(value, params._root)  # as the parameters resolve it
        if path.is_file():
            found[key] = hasher.file(path)
        elif path.is_dir():
            found[key] = _folder_digest(path, hasher)
    local = Path(manifest.local_model_folder(params))
    found["local model"] = _folder_digest(local, hasher) if local.is_dir() else "absent"
    found["models"] = _digest_of(manifest.models(params))
    found["embedding model"] = str(manifest.model_snapshot(params.personas.embedding_model))
    return found


# ------------------------------------------------------------------------------------------
# Stamps
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """Whether a stage may be skipped, and if not, what changed (shown on its line)."""

    fresh: bool
    reason: str


@dataclass
class StageStamps:
    """The stamps of one run folder, and the hashes of what they depend on (the code and the
    outside inputs computed once per invocation, but again after a stage: the first stage to
    need the embedded model converts it)."""

    layout: RunLayout
    params: Params
    hasher: Hasher = field(default_factory=Hasher)
    _outside: str | None = None
    _package: str | None = None
    _code: dict[str, str] = field(default_factory=dict)

    def read(self, stage: str) -> dict[str, Any] | None:
        try:
            found = json.loads(stamp_path(self.layout, stage).read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def _all(self) -> dict[str, dict[str, Any]]:
        found = {}
        for path in sorted(stamp_dir(self.layout).glob("[0-9][0-9]_*.json")):
            stamp = self.read(path.stem)
            if stamp is not None:
                found[path.stem] = stamp
        return found

    def owned_from(self, number: int, exclude: str | None = None) -> set[str]:
        """The files written by stage `number` or a later one (by their stamps)."""
        return {name for stage, stamp in self._all().items()
                if stage_number(stage) >= number and stage != exclude
                for name in stamp.get("products") or {}}

    def _made_with(self, notebook: Path) -> dict[str, str]:
        if self._outside is None:
            self._outside = _digest_of(outside_inputs(self.params, self.hasher))
        if notebook.stem not in self._code:
            if self._package is None:
                self._package = package_digest()
            self._code[notebook.stem] = code_digest(notebook, packaged=self._package)
        return {"params": params_digest(self.params), "code": self._code[notebook.stem],
                "outside": self._outside}

    def _not_inputs(self, stage: str, products: Iterable[str]) -> set[str]:
        """The files this stage or a later one wrote: none of them is its input."""
        return self.owned_from(stage_number(stage), exclude=stage) | set(products)

    def _inputs(self, stage: str, products: Iterable[str], current: Listing) -> dict[str, str]:
        """Every file no stage from this one on wrote: what this stage may have read."""
        names = set(current) - self._not_inputs(stage, products)
        if stage not in LEDGER_READERS:
            names = {name for name in names if not name.startswith(LEDGER)}
        return self.hasher.files(self.layout.run_dir, names)

    def check(self, notebook: Path) -> Verdict:
        """Fresh when the stage finished with these parameters, code and inputs, and what it
        wrote is still there, unchanged; else every kind of change found, "; "-separated."""
        stamp = self.read(notebook.stem)
        if stamp is None or stamp.get("version") != STAMP_VERSION:
            return Verdict(False, "not run before")
        if not (stamp.get("complete") and isinstance(stamp.get("products"), dict)
                and isinstance(stamp.get("inputs"), dict)):
            return Verdict(False, "did not finish last time")
        if not self.layout.executed_notebook(notebook.name).is_file():
            return Verdict(False, "its executed notebook is missing")
        made_with = self._made_with(notebook)
        reasons = [f"{label} changed" for part, label in (
            ("params", "parameters"), ("code", "code"), ("outside", "outside inputs"))
            if stamp.get(part) != made_with[part]]
        current = listing(self.layout.run_dir)
        reasons += self._changed_products(notebook.stem, stamp, current)[:1]
        inputs = self._inputs(notebook.stem, stamp["products"], current)
        later = self._not_inputs(notebook.stem, stamp["products"])  # a later stage wrote over
        recorded = {name: digest for name, digest in stamp["inputs"].items() if name not in later}
        changed = sorted(name for name in inputs.keys() | recorded.keys()
                         if inputs.get(name) != recorded.get(name))
        reasons += [f"input {name} changed" for name in changed[:1]]
        return Verdict(not reasons, "; ".join(reasons) or "unchanged")

    def _changed_products(self, stage: str, stamp: dict[str, Any],
                          current: Listing) -> list[str]:
        """The stage's products that are gone or differ (those a later stage rewrote are
        that stage's to check)."""
        later = self.owned_from(stage_number(stage) + 1)
        found = []
        for name, digest in stamp["products"].items():
            if name in later:
                continue
            if name not in current:
                found.append(f"{name} is missing")
            elif self.hasher.file(self.layout.run_dir / name) != digest:
                found.append(f"{name} changed")
        return found

    def record(self, notebook: Path, before: Listing, complete: bool) -> None:
        """Stamp a stage that ran: the files it wrote now, and those it wrote before that are
        still there (a stage that finds its work done writes nothing). An unfinished stage
        keeps its files' ownership but never matches."""
        stage, current = notebook.stem, listing(self.layout.run_dir)
        previous = (self.read(stage) or {}).get("products") or {}
        kept = {name for name in previous if name in current}
        written = {name for name in written_between(before, current) | kept
                   if not name.startswith(LEDGER)}
        products = self.hasher.files(self.layout.run_dir, written)
        stamp: dict[str, Any] = {"version": STAMP_VERSION, "stage": stage, "complete": complete,
                                 "stamped": time.time(), "products": products}
        if complete:
            self._outside = None
            stamp.update(self._made_with(notebook),
                         inputs=self._inputs(stage, products, current))
        stamp_dir(self.layout).mkdir(parents=True, exist_ok=True)
        write_json(stamp_path(self.layout, stage), stamp)

    def start(self, stage: str, before: Listing) -> None:
        """Before a stage runs: its stamp no longer vouches for anything, and it keeps the
        folder's listing, so that a run killed midway has the files it wrote credited to the
        stage on the next run (`settle`) instead of leaving them to no stage, inputs of all."""
        previous = (self.read(stage) or {}).get("products") or {}
        stamp_dir(self.layout).mkdir(parents=True, exist_ok=True)
        write_json(stamp_path(self.layout, stage),
                   {"version": STAMP_VERSION, "stage": stage, "complete": False,
                    "stamped": time.time(), "products": previous,
                    "running_since": [[name, *seen] for name, seen in before.items()]})

    def settle(self) -> None:
        """Credit a stage that was killed midway (its stamp still says running) with the files
        that changed since it started and that no other stage wrote."""
        stamps = self._all()
        for stage, stamp in stamps.items():
            if "running_since" not in stamp:
                continue
            before = {entry[0]: (entry[1], entry[2]) for entry in stamp.pop("running_since")}
            others = {name for other, found in stamps.items() if other != stage
                      for name in found.get("products") or {}}
            current = listing(self.layout.run_dir)
            written = {name for name in written_between(before, current) - others
                       if not name.startswith(LEDGER)}
            stamp["products"] = {**{name: digest for name, digest
                                    in (stamp.get("products") or {}).items() if name in current},
                                 **self.hasher.files(self.layout.run_dir, written)}
            write_json(stamp_path(self.layout, stage), stamp)
