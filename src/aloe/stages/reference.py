"""The official ALOE persona files, pinned to one commit and checked by their sha256.

The project does not ship these four files: they carry no licence that allows redistribution.
`aloe reference fetch` downloads them from the ALOE authors' repository at the pinned commit
(or copies them from a folder, for a machine without the network), refuses any file whose
checksum is not the pinned one, and puts them where the tests look (`DEFAULT_FOLDER` under the
project, or $ALOE_REFERENCE_DIR). `aloe reference status` says which are there and sound.
What they are for, and what skips without them: docs/reference-files.md.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aloe.core.errors import AloeError, writing

COMMIT = "b1b8285e3a759c8f7d9b84034447c89857f02e98"
BASE_URL = f"https://raw.githubusercontent.com/ShujinWu-0814/ALOE/{COMMIT}/datasets"
DEFAULT_FOLDER = Path("reference") / "aloe"  # under the project; .gitignore keeps it out of git
ENV_DIR = "ALOE_REFERENCE_DIR"  # another folder, for `aloe reference` and the tests alike
MAX_BYTES = 8 * 1024 * 1024  # the largest file is ~100 KB: more is not the pinned file
TIMEOUT_S = 60.0
FROM_HINT = "check the network, or pass --from FOLDER holding the four files"


class ReferenceFilesError(AloeError):
    """The official files could not be had: the network, a missing source file, or a file
    whose checksum is not the pinned one (refused: nothing of it is written)."""


@dataclass(frozen=True)
class ReferenceFile:
    """One pinned file: its name under `datasets/`, its sha256 and how many records it holds
    (`pools.read_text_pool`'s count: line 6 of profile.jsonl holds two)."""

    name: str
    sha256: str
    records: int
    what: str


FILES: tuple[ReferenceFile, ...] = (
    ReferenceFile("profile.jsonl",
                  "da50fe0d650f8ec39c21fd425fdb3f6a63f6cf0153ddf0cfede597b83f533918", 331,
                  "training pool of user profiles"),
    ReferenceFile("personality.jsonl",
                  "6b62c41a029a60c27a51113869cb69060e061078d9c20ab580de88ca70e38b07", 71,
                  "training pool of personality descriptions"),
    ReferenceFile("profile_eval.jsonl",
                  "3d58a1d36fb2b6a39069ebd5f65b7ac34894f3fbe36a05ac0eb5779c4fde9652", 20,
                  "benchmark profiles"),
    ReferenceFile("personality_eval.jsonl",
                  "01251b2537c838cf417fad652c692ede14182875b834f821bbc7e8b74dd53cc6", 7,
                  "benchmark personalities (the benchmark uses the first 5)"),
)


def default_dest() -> Path:
    """$ALOE_REFERENCE_DIR when set, else `DEFAULT_FOLDER` under the project: where the
    tests look first."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser().resolve()
    from aloe.core.config import project_root

    return project_root() / DEFAULT_FOLDER


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileState:
    """One pinned file in a folder: 'sound' (the pinned checksum), 'missing' or 'altered'."""

    file: ReferenceFile
    path: Path
    state: str
    digest: str | None = None

    def line(self) -> str:
        if self.state == "sound":
            return f"{self.file.name}: sound ({self.file.records} records, sha256 as pinned)"
        if self.state == "missing":
            return f"{self.file.name}: missing"
        return (f"{self.file.name}: altered (sha256 {self.digest}, pinned "
                f"{self.file.sha256})")


def _state(file: ReferenceFile, dest: Path) -> FileState:
    path = dest / file.name
    if not path.is_file():
        return FileState(file, path, "missing")
    digest = sha256_of(path)
    return FileState(file, path, "sound" if digest == file.sha256 else "altered", digest)


def status(dest: Path) -> list[FileState]:
    """Each pinned file's state in `dest`, in `FILES` order."""
    return [_state(file, Path(dest)) for file in FILES]


def problem(dest: Path) -> str | None:
    """None when all four files in `dest` are sound; else one phrase naming what is not
    (missing, or altered), for a skip reason or a status line."""
    states = status(dest)
    if all(state.state == "missing" for state in states):
        return "none of the four files"
    parts = [f"{kind} {', '.join(s.file.name for s in states if s.state == kind)}"
             for kind in ("missing", "altered") if any(s.state == kind for s in states)]
    return "; ".join(parts) or None


def fetch(dest: Path, source: str | Path = BASE_URL,
          timeout: float = TIMEOUT_S) -> list[tuple[str, str]]:
    """Put the four pinned files into `dest` from `source`: a base URL (default: the ALOE
    repository at `COMMIT`) or a local folder. A file already there and sound is kept; any
    other is written whole or not at all (a temporary file, renamed once its checksum is the
    pinned one). Returns (name, what was done) per file; raises ReferenceFilesError."""
    dest = Path(dest)
    done = []
    for file in FILES:
        state = _state(file, dest)
        if state.state == "sound":
            done.append((file.name, "kept (already sound)"))
            continue
        with _opened(source, file.name, timeout) as (stream, where):
            _receive(stream, dest / file.name, file, where)
        verb = "downloaded" if _is_url(source) else "copied"
        replaced = " (replaced an altered copy)" if state.state == "altered" else ""
        done.append((file.name, f"{verb}{replaced}: {file.records} records, sha256 as pinned"))
    return done


def _is_url(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


@contextmanager
def _opened(source: str | Path, name: str,
            timeout: float) -> Iterator[tuple[BinaryIO, str]]:
    """The file `name` of `source` opened for reading, and where it came from (for errors)."""
    if not _is_url(source):
        path = Path(source).expanduser() / name
        if not path.is_file():
            raise ReferenceFilesError(
                f"{path}: not found; --from takes a folder holding "
                f"{', '.join(f.name for f in FILES)} (or a base URL)")
        with path.open("rb") as stream:
            yield stream, str(path)
        return
    url = f"{str(source).rstrip('/')}/{name}"
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (http(s) only)
    except urllib.error.HTTPError as error:
        raise ReferenceFilesError(f"{url}: HTTP {error.code} {error.reason}; check the URL "
                                  f"(the files are under datasets/ at commit {COMMIT[:7]}), "
                                  "or pass --from FOLDER holding the four files") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise ReferenceFilesError(f"cannot reach {url} ({_reason(error)}): {FROM_HINT}") \
            from None
    with response:
        yield response, url


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None) or error
    return " ".join(str(getattr(reason, "strerror", None) or reason).split())


def _receive(stream: BinaryIO, target: Path, file: ReferenceFile, where: str) -> None:
    """Copy `stream` into `target` through a temporary file beside it, hashing as it goes;
    renamed into place only when the checksum is the pinned one, removed otherwise."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                         suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out, writing(target):
            digest = _copy_hashing(stream, out, where)
        if digest != file.sha256:
            raise ReferenceFilesError(
                f"{where}: sha256 {digest}, not the pinned {file.sha256} ({file.name} at ALOE "
                f"commit {COMMIT[:7]}); refused, {target} untouched: check the source "
                "(--from), or fetch from the pinned URL")
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 is for the file half-written
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _copy_hashing(stream: BinaryIO, out: BinaryIO, where: str) -> str:
    digest, size = hashlib.sha256(), 0
    while chunk := _read(stream, where):
        size += len(chunk)
        if size > MAX_BYTES:
            raise ReferenceFilesError(f"{where}: more than {MAX_BYTES >> 20} MiB, not the "
                                      "pinned file; check the source (--from)")
        digest.update(chunk)
        out.write(chunk)
    left = getattr(stream, "length", None)  # an HTTP response's bytes still due
    if left:
        raise ReferenceFilesError(f"cannot read {where}: the connection broke off with "
                                  f"{left:,} bytes still to come; {FROM_HINT}")
    return digest.hexdigest()


def _read(stream: BinaryIO, where: str) -> bytes:
    """The next chunk; a connection that breaks off mid-file is one line, as one never made."""
    try:
        return stream.read(1 << 16)
    except (OSError, http.client.HTTPException) as error:
        raise ReferenceFilesError(f"cannot read {where} ({_reason(error)}): {FROM_HINT}") \
            from None


__all__ = ["BASE_URL", "COMMIT", "DEFAULT_FOLDER", "ENV_DIR", "FILES", "FileState",
           "ReferenceFile", "ReferenceFilesError", "default_dest", "fetch", "problem",
           "sha256_of", "status"]
