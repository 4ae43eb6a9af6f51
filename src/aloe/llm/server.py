"""`base_url: local`: a real OpenAI-compatible server (`transformers serve`) on a free loopback
port, serving the configured local model.

One server is shared: the runner starts it once and hands its URL to every notebook kernel
through $ALOE_LOCAL_BASE_URL; an interactive session finds a running one through a state file
beside the response cache. Only the process that started a server stops it (at exit), and the
server does not outlive it: started from a main thread it gets SIGKILL from Linux when its
owner dies (SIGKILL and SIGTERM included, which skip `atexit`); otherwise the state file names
the owner, and the next session that finds the owner gone stops the stray server before
starting its own. A server someone else started and still owns is used, never stopped.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from aloe.core.config import Params
from aloe.core.errors import AloeError
from aloe.core.procs import die_with_parent, is_process, start_time, stop_group

ENV_URL = "ALOE_LOCAL_BASE_URL"
ENV_MODEL = "ALOE_LOCAL_MODEL"


class LocalServerError(AloeError):
    """The local server did not come up; the message says where its log is."""


@dataclass
class LocalServer:
    base_url: str  # ends in /v1
    model: str  # the model id to put in requests (the served folder)
    process: subprocess.Popen[bytes] | None = None  # set when this process started it
    # More servers of the same model (`local_model.servers`): each answers one request at a
    # time, so two on two cores answer two at once.
    replicas: list[LocalServer] = field(default_factory=list)

    @classmethod
    def at(cls, urls: Sequence[str], model: str) -> LocalServer:
        """Servers someone else started, by their URLs (used, never stopped)."""
        return cls(base_url=urls[0], model=model,
                   replicas=[cls(base_url=url, model=model) for url in urls[1:]])

    @property
    def base_urls(self) -> list[str]:
        return [self.base_url, *(replica.base_url for replica in self.replicas)]

    def healthy(self) -> bool:
        return all(healthy(url) for url in self.base_urls)

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


_servers: dict[str, LocalServer] = {}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(base_url: str, timeout: float = 2.0) -> bool:
    root = base_url.removesuffix("/").removesuffix("/v1")
    try:
        return httpx.get(f"{root}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _read_state(state: Path) -> dict | None:
    try:
        data = json.loads(state.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def reap_stray_server(state: Path) -> bool:
    """Stop the server a state file names when the process that started it is gone (a run
    killed before it could stop it); True when one was stopped. A server whose owner is alive,
    or a pid that is no longer the recorded server, is left alone."""
    data = _read_state(state)
    if data is None or not data.get("pid"):
        return False
    if is_process(data.get("owner"), data.get("owner_started")):
        return False
    stopped = False
    for server in [data, *data.get("replicas", [])]:
        if server.get("pid") and is_process(server["pid"], server.get("pid_started")):
            stop_group(int(server["pid"]))
            stopped = True
    state.unlink(missing_ok=True)
    return stopped


def _from_state(params: Params, model: str) -> LocalServer | None:
    """A running server another live session started for this model (used, not owned)."""
    state = params.layout.local_server_state
    reap_stray_server(state)
    data = _read_state(state)
    if not data or data.get("model") != model:
        return None
    server = LocalServer.at([data["base_url"], *(replica["base_url"]
                                                 for replica in data.get("replicas", []))], model)
    return server if server.healthy() else None


def _write_state(state: Path, server: LocalServer) -> None:
    """Who owns the server (pid and start time, so that a reused pid is not mistaken for it)."""
    def where(one: LocalServer) -> dict:
        pid = one.process.pid if one.process else None
        return {"base_url": one.base_url, "pid": pid,
                "pid_started": start_time(pid) if pid else None}

    owner = os.getpid()
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({**where(server), "model": server.model,
                                 "replicas": [where(replica) for replica in server.replicas],
                                 "owner": owner, "owner_started": start_time(owner)}))


def serve_command(model_dir: Path, port: int, continuous_batching: bool = False,
                  options: Sequence[str] = ()) -> list[str]:
    """The `transformers serve` command line; `options` are more of its flags (bench/)."""
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"
               if not _has_cuda() else "auto", "--log-level", "warning"]
    if continuous_batching:
        command.append("--continuous-batching")
    return [*command, *options]


def server_env(threads: int | None = None) -> dict[str, str]:
    """The server's environment: offline, and its torch threads (`threads`, else
    $OMP_NUM_THREADS, else half the cores)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    # On CPU the server shares the cores with the notebook kernel (training, batched
    # evaluation): half of them each is much faster than both oversubscribing all of them.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def start_server(model_dir: Path, log_path: Path, timeout: float,
                 continuous_batching: bool = False, options: Sequence[str] = (),
                 threads: int | None = None) -> LocalServer:
    """Start `transformers serve` on a free loopback port and wait for /health (`options`,
    `threads`: see `serve_command` and `server_env`)."""
    return start_servers(model_dir, log_path, timeout, 1, continuous_batching, options,
                         threads)


