"""An OpenAI-protocol endpoint that answers from a script: each POST gets the next of a list of
bodies (bytes, with a status and a content type), the last one repeated; `HANG` answers
nothing at all until the server closes. For the client's handling of answers no real server
gives on purpose: HTML gateway pages, cut bodies, content that is not text, a request left
hanging. A real HTTP server on loopback, in a thread of the test's process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion(content: Any = "Hello there.", usage: Any = None, **choice: Any) -> bytes:
    """A chat completion's body with `content` as the message content, as it is."""
    body = {"id": "x", "object": "chat.completion", "model": "scripted",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop", **choice}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2} if usage is None else usage}
    return json.dumps(body).encode()


MODEL_LIST = (200, "application/json", b'{"object": "list", "data": [{"id": "scripted"}]}')
HANG = (0, "", b"")  # a script entry: the request is read, and never answered


class ScriptedServer:
    """POSTs (chat completions) answered from `bodies`, each `delay` seconds late; GETs
    (`/models`) with `models`. `most_in_flight`: the most POSTs it was answering at once."""

    def __init__(self, bodies: Sequence[bytes | tuple[int, str, bytes]],
                 models: tuple[int, str, bytes] = MODEL_LIST, delay: float = 0.0):
        self.script = [b if isinstance(b, tuple) else (200, "application/json", b) for b in bodies]
        self.models = models
        self.delay = delay  # seconds before each POST is answered
        self.requests = 0  # POSTs
        self.in_flight = self.most_in_flight = 0  # POSTs being answered: now, and at most
        self.lock = threading.Lock()
        self.received: list[Any] = []  # their bodies, parsed
        self.gets = 0
        self.closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    server.received.append(json.loads(raw))
                except ValueError:
                    server.received.append(raw)
                with server.lock:
                    answer = server.script[min(server.requests, len(server.script) - 1)]
                    server.requests += 1
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    if answer == HANG:
                        server.closing.wait(60)
                        return
                    time.sleep(server.delay)
                    self._send(*answer)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def do_GET(self) -> None:  # noqa: N802
                server.gets += 1
                self._send(*server.models)

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
