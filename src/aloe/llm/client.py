"""One client for every LLM role over the OpenAI chat-completions protocol.

What every stage gets from it: bounded concurrency per role (asyncio), retries with exponential
backoff and jitter on 429/5xx/timeouts/dropped connections (honouring Retry-After), a timeout
that bounds each whole request, the content-addressed response cache, the usage ledger,
`base_url: local`, several base_urls per role, and API keys read only from the environment
variable a role names.

Built for paper scale (hundreds of thousands of requests at concurrency 128 on a laptop's
CPUs), where the client's own CPU time per request is what limits a run: an endpoint's requests
are spread over several HTTP clients with small connection pools (httpcore scans its whole pool
on every request, encode/httpcore#1035), and requests go out through the SDK's plain `post`
with the JSON body as it is (`chat.completions.create` walks every message through its type
transformer first, a few milliseconds a request), its answer read as plain JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import math
import os
import random
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import openai

from aloe.core.chat import Message
from aloe.core.config import Params, RoleConfig, missing_key_message
from aloe.core.errors import EXIT_BAD_INPUT, AloeError
from aloe.core.layout import RunLayout
from aloe.core.local_model import model_identity
from aloe.llm.budget import Budget, register, request_cost, unregister
from aloe.llm.cache import ResponseCache, request_key
from aloe.llm.ledger import Ledger

if TYPE_CHECKING:
    from aloe.llm.server import LocalServer

T = TypeVar("T")


class RequestTimeout(Exception):
    """No complete answer within the role's `timeout`, however the bytes trickled in."""


RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
             openai.APIConnectionError, RequestTimeout)
NOT_JSON = (json.JSONDecodeError, UnicodeDecodeError)  # what the SDK raises for such a body
NO_KEY = "not-needed"  # local and keyless servers still need a non-empty string
POOL_CONNECTIONS = 8  # connections per HTTP client; an endpoint gets concurrency / 8 clients
CHAT_PATH = "/chat/completions"


class LLMError(AloeError):
    """A request failed for good; the message names role, model and base_url.

    `status_code` is the HTTP status the backend answered with (None: no answer, e.g. a
    dropped connection or a timeout); `retryable` says whether the same request may succeed
    later (rate limits, server errors, timeouts), as opposed to one the backend refused.
    """

    def __init__(self, message: str, *, status_code: int | None = None,
                 retryable: bool = False):
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable

    @property
    def rejected(self) -> bool:
        """The backend refused the request as invalid (4xx other than 429)."""
        return self.status_code is not None and 400 <= self.status_code < 500 \
            and self.status_code != 429


class MissingKeyError(LLMError):
    """A role names an API key variable that is not set."""

    exit_code = EXIT_BAD_INPUT


@dataclass
class Completion:
    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[dict[str, Any]] | None = None  # per token: {token, logprob, top: {tok: lp}}
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "finish_reason": self.finish_reason,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "logprobs": self.logprobs}


@dataclass
class _Endpoint:
    clients: list[openai.AsyncOpenAI]  # several small pools (see the module's docstring)
    base_url: str
    model: str  # what requests name
    identity: str  # what the cache key names (`model_identity`: a local folder by content)
    turn: itertools.count = field(default_factory=itertools.count)
    # The local server's: one request in flight (see `LLM._local_gate`); None: no limit.
    gate: asyncio.Semaphore | None = None

    def client(self) -> openai.AsyncOpenAI:
        return self.clients[next(self.turn) % len(self.clients)]


@dataclass
class _Role:
    name: str
    config: RoleConfig
    endpoints: list[_Endpoint]
    semaphore: asyncio.Semaphore
    cycle: itertools.cycle = field(init=False)

    def __post_init__(self) -> None:
        self.cycle = itertools.cycle(range(len(self.endpoints)))

    @property
    def model(self) -> str:
        return self.endpoints[0].model

    @property
    def identity(self) -> str:
        return self.endpoints[0].identity


