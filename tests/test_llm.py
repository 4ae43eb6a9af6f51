"""The LLM layer against the real local server (`transformers serve` with the embedded model):
bounded concurrency, the response cache, distinct samples, retries through a fault-injecting
proxy, the usage ledger, and API keys that never leave the environment."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from aloe.core.config import RoleConfig, params_from_dict
from aloe.core.layout import RunLayout
from aloe.llm import LLM, LLMError, MissingKeyError, load_usage_history, run_sync
from aloe.llm.client import retry_delay
from tests.conftest import ROOT, tiny_dict
from tests.support.fault_proxy import FaultProxy
from tests.support.faults import FAULTS
from tests.support.scripted_server import HANG, ScriptedServer, completion

N_REQUESTS = 32
MAX_TOKENS = 8


def _prompts(tag: str) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"{tag}: name one colour, number {i}."}]
            for i in range(N_REQUESTS)]


def _params(tmp_path: Path, base_url: str, model: str, **role: object):
    roles = {name: {"model": model, "base_url": base_url, "concurrency": 8,
                    "max_tokens": MAX_TOKENS, "temperature": 0.0, **role}
             for name in ("generator", "user", "inducer", "assistant", "judge")}
    return params_from_dict(tiny_dict(tmp_path, roles=roles), source="test")


def _track_in_flight(llm: LLM) -> dict[str, int]:
    """Wrap the sender to record how many requests were in flight at once."""
    seen = {"now": 0, "peak": 0}
    send = llm._send

    async def counting(*args, **kwargs):
        seen["now"] += 1
        seen["peak"] = max(seen["peak"], seen["now"])
        try:
            return await send(*args, **kwargs)
        finally:
            seen["now"] -= 1

    llm._send = counting  # type: ignore[method-assign]
    return seen


@pytest.mark.slow
def test_concurrency_cache_and_samples(tmp_path: Path, local_server) -> None:
    params = _params(tmp_path, local_server.base_url, local_server.model)
    llm = LLM.for_run(params, "test")
    in_flight = _track_in_flight(llm)
    first = run_sync(llm.chat_many("assistant", _prompts("a")))
    assert all(not isinstance(r, BaseException) and r.text for r in first)
    usage = llm.ledger.roles["assistant"]
    assert (usage.requests, usage.cache_hits) == (N_REQUESTS, 0)
    assert in_flight["peak"] == 8  # bounded by the role's concurrency, and used in full
    assert usage.completion_tokens > 0 and usage.prompt_tokens > 0

    again = run_sync(llm.chat_many("assistant", _prompts("a")))
    assert (usage.requests, usage.cache_hits) == (N_REQUESTS, N_REQUESTS)
    assert [r.text for r in again] == [r.text for r in first]

    second_sample = run_sync(llm.chat("assistant", _prompts("a")[0], sample=1))
    assert not second_sample.cached
    assert (usage.requests, usage.cache_hits) == (N_REQUESTS + 1, N_REQUESTS)

    llm.save_ledger()
    saved = json.loads(params.layout.usage("test").read_text())
    assert saved["totals"]["requests"] == N_REQUESTS + 1
    assert saved["totals"]["cache_hits"] == N_REQUESTS
    assert load_usage_history(params.layout)[-1]["stage"] == "test"


@pytest.mark.slow
def test_retries_through_a_faulty_proxy(tmp_path: Path, local_server) -> None:
    with FaultProxy(local_server.base_url, rate=0.3, seed=1) as proxy:
        params = _params(tmp_path, proxy.base_url, local_server.model, max_retries=8)
        llm = LLM.for_run(params, "test", retry_base=0.05)
        replies = run_sync(llm.chat_many("user", _prompts("b")))
    assert all(not isinstance(r, BaseException) and r.text for r in replies), replies
    usage = llm.ledger.roles["user"]
    assert usage.requests == N_REQUESTS and usage.failures == 0
    assert proxy.total_faults >= 3 and min(proxy.faults.values()) >= 1  # 429, 500 and drops
    # every injected fault costs one retry (a slow reply may add a timeout's retry on top)
    assert usage.retries >= proxy.total_faults
    # the content is the real server's: the same prompts straight to it give the same replies
    direct = _params(tmp_path / "direct", local_server.base_url, local_server.model)
    straight = run_sync(LLM.for_run(direct, "test").chat_many("user", _prompts("b")[:4]))
    assert [r.text for r in straight] == [r.text for r in replies[:4]]


def test_a_request_that_keeps_failing_names_role_model_and_url(tmp_path: Path) -> None:
    params = _params(tmp_path, "http://127.0.0.1:9/v1", "some-model", max_retries=1, timeout=2)
    llm = LLM.for_run(params, "test", retry_base=0.01)
    with pytest.raises(LLMError) as error:
        run_sync(llm.chat("judge", [{"role": "user", "content": "hi"}]))
    message = str(error.value)
    assert "role 'judge'" in message and "some-model" in message and "127.0.0.1:9" in message
    assert "after 2 attempts" in message
    assert error.value.retryable and error.value.status_code is None  # nobody answered
    assert llm.ledger.roles["judge"].retries == 1 and llm.ledger.roles["judge"].failures == 1


class RefusingServer:
    """A real HTTP server on loopback that answers every request with one status code."""

    def __init__(self, status: int):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                outer.requests += 1
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.dumps({"error": {"message": f"refused with {status}"}}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "RefusingServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_refused_request_is_not_retried_and_carries_its_status(tmp_path: Path) -> None:
    with RefusingServer(400) as server:
        params = _params(tmp_path, server.base_url, "m", max_retries=3)
        llm = LLM.for_run(params, "test", retry_base=0.01)
        with pytest.raises(LLMError) as error:
            run_sync(llm.chat("judge", [{"role": "user", "content": "hi"}]))
    assert server.requests == 1  # a 4xx is the request's fault: asking again cannot help
    assert error.value.status_code == 400 and error.value.rejected
    assert not error.value.retryable and "refused with 400" in str(error.value)


class TricklingServer:
    """A real loopback server that answers 200 with a long body, one byte every `every`
    seconds: each read arrives in time, the answer never does."""

    def __init__(self, every: float):
        import socket
        import threading

        self.every = every
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _accept(self) -> None:
        import threading

        while not self.closed.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection) -> None:
        import time

        try:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                               b"content-length: 100000\r\n\r\n")
            while not self.closed.is_set():
                connection.sendall(b" ")
                time.sleep(self.every)
        except OSError:
            pass
        finally:
            connection.close()

    def __enter__(self) -> "TricklingServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed.set()
        self.sock.close()


def test_a_trickling_server_cannot_hold_a_request_past_its_timeout(tmp_path: Path) -> None:
    """Every read arrives within the timeout (httpx's bound), yet the request as a whole must
    end: timed out, retried like any timeout, then failed for good."""
    import time

    layout = RunLayout(run_dir=tmp_path / "run", cache_path=tmp_path / "cache.sqlite")
    with TricklingServer(every=0.2) as server:
        llm = LLM({"judge": RoleConfig(model="m", base_url=server.base_url, timeout=1.0,
                                       max_retries=1)},
                  stage="test", layout=layout, retry_base=0.01)
        started = time.monotonic()

        async def guarded():  # without the bound, this guard is what would end the test
            return await asyncio.wait_for(llm.chat("judge", [{"role": "user", "content": "hi"}]),
                                          15)

        with pytest.raises(LLMError) as error:
            run_sync(guarded())
        seconds = time.monotonic() - started
    assert 2.0 <= seconds < 5.0, seconds  # two attempts of 1 s each, then it gives up
    assert server.connections == 2
    assert "failed after 2 attempts: RequestTimeout: no complete answer within the role's " \
        "timeout of 1 s" in str(error.value) and error.value.retryable
    assert llm.ledger.roles["judge"].retries == 1 and llm.ledger.roles["judge"].failures == 1


def test_any_mapping_of_roles_is_a_client(tmp_path: Path) -> None:
    """A model under test behind an endpoint is just another role of its own name."""
    layout = RunLayout(run_dir=tmp_path / "run", cache_path=tmp_path / "cache.sqlite")
    with RefusingServer(503) as server:
        llm = LLM({"policy": RoleConfig(model="m", base_url=server.base_url, max_retries=1)},
                  stage="evaluate-x", layout=layout, retry_base=0.01)
        with pytest.raises(LLMError) as error:
            run_sync(llm.chat("policy", [{"role": "user", "content": "hi"}]))
        with pytest.raises(LLMError, match="unknown role 'judge'; roles are policy"):
            run_sync(llm.chat("judge", [{"role": "user", "content": "hi"}]))
    assert error.value.retryable and error.value.status_code == 503 and server.requests == 2
    assert llm.ledger.roles["policy"].failures == 1


def test_missing_api_key_names_the_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ALOE_TEST_MISSING_KEY", raising=False)
    params = _params(tmp_path, "http://127.0.0.1:9/v1", "m", api_key_env="ALOE_TEST_MISSING_KEY")
    with pytest.raises(MissingKeyError, match="ALOE_TEST_MISSING_KEY"):
        run_sync(LLM.for_run(params, "test").chat("user", [{"role": "user", "content": "hi"}]))


def test_retry_after_is_honoured_and_backoff_grows() -> None:
    request = httpx.Request("POST", "http://x/v1/chat/completions")
    limited = openai.RateLimitError("slow down", body=None, response=httpx.Response(
        429, headers={"retry-after": "2.5"}, request=request))
    assert retry_delay(0, limited) == 2.5
    plain = openai.APITimeoutError(request=request)
    assert all(0 <= retry_delay(0, plain, base=0.5) <= 0.5 for _ in range(50))
    assert max(retry_delay(4, plain, base=0.5) for _ in range(200)) > 0.5 * 2 ** 3


def test_run_sync_works_inside_a_running_loop() -> None:
    async def inner() -> int:
        await asyncio.sleep(0)
        return 7

    async def outer() -> int:  # as in a Jupyter cell, where a loop is already running
        return run_sync(inner())

    assert asyncio.run(outer()) == 7


def test_a_killed_sessions_usage_is_still_counted(tmp_path: Path) -> None:
    """A stage killed before it could save its ledger still shows in the usage history, as an
    interrupted entry with what it had spent; a session that saves leaves no live file."""
    import subprocess
    import sys

    from aloe.llm import Ledger

    killed = ("import os, sys\n"
              "from aloe.llm import Ledger\n"
              "ledger = Ledger(stage='conversations', live_dir=sys.argv[1])\n"
              "ledger.record_request('user', 'm', 100, 20, 1.0, 2.0)\n"
              "ledger.record_retry('user', 'm')\n"
              "os._exit(9)  # killed: no save\n")
    usage = tmp_path / "usage"
    subprocess.run([sys.executable, "-c", killed, str(usage / "live")], check=False)
    saved = Ledger(stage="sft", live_dir=usage / "live")
    saved.record_hit("judge", "m")
    layout = RunLayout(run_dir=tmp_path, cache_path=tmp_path / "cache.sqlite")
    saved.save(layout)

    history = load_usage_history(layout)
    assert [entry["stage"] for entry in history] == ["conversations", "sft"]
    interrupted, finished = history
    assert interrupted["interrupted"] is True and "interrupted" not in finished
    assert interrupted["roles"]["user"]["requests"] == 1
    assert interrupted["roles"]["user"]["retries"] == 1
    assert interrupted["totals"]["cost_usd"] == pytest.approx((100 * 1.0 + 20 * 2.0) / 1e6)
    assert len(list((usage / "live").glob("*.json"))) == 1  # only the killed session's


def test_the_run_seed_draws_independent_samples(tmp_path: Path) -> None:
    """A sampled request's cache key and backend seed carry the run's seed: two seeds draw two
    samples, a rerun with the same seed is served from the cache, and a greedy request is
    shared whatever the seed. (The stub stands in for a backend: what is checked is which
    requests reach one, not what a model writes.)"""
    from tests.support.stub_server import StubServer

    prompt = [{"role": "user", "content": "Say something about the sea."}]
    with StubServer(seed=0) as stub:
        def sent(seed: int, temperature: float) -> tuple[int, str]:
            params = _params(tmp_path, stub.base_url, "stub", temperature=temperature)
            params.run.seed = seed
            llm = LLM.for_run(params, "test")
            reply = run_sync(llm.chat("user", prompt))
            llm.cache.close()
            return llm.ledger.roles["user"].requests, reply.text

        first = sent(1, 0.8)
        assert first[0] == 1
        assert sent(2, 0.8)[0] == 1  # another seed: another sample, from the backend
        assert sent(1, 0.8) == (0, first[1])  # the same seed again: the cache, the same text
        assert sent(1, 0.0)[0] == 1 and sent(2, 0.0)[0] == 0  # greedy: one answer for all
LOOPS_SCRIPT = """
import asyncio, gc, sys
from pathlib import Path
from aloe.core.config import RoleConfig
from aloe.core.layout import RunLayout
from aloe.llm import LLM, run_sync
from tests.support.stub_server import StubServer

async def cell():  # a notebook cell: the kernel's loop is running, each call gets its own
    with StubServer() as stub:
        llm = LLM({"user": RoleConfig(model="stub", base_url=stub.base_url)}, stage="t",
                  layout=RunLayout(Path(sys.argv[2]) / "run", Path(sys.argv[2]) / "c.sqlite"))
        for i in range(3):
            work = llm.chat("user", [{"role": "user", "content": f"hello {i}"}])
            print((llm.run(work) if sys.argv[1] == "run" else run_sync(work)).text[:10])
        del llm
        gc.collect()
        await asyncio.sleep(0.3)

asyncio.run(cell())
"""


def test_clients_close_on_the_loop_that_opened_them(tmp_path: Path) -> None:
    """`llm.run` closes a session's connections on their own event loop: a client left to
    the garbage collector after its loop closed printed "Event loop is closed" tracebacks
    into the notebook (with the SDK's own request path, before the LLM layer sent plain JSON
    through `post`). The backend is the project's
    stub server: what matters here is the client's loops, not the model."""
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", LOOPS_SCRIPT, "run", str(tmp_path)],
                            cwd=root, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": path})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("\n") == 3
    assert "Event loop is closed" not in result.stderr, result.stderr[-2000:]


# ------------------------------------------------------------------------------------------
# A local model is keyed by its content, not its path (issue 22)
# ------------------------------------------------------------------------------------------
def _model_folder(path: Path, weights: bytes = b"weights-1") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_a_model_folder_is_named_by_its_content(tmp_path: Path) -> None:
    from aloe.core.local_model import IDENTITY_STAMP, model_identity

    here = _model_folder(tmp_path / "a" / "Model-1B")
    moved = _model_folder(tmp_path / "b" / "Model-1B")
    other = _model_folder(tmp_path / "c" / "Model-1B", weights=b"weights-2")
    assert model_identity(str(here)) == model_identity(str(moved)) != model_identity(str(other))
    assert model_identity(str(here)).startswith("Model-1B@sha256:")
    assert (here / IDENTITY_STAMP).exists()
    (here / "model.safetensors").write_bytes(b"weights-3")  # retrained in place
    assert model_identity(str(here)) not in (model_identity(str(moved)),
                                             model_identity(str(other)))
    assert model_identity("gpt-4o-mini") == "gpt-4o-mini"  # not a folder: as it is


def test_a_moved_project_finds_its_cached_answers(tmp_path: Path) -> None:
    """The same model folder at another path (a copied project) is the same model for the
    cache: the second session sends nothing."""
    from tests.support.stub_server import StubServer

    first = _model_folder(tmp_path / "project" / "models" / "Model-1B")
    copied = _model_folder(tmp_path / "copy" / "models" / "Model-1B")
    messages = [{"role": "user", "content": "Hello there"}]
    with StubServer(seed=0) as stub:
        answers = []
        for folder in (first, copied):
            params = _params(tmp_path / "run", stub.base_url, str(folder))
            llm = LLM.for_run(params, "test")
            answers.append(llm.run(llm.chat("user", messages, sample=0)))
        asked = stub.stats()["requests"]
    assert asked == 1 and answers[1].cached and answers[0].text == answers[1].text


# ------------------------------------------------------------------------------------------
# Answers are checked before they are cached (issue 27)
# ------------------------------------------------------------------------------------------
MALFORMED = {
    "content an integer": completion(5),
    "content an object": completion({"text": "hi"}),
    "an HTML gateway page": (200, "text/html", b"<html><body>502 Bad Gateway</body></html>"),
    "a body cut short": b'{"choices": [{"message": {"content": "Hel',
    "bytes that are not UTF-8": b'\xff\xfe{"choices": []}',
    "usage a string": completion("fine", usage="many"),
    "no choices": b'{"choices": []}',
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_answer_is_retried_and_never_cached(tmp_path: Path, kind: str) -> None:
    messages = [{"role": "user", "content": "Hi"}]
    with ScriptedServer([MALFORMED[kind], completion("Hello there.")]) as server:
        params = _params(tmp_path, server.base_url, "scripted", max_retries=2)
        llm = LLM.for_run(params, "test", retry_base=0.0)
        answer = llm.run(llm.chat("user", messages))
        assert answer.text == "Hello there." and server.requests == 2  # the retry got it
    with ScriptedServer([MALFORMED[kind]]) as server:  # never anything else
        params = _params(tmp_path / "again", server.base_url, "scripted", max_retries=1)
        llm = LLM.for_run(params, "test", retry_base=0.0)
        with pytest.raises(LLMError) as error:
            llm.run(llm.chat("user", [{"role": "user", "content": "Other"}]))
        assert server.requests == 2
    message = str(error.value)
    assert message.startswith(f"role 'user' (model scripted at {server.base_url}): failed "
                              "after 2 attempts: MalformedAnswer: ")
    assert error.value.retryable and "\n" not in message
    from aloe.llm.cache import check_cache

    assert check_cache(params.layout.cache_path).bad_rows == []  # nothing poisoned


def test_content_parts_are_read_as_their_text(tmp_path: Path) -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there."}]
    with ScriptedServer([completion(parts)]) as server:
        llm = LLM.for_run(_params(tmp_path, server.base_url, "scripted"), "test")
        assert llm.run(llm.chat("user", [{"role": "user", "content": "Hi"}])).text == \
            "Hello there."


def test_cache_check_finds_what_the_client_would_reject(tmp_path: Path) -> None:
    """A row an older version cached with a non-text reply: `cache check` reports it, a
    request finds it unusable and asks again (replacing it), `--repair` removes it."""
    import sqlite3

    from aloe.llm.cache import ResponseCache, check_cache, repair_cache

    path = tmp_path / "llm.sqlite"
    cache = ResponseCache(path)
    good = {"text": "fine", "finish_reason": "stop", "prompt_tokens": 1,
            "completion_tokens": 1, "logprobs": None}
    cache.put("good", good)
    with pytest.raises(ValueError, match="malformed"):
        cache.put("bad", {**good, "text": 5})
    cache.close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO responses VALUES ('bad', ?, 0)", (json.dumps({**good, "text": 5}),))
    db.commit()
    db.close()
    found = check_cache(path)
    assert found.answers == 1 and found.bad_rows == ["bad"]
    again = ResponseCache(path)
    assert again.get("bad") is None and again.get("good") == good
    again.close()
    assert repair_cache(path).bad_rows == ["bad"] and check_cache(path).bad_rows == []


# ------------------------------------------------------------------------------------------
# The fault drills, on the client: every kind of bad answer ends, after the role's retries, in
# one line naming the role, the server and the cause (issue 27)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(FAULTS))
def test_every_kind_of_bad_answer_names_role_server_and_cause(tmp_path: Path, kind: str) -> None:
    from aloe.core.errors import EXIT_FAILED

    answer, cause, attempts = FAULTS[kind]
    if answer == HANG:  # the role's timeout, below
        cause += "0.5 s"
    layout = RunLayout(run_dir=tmp_path / "run", cache_path=tmp_path / "cache.sqlite")
    with ScriptedServer([answer]) as server:
        llm = LLM({"judge": RoleConfig(model="scripted", base_url=server.base_url, timeout=0.5,
                                       max_retries=1)},
                  stage="test", layout=layout, retry_base=0.0)
        with pytest.raises(LLMError) as error:
            llm.run(llm.chat("judge", [{"role": "user", "content": "Score it."}]))
        assert server.requests == attempts
    message = str(error.value)
    where = f"role 'judge' (model scripted at {server.base_url}): "
    tried = f"failed after {attempts} attempts: " if attempts > 1 else ""
    assert message.startswith(where + tried) and cause in message, message
    assert "\n" not in message and len(message) < 600 and error.value.exit_code == EXIT_FAILED
    from aloe.llm.cache import check_cache

    assert check_cache(layout.cache_path).answers == 0  # nothing of it was kept


def test_server_command_and_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/local_server.py starts the server in other configurations: its flags reach the
    command line, and its torch threads the environment (else $OMP_NUM_THREADS, else half the
    cores, never 0)."""
    from aloe.llm.server import serve_command, server_env

    plain = serve_command(tmp_path, 8123)
    assert plain[plain.index("--port") + 1] == "8123" and "--continuous-batching" not in plain
    batched = serve_command(tmp_path, 8123, continuous_batching=True,
                            options=["--attn-implementation", "eager"])
    assert batched[-3:] == ["--continuous-batching", "--attn-implementation", "eager"]
    assert server_env(threads=3)["OMP_NUM_THREADS"] == "3"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert server_env()["OMP_NUM_THREADS"] == "5"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert server_env()["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 2) // 2))
    assert server_env()["HF_HUB_OFFLINE"] == "1"


@pytest.mark.slow
def test_sampled_answers_from_the_local_server_do_not_depend_on_timing(tmp_path: Path,
                                                                      local_server) -> None:
    """`transformers serve` sets torch's seed when a request arrives: with two in flight the
    second would reseed the first one's sampling. `base_url: local` sends one at a time, so
    the same sampled requests give the same answers however many the role lets out at once."""
    prompts = _prompts("c")[:6]
    together = _params(tmp_path / "together", "local", "local", concurrency=6,
                       temperature=1.0, max_tokens=24)
    llm = LLM.for_run(together, "test")
    in_flight = _track_in_flight(llm)
    at_once = run_sync(llm.chat_many("user", prompts))
    assert in_flight["peak"] == 6  # the role let all of them out
    alone = _params(tmp_path / "alone", "local", "local", concurrency=1, temperature=1.0,
                    max_tokens=24)
    one_by_one = run_sync(LLM.for_run(alone, "test").chat_many("user", prompts))
    assert [r.text for r in at_once] == [r.text for r in one_by_one]
    assert len({r.text for r in at_once}) > 1


@pytest.mark.slow
def test_a_one_at_a_time_proxy_keeps_sampled_answers_independent_of_timing(
        tmp_path: Path, local_server) -> None:
    """The workbook drill's proxy stands where `base_url: local` would, so it forwards one
    request at a time as the LLM layer does: six sampled requests let out at once through it
    get the answers the server gives them one by one."""
    prompts = _prompts("d")[:6]
    with FaultProxy(local_server.base_url, rate=0.0, one_at_a_time=True) as proxy:
        together = _params(tmp_path / "together", proxy.base_url, local_server.model,
                           concurrency=6, temperature=1.0, max_tokens=24)
        llm = LLM.for_run(together, "test")
        in_flight = _track_in_flight(llm)
        at_once = run_sync(llm.chat_many("user", prompts))
    assert in_flight["peak"] == 6  # the role let all of them out; the proxy held them
    alone = _params(tmp_path / "alone", "local", "local", concurrency=1, temperature=1.0,
                    max_tokens=24)
    one_by_one = run_sync(LLM.for_run(alone, "test").chat_many("user", prompts))
    assert [r.text for r in at_once] == [r.text for r in one_by_one]
    assert len({r.text for r in at_once}) > 1


def test_a_one_at_a_time_proxy_gives_each_of_its_servers_one_request_at_a_time() -> None:
    """The drill's proxy in front of two servers of one model: six requests let out at once
    are all answered, never two at once by one server, and both servers answer some."""
    async def six_at_once(base_url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.post(f"{base_url}/chat/completions",
                                                      json={"n": n}) for n in range(6)))

    with ScriptedServer([completion()], delay=0.2) as first, \
            ScriptedServer([completion()], delay=0.2) as second:
        servers = [first, second]
        urls = [server.base_url for server in servers]
        with FaultProxy(urls, rate=0.0, one_at_a_time=True) as proxy:
            replies = asyncio.run(six_at_once(proxy.base_url))
    assert [reply.status_code for reply in replies] == [200] * 6
    assert [server.most_in_flight for server in servers] == [1, 1]
    assert sum(server.requests for server in servers) == 6
    assert min(server.requests for server in servers) > 0
    with pytest.raises(ValueError, match="one_at_a_time"):
        FaultProxy(urls)


def _server_bench() -> Any:
    """bench/local_server.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("local_server_bench",
                                                  ROOT / "bench" / "local_server.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules[spec.name]
    return bench


def test_the_server_bench_builds_the_tiny_profiles_requests() -> None:
    """bench/local_server.py's requests come from the package's seeds and prompt templates
    (it broke once when the seeds moved)."""
    shapes = _server_bench().request_shapes()
    assert [s["role"] for s in shapes] == ["generator", "user", "assistant", "judge"]
    assert all(s["messages"] and s["max_tokens"] > 0 for s in shapes)


def test_the_server_bench_says_in_one_line_where_llama_cpp_is_missing(tmp_path: Path) -> None:
    """llama.cpp's server is no dependency of the project (PyPI has it only as source to
    compile): asked for without it, the bench says what to install and which flag names it."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is not None:
        pytest.skip("llama-cpp-python is installed here")
    with pytest.raises(SystemExit) as refused:
        _server_bench().start_llama_cpp(sys.executable, 1, tmp_path / "llama.log")
    message = str(refused.value)
    assert "llama-cpp-python[server]" in message and "--llama-cpp-python" in message
    assert "\n" not in message and not (tmp_path / "llama.log").exists()


def test_the_server_bench_says_why_llama_cpps_server_did_not_come_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A llama.cpp server that exits at start: the bench stops in one line with the last line
    of its log. (A stand-in package answers to `llama_cpp.server` here: the real one is not
    installed, as it compiles llama.cpp.)"""
    package = tmp_path / "site" / "llama_cpp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "server.py").write_text(
        "if __name__ == '__main__':\n"
        "    import sys\n"
        "    print('error: unknown model architecture', file=sys.stderr)\n"
        "    sys.exit(1)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    with pytest.raises(SystemExit) as refused:
        _server_bench().start_llama_cpp(sys.executable, 2, tmp_path / "llama.log", timeout=30)
    message = str(refused.value)
    assert message.endswith("the last line of its log: error: unknown model architecture")
    assert "\n" not in message


def test_the_server_bench_reports_an_answer_that_depends_on_earlier_requests() -> None:
    """The judge's request asked first and again after the measurements: another answer the
    second time is printed as NO (llama.cpp's server did that: a cache key would hold
    whichever answer came first)."""
    bench = _server_bench()
    run = bench.Result(seconds=2.0, requests=2, tokens=10, empty=0, judge_read=1,
                       judge_total=1, answers=["a", "1"])
    results = {(name, 1): [run] for name in ("plain", "other")}
    greedy = {"plain": ["x", "x"], "other": ["y", "y"]}
    text = bench.report(results, ["plain", "other"], [1], greedy,
                        {"plain": ["1", "1"], "other": ["1", "You're looking"]})
    lines = text.splitlines()
    assert lines[-2].startswith("plain: greedy request repeatable: yes, same as plain: yes")
    assert "the same first and after the measurements: yes" in lines[-2]
    assert lines[-1].startswith("other: greedy request repeatable: yes, same as plain: NO")
    assert "the same first and after the measurements: NO" in lines[-1]


@pytest.mark.slow
def test_the_server_overhead_bench_compares_like_with_like(local_server,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/server_overhead.py: the judge's greedy request, sent to the real server and then
    generated in-process with the same seed and as many new tokens, is the same reply, and
    both are timed."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # it imports bench/local_server.py
    spec = importlib.util.spec_from_file_location("server_overhead",
                                                  ROOT / "bench" / "server_overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    judge = next(s for s in bench.request_shapes() if s["role"] == "judge")
    assert judge["temperature"] == 0.0
    model = AutoModelForCausalLM.from_pretrained(local_server.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(local_server.model)
    seconds, tokens, answer = bench.served(local_server, judge, 1)
    generated, prompt, reply = bench.in_process(model, tokenizer, judge, 1, tokens)
    assert seconds > 0 and generated > 0 and tokens >= 1 and prompt > 100
    assert answer.strip() == reply.strip() != ""


@pytest.mark.slow
def test_two_local_servers_answer_as_one_does(tmp_path: Path, local_server,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`local_model.servers: 2` starts two servers; the roles' requests go to whichever is
    free, one at a time each, and every answer is the one a single server gives; a kernel the
    runner starts is handed both (comma-separated)."""
    from aloe.llm.server import ENV_MODEL, ENV_URL, ensure_local_server, export_to_children

    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.delenv(ENV_MODEL, raising=False)
    prompts = _prompts("d")[:6]
    data = tiny_dict(tmp_path / "two")
    data["local_model"]["servers"] = 2
    for role in data["roles"].values():
        role.update(concurrency=4, temperature=1.0, max_tokens=16)
    two = params_from_dict(data, source="test")
    servers = ensure_local_server(two)
    try:
        assert len(servers.base_urls) == 2 and len(set(servers.base_urls)) == 2
        llm = LLM.for_run(two, "test")
        used: list[str] = []
        pick = llm._next_endpoint

        def recording(state):
            endpoint = pick(state)
            used.append(endpoint.base_url)
            return endpoint

        llm._next_endpoint = recording  # type: ignore[method-assign]
        both = run_sync(llm.chat_many("user", prompts))
        assert set(used) == set(servers.base_urls)  # both served
        export_to_children(servers)
        assert os.environ[ENV_URL] == ",".join(servers.base_urls)
        assert ensure_local_server(two).base_urls == servers.base_urls  # found, not started
    finally:
        servers.stop()
    one = _params(tmp_path / "one", local_server.base_url, local_server.model,
                  concurrency=1, temperature=1.0, max_tokens=16)
    alone = run_sync(LLM.for_run(one, "test").chat_many("user", prompts))
    assert [r.text for r in both] == [r.text for r in alone]


@pytest.mark.slow
def test_the_decode_step_bench_measures_the_embedded_model() -> None:
    """bench/decode_step.py (how far batching or another precision could go on a CPU) runs
    and prints a row per precision, thread count and batch size, and how far another
    precision's next tokens are from float32's, and whether a batch continues texts as they
    continue alone."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "decode_step.py"), "--batches",
                           "1", "2", "--threads", "1", "--steps", "2", "--precisions",
                           "float32", "int8-dynamic", "--batch-invariance", "4"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    rows = [line.split() for line in lines[2:6]]
    assert [(row[0], row[1], row[5]) for row in rows] == [
        ("1", "1", "float32"), ("1", "2", "float32"),
        ("1", "1", "int8-dynamic"), ("1", "2", "int8-dynamic")]
    assert all(float(row[2]) > 0 for row in rows)
    said = re.fullmatch(r"int8-dynamic: next token as float32's ([\d.]+) of the time, mean KL "
                        r"from float32 ([\d.]+) nats \((\d+) positions of the seed profiles\)",
                        lines[6])
    assert said, lines[6:]
    assert 0 <= float(said[1]) < 1 and float(said[2]) > 0 and int(said[3]) > 100
    batched = re.fullmatch(r"batch of 8, 4 greedy steps, 1 threads: (\d) of 8 continuations the "
                           r"same alone and batched; largest next-token logit difference (\S+)",
                           lines[7])
    assert batched, lines[7:]
    assert int(batched[1]) >= 1 and 0 <= float(batched[2]) < 1e-2  # a few float roundings at most
