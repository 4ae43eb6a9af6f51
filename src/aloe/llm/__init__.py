"""The LLM layer: every role over the OpenAI protocol, with cache, retries and a usage ledger."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aloe.core.config import Params
from aloe.llm.cache import ResponseCache, request_key
from aloe.llm.client import LLM, Completion, LLMError, Message, MissingKeyError, run_sync
from aloe.llm.ledger import Ledger, RoleUsage, load_usage_history
from aloe.llm.server import LocalServer, ensure_local_server

__all__ = ["LLM", "Completion", "LLMError", "Ledger", "LocalServer", "Message",
           "MissingKeyError", "ResponseCache", "RoleUsage", "ensure_local_server",
           "load_usage_history", "open_llm", "request_key", "run_sync"]


@contextmanager
def open_llm(params: Params, stage: str) -> Iterator[LLM]:
    """The roles for one stage session; its usage ledger is saved however the session ends."""
    llm = LLM.for_run(params, stage)
    try:
        yield llm
    finally:
        llm.save_ledger()
        llm.cache.close()