def retry_delay(attempt: int, error: Exception, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter; a server's Retry-After wins when it gives one."""
    response = getattr(error, "response", None)
    header = response.headers.get("retry-after") if response is not None else None
    if header:
        try:
            return min(float(header), cap)
        except ValueError:
            pass
    return random.uniform(0, min(cap, base * 2 ** attempt))


class LLM:
    """The roles of one stage session. Use `await llm.chat(role, messages)`, or `llm.run(work)`
    from sync code.

    `roles` maps a role's name to its configuration: the five roles of a parameter file
    (`LLM.for_run`), or any other set, such as a model under test behind an endpoint.
    `local_server` starts (or finds) the server behind `base_url: local` when a role needs it.
    """

    def __init__(self, roles: Mapping[str, RoleConfig], *, stage: str, layout: RunLayout,
                 seed: int = 0, local_server: Callable[[], LocalServer] | None = None,
                 retry_base: float = 0.5, budget: Budget | None = None):
        self.roles = dict(roles)
        self.stage = stage
        self.seed = seed  # the run's: folded into every sampled request's key and seed
        self.layout = layout
        self.ledger = Ledger(stage=stage, live_dir=layout.usage_live)
        self.cache = ResponseCache(layout.cache_path)
        self.local_server = local_server
        self.retry_base = retry_base
        self.budget = budget  # the run's ceilings (run.budget_usd); None: none
        if budget is not None:
            register(layout, self.ledger)
        self._roles: dict[str, _Role] = {}
        self._local_gates: dict[str, asyncio.Semaphore] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_run(cls, params: Params, stage: str, **kwargs: Any) -> LLM:
        """The five roles of a parameter file, for one stage session of its run."""
        from aloe.llm.server import ensure_local_server

        return cls(params.roles.as_mapping(), stage=stage, layout=params.layout,
                   seed=params.run.seed, local_server=lambda: ensure_local_server(params),
                   budget=Budget.for_run(params), **kwargs)

    # -- set-up ------------------------------------------------------------------------------
    def role_config(self, role: str) -> RoleConfig:
        if role not in self.roles:
            raise LLMError(f"unknown role '{role}'; roles are {', '.join(self.roles)}")
        return self.roles[role]

    def _role(self, role: str) -> _Role:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # clients and semaphores belong to one event loop
            self._roles, self._local_gates, self._loop = {}, {}, loop
        if role not in self._roles:
            config = self.role_config(role)
            self._roles[role] = _Role(role, config, self._endpoints(role, config),
                                      asyncio.Semaphore(config.concurrency))
        return self._roles[role]

    def _endpoints(self, role: str, config: RoleConfig) -> list[_Endpoint]:
        key = NO_KEY
        if config.api_key_env:
            key = os.environ.get(config.api_key_env, "")
            if not key:
                raise MissingKeyError(missing_key_message(f"role '{role}'",
                                                          config.api_key_env))
        endpoints = []
        for url in config.base_urls:
            model = config.model
            if url != "local":
                endpoints.append(_Endpoint(_clients(url, key, config), url, model,
                                           model_identity(model)))
                continue
            if self.local_server is None:
                raise LLMError(f"role '{role}' asks for base_url 'local' but this session "
                               "has no local server")
            server = self.local_server()
            model = server.model if model == "local" else model
            endpoints.extend(_Endpoint(_clients(url, key, config), url, model,
                                       model_identity(model), gate=self._local_gate(url))
                             for url in server.base_urls)
        return endpoints

    def _local_gate(self, url: str) -> asyncio.Semaphore:
        """One request at a time to the local server, whatever the roles' concurrency.

        `transformers serve` generates one request after another anyway, but it sets torch's
        global seed when a request arrives, not when its generation starts: a second request
        in flight reseeds the first one's sampling half-way, and a sampled answer would depend
        on timing. Waiting here costs no speed and keeps each sampled answer the one its seed
        draws."""
        return self._local_gates.setdefault(url, asyncio.Semaphore(1))

    @staticmethod
    def _next_endpoint(state: _Role) -> _Endpoint:
        """The role's next endpoint in turn, passing over a local server that is busy when
        another is free."""
        first, count = next(state.cycle), len(state.endpoints)
        for offset in range(count):
            endpoint = state.endpoints[(first + offset) % count]
            if endpoint.gate is None or not endpoint.gate.locked():
                return endpoint
        return state.endpoints[first]

    # -- requests ----------------------------------------------------------------------------
    async def chat(self, role: str, messages: list[Message], *, sample: int = 0,
                   logprobs: bool = False, top_logprobs: int = 5, max_tokens: int | None = None,
                   temperature: float | None = None, fresh: bool = False) -> Completion:
        """One chat completion for `role`, from the cache when it holds one.

        `sample` tells apart several draws of the same prompt (each is cached on its own). A
        sampled request (temperature above 0) also carries the run's seed, in its cache key and
        in the seed sent to the backend: another run seed draws another sample.
        """
        state = self._role(role)
        config = state.config
        sampling: dict[str, Any] = {"max_tokens": max_tokens or config.max_tokens}
        chosen = config.temperature if temperature is None else temperature
        if chosen is not None:  # None: the backend's own default (an API's is 1.0)
            sampling["temperature"] = chosen
        if config.top_p is not None:
            sampling["top_p"] = config.top_p
        if logprobs:
            sampling.update(logprobs=True, top_logprobs=top_logprobs)
        sampled = chosen is None or chosen > 0
        key = request_key(state.identity, messages, sampling, sample,
                          seed=self.seed if sampled else None)
        hit = None if fresh else self.cache.get(key)  # fresh: the backend's answer, now
        if hit is not None:
            self.ledger.record_hit(role, state.model)
            return Completion(**hit, cached=True)
        reservation = None
        if self.budget is not None:  # before it is sent: stop rather than overspend
            reservation = self.budget.reserve(self.stage, request_cost(
                messages, sampling["max_tokens"], config.price_input_per_1m,
                config.price_output_per_1m), role, state.model)
        try:
            async with state.semaphore:
                completion = await self._send(state, messages, sampling, key)
        finally:
            if reservation is not None:  # the ledger now holds what it really cost
                reservation.release()
        self.cache.put(key, completion.to_json())
        return completion

    async def _send(self, state: _Role, messages: list[Message], sampling: dict[str, Any],
                    key: str) -> Completion:
        config = state.config
        last_error: Exception | None = None
        endpoint = state.endpoints[0]
        for attempt in range(config.max_retries + 1):
            endpoint = self._next_endpoint(state)
            body = {"model": endpoint.model, "messages": messages, "seed": int(key[:8], 16),
                    **sampling}
            try:
                async with endpoint.gate or contextlib.nullcontext():
                    response = await _bounded(endpoint.client().post(CHAT_PATH, body=body,
                                                                     cast_to=object),
                                              config.timeout)
                completion = _completion(response)
            except (*RETRYABLE, MalformedAnswer, *NOT_JSON) as error:
                last_error = error
                if isinstance(error, NOT_JSON):  # a 200 whose body is a gateway's page, cut...
                    last_error = MalformedAnswer(f"the body is not JSON ({error})")
                if attempt == config.max_retries:
                    break
                self.ledger.record_retry(state.name, state.model)
                await asyncio.sleep(retry_delay(attempt, error, base=self.retry_base))
                continue
            except openai.APIStatusError as error:
                self.ledger.record_failure(state.name, state.model)
                raise LLMError(self._where(state, endpoint) + f": HTTP {error.status_code}: "
                               f"{_short(_scrub(error.message, state))}",
                               status_code=error.status_code, retryable=False) from None
            self.ledger.record_request(state.name, state.model, completion.prompt_tokens,
                                       completion.completion_tokens, config.price_input_per_1m,
                                       config.price_output_per_1m)
            return completion
        self.ledger.record_failure(state.name, state.model)
        raise LLMError(self._where(state, endpoint) +
                       f": failed after {config.max_retries + 1} attempts: "
                       f"{type(last_error).__name__}: {_short(_scrub(str(last_error), state))}",
                       status_code=getattr(last_error, "status_code", None), retryable=True)

    def _where(self, state: _Role, endpoint: _Endpoint) -> str:
        return f"role '{state.name}' (model {endpoint.model} at {endpoint.base_url})"

    async def reach(self, role: str) -> bool:
        """Ask each of the role's servers for its model list (OpenAI's `GET /models`: no tokens,
        no request counted, never cached), so that readiness is the backend's word, not the
        cache's. True: every server answered; False: a server has no such route (some
        OpenAI-compatible servers lack it: then only a completion can tell). Raises LLMError
        naming the role and the server when one is unreachable or refuses the key."""
        state = self._role(role)
        return all([await self._list_models(state, endpoint) for endpoint in state.endpoints])

    async def _list_models(self, state: _Role, endpoint: _Endpoint) -> bool:
        """One server's model list, with the role's retries (a flaky server is not a dead
        one); False when it has no such route."""
        attempts = state.config.max_retries + 1
        for attempt in range(attempts):
            try:
                await _bounded(endpoint.client().models.list(), state.config.timeout)
                return True
            except openai.NotFoundError:
                return False
            except openai.APIStatusError as error:
                if isinstance(error, RETRYABLE) and attempt < attempts - 1:
                    await asyncio.sleep(retry_delay(attempt, error, base=self.retry_base))
                    continue
                raise LLMError(self._where(state, endpoint) + f": HTTP {error.status_code}: "
                               f"{_short(_scrub(error.message, state))}",
                               status_code=error.status_code, retryable=False) from None
            except (*RETRYABLE, *NOT_JSON) as error:
                if attempt < attempts - 1:
                    await asyncio.sleep(retry_delay(attempt, error, base=self.retry_base))
                    continue
                raise LLMError(self._where(state, endpoint) + f": unreachable after {attempts}"
                               f" attempts: {type(error).__name__}: "
                               f"{_short(_scrub(str(error), state))}", retryable=True) from None
        return True  # not reached: the last attempt returns or raises

    async def chat_many(self, role: str, conversations: list[list[Message]],
                        **kwargs: Any) -> list[Completion | BaseException]:
        """Many requests of one role at once; failures come back as exceptions, in order."""
        tasks = [self.chat(role, messages, **kwargs) for messages in conversations]
        return await asyncio.gather(*tasks, return_exceptions=True)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` to completion from sync code (`run_sync`), then close this session's
        connections on the event loop that opened them. Every synchronous entry point goes
        through here: a client left to the garbage collector after its loop has closed prints
        "Event loop is closed" tracebacks into the notebook."""

        async def closing() -> T:
            try:
                return await work
            finally:
                await self.aclose()

        return run_sync(closing())

    # -- bookkeeping -------------------------------------------------------------------------
    def save_ledger(self) -> None:
        self.ledger.save(self.layout)
        if self.budget is not None:
            unregister(self.layout, self.ledger)

    async def aclose(self) -> None:
        for state in self._roles.values():
            for endpoint in state.endpoints:
                for client in endpoint.clients:
                    await client.close()
        self._roles.clear()


def _clients(url: str, key: str, config: RoleConfig) -> list[openai.AsyncOpenAI]:
    """The HTTP clients of one endpoint: together their pools hold `concurrency` connections,
    POOL_CONNECTIONS each."""
    count = max(1, math.ceil(config.concurrency / POOL_CONNECTIONS))
    limits = httpx.Limits(max_connections=POOL_CONNECTIONS,
                          max_keepalive_connections=POOL_CONNECTIONS)
    timeout = httpx.Timeout(config.timeout, connect=10.0)
    return [openai.AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=timeout,
                               http_client=openai.DefaultAsyncHttpxClient(
                                   limits=limits, timeout=timeout, verify=_tls_context()))
            for _ in range(count)]


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One certificate store for every client of the process: loading it costs ~25 ms, paid
    once rather than once per client (the system's store, $SSL_CERT_FILE / $SSL_CERT_DIR)."""
    return ssl.create_default_context()


async def _bounded(request: Awaitable[T], timeout: float) -> T:
    """The request, or RequestTimeout once `timeout` seconds have passed in all.

    httpx's timeouts bound each read, so a server that trickles a byte now and then would hold
    a request (and the run) for ever; this bounds the whole request."""
    deadline = asyncio.timeout(timeout)  # in this task: no task of its own per request
    try:
        async with deadline:
            return await request
    except TimeoutError:
        if not deadline.expired():
            raise
        raise RequestTimeout(f"no complete answer within the role's timeout of "
                             f"{timeout:g} s") from None


def _scrub(text: str, state: _Role) -> str:
    """Remove the role's API key from a message that may end up in a notebook or log."""
    key = os.environ.get(state.config.api_key_env or "", "")
    return text.replace(key, "***") if key else text


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


class MalformedAnswer(ValueError):
    """A 200 answer that is no usable chat completion (not JSON, an HTML page, a reply that is
    not text, counts of the wrong type): a failed request of its role, retried like one, and
    never cached."""


def _completion(response: Any) -> Completion:
    """A chat completion's JSON (OpenAI's shape) as a Completion, checked: MalformedAnswer
    names what is wrong. A content given as OpenAI's list of content parts is joined."""
    if not isinstance(response, dict):
        raise MalformedAnswer(f"the body is {type(response).__name__}, not a JSON object: "
                              f"{_short(str(response), 80)}")
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedAnswer("the answer has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    if not isinstance(message, dict):
        raise MalformedAnswer("its message is not an object")
    text = _content_text(message.get("content"))
    usage = response.get("usage") or {}
    if not isinstance(usage, dict):
        raise MalformedAnswer(f"its usage is {type(usage).__name__}, not an object")
    counts = {name: usage.get(name) or 0 for name in ("prompt_tokens", "completion_tokens")}
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in counts.values()):
        raise MalformedAnswer(f"its usage counts are not counts: {_short(str(usage), 80)}")
    finish = choice.get("finish_reason")
    if not isinstance(finish, (str, type(None))):
        raise MalformedAnswer("its finish_reason is not a string")
    return Completion(text=text, finish_reason=finish, logprobs=_logprobs(choice),
                      **counts)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI's content parts: the text parts, in order
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        if parts and all(isinstance(p, str) for p in parts):
            return "".join(parts)
    raise MalformedAnswer(f"its message content is {type(content).__name__}, not text: "
                          f"{_short(str(content), 80)}")


def _logprobs(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    logprobs = choice.get("logprobs") or {}
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        return None
    try:
        tokens = [{"token": str(t["token"]), "logprob": float(t["logprob"]),
                   "top": {str(c["token"]): float(c["logprob"])
                           for c in (t.get("top_logprobs") or [])}}
                  for t in content]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise MalformedAnswer(f"its logprobs are not OpenAI's ({type(error).__name__})") from None
    if any(math.isnan(value) or value > 0 for t in tokens
           for value in (t["logprob"], *t["top"].values())):
        raise MalformedAnswer("its logprobs hold a value that is no log-probability")
    return tokens


# ------------------------------------------------------------------------------------------
# Running async work from notebooks and scripts
# ------------------------------------------------------------------------------------------
def run_sync(work: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    """Run a coroutine to completion from sync code, also inside Jupyter's running loop.

    Jupyter kernels already run an event loop, so the work runs in a fresh loop on a helper
    thread; plain scripts use asyncio.run directly.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)  # type: ignore[arg-type]
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(work)  # type: ignore[arg-type]
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = error

    thread = threading.Thread(target=target, name="aloe-run-sync")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
