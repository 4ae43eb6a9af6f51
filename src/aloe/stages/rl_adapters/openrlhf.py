"""The protocol's judge as an OpenRLHF remote reward model: an HTTP server that OpenRLHF's
`--remote_rm_url` posts to (`openrlhf/utils/remote_rm_utils.py`, `request_api_wrapper`).

OpenRLHF sends `{"query": [...], "prompts": [...], "labels": [...]}` (per sample: the
templated prompt and the policy's response as one text, the templated prompt alone, and the
dataset's label) and reads `rewards` from the JSON answer (one number per sample); newer
versions also read `scores` and `extra_logs`, which this server fills too.

The label carries the conversation: JSON text `{"persona": {...}, "history": [messages]}`
(the chat so far, ending with the user's message; `label_line` writes it). The reply is the
query after its prompt, less the chat template's end marks; the judge scores it in that
conversation on the protocol's scale, as the benchmark does. An unreadable judgement scores
`unreadable` (default: the bottom of the scale). Stdlib only: one background event loop
serves every request, so the LLM layer's concurrency, cache and budget hold across them.

    python -m aloe.stages.rl_adapters.openrlhf params/paper.yaml --port 5000   # then, in OpenRLHF:
    --remote_rm_url http://HOST:5000/get_reward --label_key label
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aloe.core import protocols
from aloe.core.config import load_params
from aloe.core.errors import AloeError, BadInputError
from aloe.llm import LLM
from aloe.roles.judges import score_reply

END_MARKS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>", "<end_of_turn>")


def label_line(persona: dict[str, Any], history: Sequence[dict[str, Any]]) -> str:
    """The label of one OpenRLHF sample: the persona and the chat the reply answers."""
    return json.dumps({"persona": persona, "history": list(history)}, ensure_ascii=False)


def reply_in(query: str, prompt: str) -> str:
    """The policy's response: the query after its prompt, without trailing end marks."""
    reply = query[len(prompt):] if query.startswith(prompt) else query
    reply = reply.strip()
    while any(reply.endswith(m) for m in END_MARKS):
        reply = next(reply[:-len(m)] for m in END_MARKS if reply.endswith(m)).rstrip()
    return reply


class JudgeRewards:
    """Scores OpenRLHF's batches with the protocol's judge on `llm`'s `judge` role."""

    def __init__(self, llm: Any, protocol: protocols.Protocol,
                 unreadable: float | None = None) -> None:
        self.llm, self.protocol = llm, protocol
        self.unreadable = float(protocol.scale[0] if unreadable is None else unreadable)

    async def score(self, body: dict[str, Any]) -> dict[str, Any]:
        """The answer to one request body, in the shape OpenRLHF reads."""
        queries, prompts, labels = (list(body.get(k) or []) for k in ("query", "prompts",
                                                                        "labels"))
        if not queries or len(prompts) != len(queries) or len(labels) != len(queries):
            raise BadInputError("reward request: 'query', 'prompts' and 'labels' must be "
                                f"lists of one length (got {len(queries)}, {len(prompts)}, "
                                f"{len(labels)}); send OpenRLHF's remote reward body")
        judged = await asyncio.gather(*(self._one(q, p, lab)
                                        for q, p, lab in zip(queries, prompts, labels)))
        rewards = [self.unreadable if j is None else j for j in judged]
        return {"rewards": rewards, "scores": rewards,
                "extra_logs": {"judge_unreadable": [float(j is None) for j in judged]}}

    async def _one(self, query: str, prompt: str, label: Any) -> float | None:
        try:
            data = json.loads(label) if isinstance(label, str) else dict(label)
            persona, history = data["persona"], data["history"]
        except (ValueError, KeyError, TypeError):
            raise BadInputError("reward request: a label is not {'persona', 'history'} JSON; "
                                "write labels with aloe.stages.rl_adapters.openrlhf.label_line")
        judgement = await score_reply(self.llm.chat, persona, history, reply_in(query, prompt),
                                      protocol=self.protocol)
        return None if judgement.score is None else float(judgement.score)


def serve(rewards: JudgeRewards, host: str = "127.0.0.1", port: int = 5000) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving: call `serve_forever`) answering POSTs on any path;
    a refused body gets 400 with the one-line reason."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                answer = asyncio.run_coroutine_threadsafe(rewards.score(body), loop).result()
                self._send(200, answer)
            except (BadInputError, ValueError) as error:
                self._send(400, {"error": str(error)})
            except AloeError as error:  # the judge's backend failed past its retries
                self._send(502, {"error": str(error)})

        def _send(self, status: int, data: dict[str, Any]) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:  # quiet: one line per request is noise
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The protocol's judge as an OpenRLHF "
                                     "remote reward model.")
    parser.add_argument("params", help="parameter file (its judge role, protocol, cache)")
    parser.add_argument("--protocol", default=None, help="default: evaluation.protocol")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    llm = LLM.for_run(params, "environment")
    protocol = protocols.get(args.protocol or params.evaluation.protocol)
    server = serve(JudgeRewards(llm, protocol), args.host, args.port)
    print(f"OpenRLHF remote reward ({protocol.name}) on http://{args.host}:{args.port}/")
    try:
        server.serve_forever()
    finally:
        llm.save_ledger()


if __name__ == "__main__":
    main()
