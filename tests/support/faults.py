"""The kinds of bad answer a server can give, shared by the fault drills (issue 27): the client's
(tests/test_llm.py, against tests/support/scripted_server.py) and the stages'
(bench/fault_drill.py, through tests/support/fault_proxy.py).

Each kind holds the answer itself (a body for a 200, or (status, content type, body), or `HANG`:
never answered), the words a failure's message must hold to name the cause, and how many
requests the client sends before giving up with `max_retries: 1` (a 401 is not retried).
"""

from __future__ import annotations

from typing import NamedTuple

from tests.support.scripted_server import HANG, completion

Answer = bytes | tuple[int, str, bytes]


class Fault(NamedTuple):
    """One kind of bad answer: what the server sends, and what the message must say of it."""

    answer: Answer
    cause: str
    attempts: int


def _nan_logprobs() -> bytes:
    return completion("Hi", logprobs={"content": [{"token": "Hi", "logprob": float("nan"),
                                                   "top_logprobs": []}]})


def as_response(answer: Answer) -> tuple[int, str, bytes]:
    """(status, content type, body) of an answer; a bare body is a 200 of JSON."""
    return answer if isinstance(answer, tuple) else (200, "application/json", answer)


FAULTS: dict[str, Fault] = {
    "a 200 whose body is not JSON": Fault(b"this is not JSON", "MalformedAnswer: the body is ",
                                          2),
    "an HTML gateway page": Fault((200, "text/html", b"<html><body><h1>502 Bad Gateway</h1>"
                                                     b"</body></html>"),
                                  "MalformedAnswer: the body is ", 2),
    "a body cut short": Fault(b'{"choices": [{"message": {"content": "Hel',
                              "MalformedAnswer: the body is not JSON", 2),
    "non-UTF-8 bytes": Fault(b'\xff\xfe{"choices": []}', "MalformedAnswer: the body is ", 2),
    "usage of the wrong type": Fault(completion("fine", usage="many"),
                                     "MalformedAnswer: its usage is str, not an object", 2),
    "content not a string": Fault(completion(5),
                                  "MalformedAnswer: its message content is int, not text: 5", 2),
    "content parts without text": Fault(completion([{"type": "image_url",
                                                     "image_url": {"url": "x"}}]),
                                        "MalformedAnswer: its message content is list, not text",
                                        2),
    "empty choices": Fault(b'{"choices": []}', "MalformedAnswer: the answer has no choices", 2),
    "NaN logprobs": Fault(_nan_logprobs(),
                          "MalformedAnswer: its logprobs hold a value that is no log-probability",
                          2),
    "a 401": Fault((401, "application/json", b'{"error": {"message": "Incorrect API key"}}'),
                   "HTTP 401: Error code: 401 - Incorrect API key", 1),
    "a 500": Fault((500, "application/json", b'{"error": {"message": "the upstream fell over"}}'),
                   "InternalServerError: Error code: 500", 2),
    # the role's timeout is the caller's: the message gives it after these words
    "a hang": Fault(HANG, "RequestTimeout: no complete answer within the role's timeout of ", 2),
}

__all__ = ["FAULTS", "HANG", "Answer", "Fault", "as_response"]