def start_servers(model_dir: Path, log_path: Path, timeout: float, count: int,
                  continuous_batching: bool = False, options: Sequence[str] = (),
                  threads: int | None = None) -> LocalServer:
    """Start `count` servers of one model at once (they load side by side) and wait until
    each answers /health; the first, with the others as its `replicas`. Every one writes to
    `log_path`."""
    servers = [_launch(model_dir, log_path, continuous_batching, options, threads)
               for _ in range(count)]
    first = servers[0]
    first.replicas = servers[1:]
    deadline = time.monotonic() + timeout
    try:
        for server in servers:
            _wait_until_healthy(server, deadline, timeout, log_path)
    except LocalServerError:
        first.stop()
        raise
    atexit.register(first.stop)
    return first


def _launch(model_dir: Path, log_path: Path, continuous_batching: bool,
            options: Sequence[str], threads: int | None) -> LocalServer:
    port = _free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = serve_command(model_dir, port, continuous_batching, options)
    with open(log_path, "ab") as log:  # its own session: the terminal's Ctrl-C is the run's
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=server_env(threads), start_new_session=True,
                                   preexec_fn=die_with_parent())
    return LocalServer(base_url=f"http://127.0.0.1:{port}/v1", model=str(model_dir),
                       process=process)


def _wait_until_healthy(server: LocalServer, deadline: float, timeout: float,
                        log_path: Path) -> None:
    process = server.process
    assert process is not None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalServerError(
                f"transformers serve exited with code {process.returncode}; see {log_path}")
        if healthy(server.base_url, timeout=1.0):
            return
        time.sleep(0.5)
    raise LocalServerError(f"transformers serve did not answer /health in {timeout:.0f}s; "
                           f"see {log_path}")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def ensure_local_server(params: Params) -> LocalServer:
    """The running local server for these params, started if none is up."""
    from aloe.core.local_model import local_model_path

    urls = [url for url in os.environ.get(ENV_URL, "").split(",") if url]
    if urls:
        exported = LocalServer.at(urls, os.environ.get(ENV_MODEL) or str(local_model_path(params)))
        if exported.healthy():
            return exported
    model = str(local_model_path(params))
    if model in _servers and _servers[model].healthy():
        return _servers[model]
    server = _from_state(params, model)
    if server is None:
        server = start_servers(Path(model), params.layout.local_server_log,
                               params.local_model.startup_timeout, params.local_model.servers,
                               params.local_model.continuous_batching)
        _write_state(params.layout.local_server_state, server)
    _servers[model] = server
    return server


def export_to_children(server: LocalServer) -> None:
    """Make notebook kernels started from this process reuse the server (and its replicas:
    $ALOE_LOCAL_BASE_URL lists every URL, comma-separated)."""
    os.environ[ENV_URL] = ",".join(server.base_urls)
    os.environ[ENV_MODEL] = server.model
