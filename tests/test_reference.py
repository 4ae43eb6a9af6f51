"""`aloe reference`: the official ALOE files fetched over a real HTTP server (Python's own,
on this machine: no test reaches the internet), checked against the pinned sha256s, written
whole or not at all, copied from a folder, and the command run as a person runs it. The tests
that serve the real files skip without them (`reference_dir`); the refusals need no real file."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aloe.stages import reference
from aloe.stages.pools import read_text_pool
from aloe.stages.reference import FILES, ReferenceFilesError, fetch, status
from tests.conftest import LOCAL_REFERENCE, ROOT, _find_reference

ALOE = [sys.executable, "-m", "aloe"]
NAMES = [file.name for file in FILES]


class _Handler(SimpleHTTPRequestHandler):
    """Serves one folder and records each path asked for (quietly)."""

    def __init__(self, *args: object, asked: list[str], **kwargs: object) -> None:
        self.asked = asked
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.asked.append(self.path)
        if self.path.endswith("/broken/profile.jsonl"):  # promises 100 KB, sends 10 bytes
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b'"half a re')
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def serving(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """`folder` over HTTP on 127.0.0.1: its base URL and the list of paths asked for."""
    asked: list[str] = []
    handler = functools.partial(_Handler, asked=asked, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def dead_url() -> str:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/datasets"


def fake_files(folder: Path) -> Path:
    """Four files of the right names whose contents are not the official ones."""
    folder.mkdir(parents=True)
    for name in NAMES:
        (folder / name).write_text('"a persona that is not the official one"\n')
    return folder


def test_fetch_over_http_checks_every_file_and_a_second_fetch_downloads_nothing(
        tmp_path: Path, reference_dir: Path) -> None:
    dest = tmp_path / "reference" / "aloe"
    with serving(reference_dir.parent) as (base, asked):
        url = f"{base}/{reference_dir.name}"
        done = fetch(dest, url)
        assert [name for name, _ in done] == NAMES
        assert all(what.startswith("downloaded:") for _, what in done)
        assert sorted(asked) == sorted(f"/{reference_dir.name}/{name}" for name in NAMES)
        again = fetch(dest, url)
        assert [what for _, what in again] == ["kept (already sound)"] * 4
        assert len(asked) == 4  # nothing asked the second time
    assert sorted(p.name for p in dest.iterdir()) == sorted(NAMES)  # no temporary file left
    for name in NAMES:
        assert (dest / name).read_bytes() == (reference_dir / name).read_bytes()
    assert [state.state for state in status(dest)] == ["sound"] * 4
    assert reference.problem(dest) is None


def test_the_pinned_record_counts_are_the_files(reference_dir: Path) -> None:
    for file in FILES:
        assert len(read_text_pool(reference_dir / file.name)) == file.records, file.name


def test_a_tampered_file_is_refused_and_nothing_of_it_is_written(tmp_path: Path) -> None:
    served = fake_files(tmp_path / "served")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "profile.jsonl").write_text("my own edited copy\n")
    with serving(served) as (base, _), pytest.raises(ReferenceFilesError) as raised:
        fetch(dest, base)
    message = str(raised.value)
    actual = hashlib.sha256((served / "profile.jsonl").read_bytes()).hexdigest()
    assert "\n" not in message
    assert f"{base}/profile.jsonl" in message and "profile.jsonl" in message
    assert actual in message and FILES[0].sha256 in message and "refused" in message
    assert [p.name for p in dest.iterdir()] == ["profile.jsonl"]  # no .part file left
    assert (dest / "profile.jsonl").read_text() == "my own edited copy\n"  # as it was


def test_a_connection_that_breaks_off_leaves_no_file(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with serving(tmp_path) as (base, _), pytest.raises(ReferenceFilesError) as raised:
        fetch(dest, f"{base}/broken")
    assert str(raised.value).startswith(f"cannot read {base}/broken/profile.jsonl: the "
                                        "connection broke off with 99,990 bytes still to come")
    assert list(dest.iterdir()) == []


def test_a_dead_url_and_a_missing_file_are_one_line_naming_the_url(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    url = dead_url()
    with pytest.raises(ReferenceFilesError) as raised:
        fetch(dest, url, timeout=5)
    assert str(raised.value).startswith(f"cannot reach {url}/profile.jsonl (")
    assert "check the network, or pass --from FOLDER" in str(raised.value)
    assert not dest.exists()  # nothing made before a byte arrived
    (tmp_path / "empty").mkdir()
    with serving(tmp_path / "empty") as (base, _), pytest.raises(ReferenceFilesError) as raised:
        fetch(dest, base)
    assert str(raised.value).startswith(f"{base}/profile.jsonl: HTTP 404")


def test_from_a_folder_copies_and_checks(tmp_path: Path, reference_dir: Path) -> None:
    dest = tmp_path / "dest"
    done = fetch(dest, reference_dir)
    assert all(what.startswith("copied:") for _, what in done)
    assert reference.problem(dest) is None
    (dest / "personality_eval.jsonl").write_text("edited\n")
    (dest / "profile_eval.jsonl").unlink()
    assert reference.problem(dest) == "missing profile_eval.jsonl; altered personality_eval.jsonl"
    done = fetch(dest, reference_dir)
    assert [what.split(":")[0] for _, what in done] == [
        "kept (already sound)", "kept (already sound)", "copied",
        "copied (replaced an altered copy)"]
    assert reference.problem(dest) is None


def test_from_a_folder_without_the_files_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ReferenceFilesError, match=r"nowhere/profile.jsonl: not found; --from "
                       "takes a folder holding profile.jsonl, personality.jsonl"):
        fetch(tmp_path / "dest", tmp_path / "nowhere")
    with pytest.raises(ReferenceFilesError, match=r"profile.jsonl: sha256 [0-9a-f]{64}, not "):
        fetch(tmp_path / "dest", fake_files(tmp_path / "fake"))


def aloe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ALOE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_the_command_refuses_in_one_line(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    before = aloe("reference", "status", "--dest", str(dest))
    assert before.returncode == 1
    assert before.stdout.splitlines()[0] == "profile.jsonl: missing"
    assert before.stdout.splitlines()[-1] == (f"{dest}: none of the four files; run `aloe "
                                              "reference fetch`")
    dead = aloe("reference", "fetch", "--dest", str(dest), "--from", dead_url())
    assert dead.returncode == 1
    assert dead.stderr.startswith("aloe: cannot reach http://127.0.0.1:")
    assert len(dead.stderr.splitlines()) == 1
    assert not dest.exists()


def test_the_command_fetches_and_reports(tmp_path: Path, reference_dir: Path) -> None:
    dest = tmp_path / "dest"
    with serving(reference_dir.parent) as (base, _):
        fetched = aloe("reference", "fetch", "--dest", str(dest), "--from",
                       f"{base}/{reference_dir.name}")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.splitlines()[0] == ("profile.jsonl: downloaded: 331 records, sha256 "
                                              "as pinned")
    after = aloe("reference", "status", "--dest", str(dest))
    assert after.returncode == 0
    assert after.stdout.splitlines()[-1].endswith("the four official ALOE files, as pinned "
                                                  "(commit b1b8285)")


def test_the_default_folder_is_where_the_tests_look(tmp_path: Path) -> None:
    """$ALOE_REFERENCE_DIR, else reference/aloe in the project (ALOE_ROOT here); git ignores
    it, so that the files are never committed."""
    fake_project = {"ALOE_ROOT": str(tmp_path), reference.ENV_DIR: ""}
    shown = aloe("reference", "status", env=fake_project)
    assert shown.stdout.splitlines()[-1].startswith(f"{tmp_path / 'reference' / 'aloe'}: ")
    chosen = aloe("reference", "status", env={reference.ENV_DIR: str(tmp_path / "mine")})
    assert chosen.stdout.splitlines()[-1].startswith(f"{tmp_path / 'mine'}: ")
    assert LOCAL_REFERENCE == ROOT / "reference" / "aloe"
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: .gitignore is not in force here")
    ignored = subprocess.run(["git", "check-ignore", "-q", "reference/aloe/profile.jsonl"],
                             cwd=ROOT, timeout=30)
    assert ignored.returncode == 0, ".gitignore must keep reference/ out of git"


def test_the_tests_say_how_to_get_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            ) -> None:
    monkeypatch.setenv(reference.ENV_DIR, str(tmp_path))
    folder, reason = _find_reference()
    assert folder == tmp_path
    assert reason == (f"the official ALOE files are not here ({tmp_path}: none of the four "
                      "files): run `aloe reference fetch` (docs/reference-files.md)")
    fake_files(tmp_path / "x")
    for name in NAMES:
        (tmp_path / "x" / name).replace(tmp_path / name)
    assert _find_reference()[1] == (
        f"the official ALOE files are not here ({tmp_path}: altered {', '.join(NAMES)}): run "
        "`aloe reference fetch` (docs/reference-files.md)")


def test_a_fetched_copy_wins_over_the_shared_one(tmp_path: Path, reference_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The project's own folder first, the workspace's shared copy second, each only when its
    four files are sound; $ALOE_REFERENCE_DIR, when set, alone."""
    import tests.conftest as conftest

    local, shared = tmp_path / "local", tmp_path / "shared"
    monkeypatch.delenv(reference.ENV_DIR, raising=False)
    monkeypatch.setattr(conftest, "LOCAL_REFERENCE", local)
    monkeypatch.setattr(conftest, "SHARED_REFERENCE", shared)
    fetch(shared, reference_dir)
    assert _find_reference() == (shared, None)
    fetch(local, reference_dir)
    assert _find_reference() == (local, None)
    (local / "profile.jsonl").write_text("edited\n")
    assert _find_reference() == (shared, None)
    (shared / "profile.jsonl").unlink()
    assert _find_reference()[1] == (
        f"the official ALOE files are not here ({local}: altered profile.jsonl; {shared}: "
        "missing profile.jsonl): run `aloe reference fetch` (docs/reference-files.md)")
    monkeypatch.setenv(reference.ENV_DIR, str(reference_dir))
    assert _find_reference() == (reference_dir, None)


@pytest.mark.slow
def test_the_docs_count_the_tests_that_skip_without_the_files() -> None:
    """The README and docs/reference-files.md say how many tests skip without the official
    files, file by file: the count is the tests that use the `reference_dir` fixture, listed
    by pytest itself (`-m needs_reference`), so a test added or removed changes it."""
    import re
    from collections import Counter

    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                             "-p", "no:cacheprovider", "-m", "needs_reference", "tests"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    by_file = Counter(line.split("::")[0] for line in listed.splitlines() if "::" in line)
    page = (ROOT / "docs" / "reference-files.md").read_text()
    table = {name: int(n) for name, n in re.findall(r"^\| `(tests/\S+\.py)` \| (\d+) \|", page,
                                                    re.M)}
    assert table == dict(by_file), "docs/reference-files.md's table: " + str(dict(by_file))
    total = sum(by_file.values())
    assert f"**{total} tests skip**" in page
    readme = (ROOT / "README.md").read_text()
    assert f"{total} tests skip" in " ".join(readme.split())
