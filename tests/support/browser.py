"""Open a page in real headless Chromium (Debian's `chromium`) over the DevTools protocol and
report what a reader would see: console errors, failed loads, the size of every image, the text
of the first screen (a laptop's viewport, `VIEWPORT`), and optionally a screenshot of it.

Test code. It talks to Chromium through its remote-debugging websocket (`websocket-client`),
so nothing beyond the browser itself is needed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websocket

VIEWPORT = (1280, 800)  # CSS pixels: what a laptop shows of a page without scrolling
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


@dataclass
class PageReport:
    console_errors: list[str] = field(default_factory=list)
    failed_loads: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)  # {src, width, height, complete}
    title: str = ""
    text_length: int = 0
    first_screen: str = ""  # the text visible without scrolling, at VIEWPORT
    text: str = ""  # the whole page's visible text (closed <details> left out)
    evaluated: list[Any] = field(default_factory=list)  # the value of each `evaluate` script


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _DevTools:
    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def drain(self, seconds: float) -> None:
        self.ws.settimeout(0.2)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                continue
        self.ws.settimeout(60)


def inspect_page(path: Path, settle: float = 2.0, screenshot: Path | None = None,
                 evaluate: list[str] | tuple[str, ...] = ()) -> PageReport:
    """Load a local HTML file at VIEWPORT and collect errors, image sizes and visible text after
    it settles; with `screenshot`, write a PNG of the first screen there. Each `evaluate`
    expression is then run in the page, in order (a promise is awaited), its value kept in
    `evaluated`; errors it causes are among the console errors."""
    binary = chromium_path()
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    port = _free_port()
    # Chromium's helper processes can still be writing into the profile when the browser's own
    # process has gone: the whole process group is ended, and a profile file written after
    # that is no reason to fail a test about a page.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--remote-debugging-port={port}",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            return _inspect(port, path.resolve().as_uri(), settle, screenshot, evaluate)
        finally:
            _end_group(process)


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the browser and every helper it started, then SIGKILL to what is left."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the browser is gone; its helpers may linger a moment
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


FIRST_SCREEN_JS = """(() => {
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const seen = [];
    while (walker.nextNode()) {
        const node = walker.currentNode;
        if (!node.textContent.trim()) continue;
        const range = document.createRange();
        range.selectNodeContents(node);
        const box = range.getBoundingClientRect();
        if (box.height > 0 && box.top < window.innerHeight && box.bottom > 0)
            seen.push(node.textContent.trim());
    }
    return seen.join(' ');
})()"""


def _inspect(port: int, url: str, settle: float, screenshot: Path | None,
             evaluate: list[str] | tuple[str, ...] = ()) -> PageReport:
    deadline = time.monotonic() + 30
    targets: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            targets = httpx.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
            if any(t.get("type") == "page" for t in targets):
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    page = next(t for t in targets if t.get("type") == "page")
    tools = _DevTools(page["webSocketDebuggerUrl"])
    for domain in ("Runtime", "Log", "Network", "Page"):
        tools.call(f"{domain}.enable")
    tools.call("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
               deviceScaleFactor=1, mobile=False)
    tools.call("Page.navigate", url=url)
    tools.drain(settle)
    state = tools.call("Runtime.evaluate", returnByValue=True, expression="""(() => ({
        ready: document.readyState, title: document.title,
        text: document.body ? document.body.innerText : "",
        images: Array.from(document.images).map(i => ({src: i.src.slice(0, 60),
            width: i.naturalWidth, height: i.naturalHeight, complete: i.complete}))}))()""")
    value = state["result"]["value"]
    first = tools.call("Runtime.evaluate", returnByValue=True, expression=FIRST_SCREEN_JS)
    report = PageReport(images=value["images"], title=value["title"],
                        text_length=len(value["text"]), text=value["text"],
                        first_screen=first["result"]["value"])
    if screenshot is not None:
        shot = tools.call("Page.captureScreenshot", format="png")
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    for expression in evaluate:
        answer = tools.call("Runtime.evaluate", expression=expression, returnByValue=True,
                            awaitPromise=True)
        if "exceptionDetails" in answer:
            report.console_errors.append(answer["exceptionDetails"].get("text", "exception"))
        report.evaluated.append(answer.get("result", {}).get("value"))
    if evaluate:
        tools.drain(0.3)  # what the scripts logged
    for event in tools.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            report.console_errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            report.console_errors.append(" ".join(str(a.get("value")) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            report.console_errors.append(params["entry"].get("text", ""))
        elif method == "Network.loadingFailed":
            report.failed_loads.append(params.get("errorText", ""))
    tools.ws.close()
    return report
