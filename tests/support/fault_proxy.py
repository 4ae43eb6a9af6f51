"""A fault-injecting loopback HTTP proxy (test code): forwards to a real server, but answers a
set share of POST requests with a fault: by default 429, 500 or a dropped connection, drawn at
random; or, when the caller gives one, always that answer (a kind of tests/support/faults.py:
status, content type and body, or `HANG`, never answered until the client gives up).

It sits in front of the real `transformers serve` in tests of retries and in the workbook's
drill, so what comes back in the end is always the real server's content, and in front of the
stub server in the stages' fault drill (bench/fault_drill.py). In front of the real server,
`one_at_a_time` forwards one request at a time to each server, as the LLM layer does for
`base_url: local`: the server seeds torch when a request arrives, so a second request in
flight would reseed the first one's sampling and its answer would depend on timing. Given
several servers of one model (as `local_model.servers` starts), it forwards each request to
whichever is free.
"""

from __future__ import annotations

import contextlib
import queue
import random
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.support.faults import HANG, Answer, as_response


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that gave up (its timeout, a cancelled stage) is no error of the proxy's:
        no traceback for it on stderr."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FaultProxy:
    """`with FaultProxy(upstream, rate=0.3, seed=0) as proxy: proxy.base_url`

    `answer`: the fault to inject (see tests/support/faults.py); None: 429, 500 or a drop.
    Which requests get it is drawn from one RNG seeded with `seed`, in arrival order.
    `one_at_a_time`: forward one request at a time to each upstream (the others wait; faults
    do not); `upstream` may then be several servers of one model, each request going to
    whichever is free.
    """

    def __init__(self, upstream: str | Sequence[str], rate: float = 0.3, seed: int | str = 0,
                 answer: Answer | None = None, *, one_at_a_time: bool = False):
        urls = [upstream] if isinstance(upstream, str) else list(upstream)
        if len(urls) > 1 and not one_at_a_time:
            raise ValueError("FaultProxy: several upstreams only with one_at_a_time")
        self.upstreams = [url.rstrip("/").removesuffix("/v1") for url in urls]
        self.rate = rate
        self.answer = answer
        self.free: queue.Queue[str] | None = None  # one_at_a_time: the upstreams not busy
        if one_at_a_time:
            self.free = queue.Queue()
            for url in self.upstreams:
                self.free.put(url)
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.closing = threading.Event()  # set on exit: a hanging request is let go
        self.faults = dict.fromkeys(["given"] if answer is not None else ["429", "500", "drop"],
                                    0)
        self.forwarded = 0
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())

    def _pick_fault(self) -> str | None:
        with self.lock:
            if self.random.random() >= self.rate:
                self.forwarded += 1
                return None
            kind = "given" if self.answer is not None else \
                self.random.choice(["429", "500", "drop"])
            self.faults[kind] += 1
            return kind

    @contextlib.contextmanager
    def _forwarding(self) -> Iterator[str]:
        """The upstream to forward to: with one_at_a_time, one that is free (waiting for it)."""
        if self.free is None:
            yield self.upstreams[0]
            return
        url = self.free.get()
        try:
            yield url
        finally:
            self.free.put(url)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._pick_fault() if method == "POST" else None
                if fault == "given" and proxy.answer == HANG:
                    proxy.closing.wait()  # the client's timeout ends it, or the proxy's exit
                    self.close_connection = True
                    return
                if fault == "given":
                    self._send(*as_response(proxy.answer or b""))
                    return
                if fault == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if fault in ("429", "500"):
                    payload = b'{"error": {"message": "injected fault"}}'
                    self.send_response(int(fault))
                    if fault == "429":
                        self.send_header("retry-after", "0.1")
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {"content-type": self.headers.get("content-type", "application/json")}
                with proxy._forwarding() as upstream:
                    reply = httpx.request(method, upstream + self.path, content=body,
                                          headers=headers, timeout=600)
                self.send_response(reply.status_code)
                kind = reply.headers.get("content-type", "application/json")
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                self._relay("POST")

            def do_GET(self) -> None:  # noqa: N802
                self._relay("GET")

        return Handler

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
