"""The pieces every section of the parameter files is made of: the strict number types and their
upper bounds, the base of every section (unknown keys are errors), the role and stage names.
"""


from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictFloat,
    StrictInt,
)

from aloe.core.errors import shown

ROLE_NAMES = ("generator", "user", "inducer", "assistant", "judge")
OPTIONAL_ROLES = ("second_judge",)  # roles a parameter file may add (None: not used)
BUDGET_STAGES = ("preflight", "personas", "conversations", "evaluate")
SECTION_NAMES = frozenset({"run", "local_model", "roles", "personas", "conversations", "sft",
                           "dpo", "grpo", "evaluation", "report"})



class Section(BaseModel):
    """Base of every section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Numbers are strict: a count is a whole number (`true` or 2.5 is refused, never read as 1 or
# 2), and a real number takes whole numbers (3 -> 3.0) but not `true`. Every count has an upper
# bound far above any real run, so that a typo (1e14, an extra zero or six) stops the run here
# instead of planning a run that cannot finish.
Int = StrictInt
Real = StrictFloat
MAX_ITEMS = 10_000_000  # personas, conversations, benchmark users: the paper uses 3,310 / 3,000
MAX_CONCURRENCY = 4096  # requests in flight per role: beyond any API's rate limit
MAX_TOKENS = 131_072  # a 128k context: no served model writes or trains on more
MAX_SEED = 2**32 - 1  # numpy and torch seeds are 32-bit
MAX_SECONDS = 7 * 24 * 3600.0  # a week: a timeout beyond that is a typo
MAX_TURNS = 1000  # turns of one conversation: the paper uses 10


def check_base_url(url: str) -> str:
    """`local`, or an http(s) URL with a host; anything else cannot be reached (e.g. "htp:/x")."""
    if url == "local":
        return url
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url {shown(url)} is neither 'local' nor an http(s) URL "
                         "(e.g. http://127.0.0.1:8000/v1)")
    return url


