"""The token lengths `aloe plan` counts with: the prompt counter, and the lengths of
completions and persona texts at the ceiling and in the forecast.

Prompts are the real templates (`aloe/prompts/`), rendered through the same helpers the stages
use with placeholders for the variable parts. Counting rule (no tokenizer is loaded): fixed
template text and texts read from files at `CEILING_CHARS_PER_TOKEN` (3; the ceiling) or
`FORECAST_CHARS_PER_TOKEN` (4; English prose with GPT tokenizers) characters a token, plus
`MESSAGE_TOKENS` a message and `REQUEST_TOKENS` a request for the chat format (the ceiling's
cover chat templates that add a default system prompt of their own); a generated text shown
again (a user message in a later prompt) counts the tokens it was generated with (the same
tokenizer, or one as efficient). tests/test_plan.py checks the ceiling rule against the
embedded model's real tokenizer.

The ceiling takes every completion at its `max_tokens` and every persona text at the longest it
can be; the forecast takes each role's mean completion measured in the usage ledgers
(`aloe.stages.plan_ledgers`), else `DEFAULT_COMPLETION`, and persona texts at the mean of the run's
personas, else of the seed and imported pools. Each role names its source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aloe.core.chat import Message
from aloe.core.config import Params, is_url, resolve_path
from aloe.core.records import DataError, read_records
from aloe.core.schemas import persona_check
from aloe.llm.budget import CHARS_PER_TOKEN_AT_MOST
from aloe.stages.plan_ledgers import Measured, measured_completions, typical
from aloe.stages.pools import KINDS, MAX_ITEM_CHARS, builtin_seeds, kind_plural, read_text_pool

CEILING_CHARS_PER_TOKEN = CHARS_PER_TOKEN_AT_MOST  # the budget's reservation uses the same
FORECAST_CHARS_PER_TOKEN = 4.0
# The chat format around the text: role markers around each message (OpenAI: 3-4 tokens;
# ChatML and Llama 3 templates: 5) and a request's reply primer (3). The ceiling also allows for
# chat templates that add a default system prompt of their own (SmolLM2: ~20 tokens).
MESSAGE_TOKENS = {"ceiling": 6, "forecast": 4}
REQUEST_TOKENS = {"ceiling": 32, "forecast": 3}
ALOE_BENCHMARK = (20, 5)  # the official benchmark: 20 profiles x the first 5 personalities
ALOE_BENCHMARK_PERSONALITIES = 5
# Forecast defaults where no ledger measured a role (tokens, capped at the role's max_tokens):
# what the templates ask for. The generator writes `generate_n` items of a seed's length.
DEFAULT_COMPLETION = {
    "user": 40,  # "one to three short sentences"
    "inducer": 40,  # two short lines
    "assistant": 60,  # "at most three sentences"
    "judge": 1,  # one digit
    "second_judge": 1,
}
DEFAULT_POLICY_SHARE = 0.8  # a model under test, told no length, fills most of max_new_tokens


# ==========================================================================================
# Counting tokens of rendered prompts
# ==========================================================================================
_SLOT = re.compile("\ue000(\\d+)\ue001")


class PromptCounter:
    """Renders prompts with placeholders for their variable parts and counts their tokens:
    each placeholder at its budget in tokens, the fixed text by the characters-a-token rule."""

    def __init__(self, chars_per_token: float, message_tokens: int, request_tokens: int):
        self.chars_per_token = chars_per_token
        self.message_tokens, self.request_tokens = message_tokens, request_tokens
        self._budgets: list[float] = []

    def slot(self, tokens: float) -> str:
        """A placeholder worth `tokens` tokens, to put where a variable text goes."""
        self._budgets.append(tokens)
        return f"\ue000{len(self._budgets) - 1}\ue001"

    def text(self, chars: float) -> float:
        return chars / self.chars_per_token

    def tokens(self, messages: list[Message]) -> float:
        total = float(self.request_tokens)
        for message in messages:
            content = message["content"]
            total += self.message_tokens + sum(self._budgets[int(m[1])]
                                               for m in _SLOT.finditer(content))
            total += self.text(len(_SLOT.sub("", content)))
        return total


# ==========================================================================================
# Lengths: the ceiling's and the forecast's
# ==========================================================================================
@dataclass
class Lengths:
    """Token lengths of the variable parts of every prompt, for one of ceiling or forecast."""

    kind: str  # "ceiling" or "forecast"
    chars_per_token: float
    completion: dict[str, float]  # role -> one completion; "policy": a model under test
    persona: dict[str, float]  # training personas: profile, personality
    benchmark: dict[str, float]  # benchmark personas: profile, personality
    pool_item: dict[str, float]  # an item of a pool shown to the generator, per kind
    sources: dict[str, str] = field(default_factory=dict)  # role -> where its length is from

    def counter(self) -> PromptCounter:
        return PromptCounter(self.chars_per_token, MESSAGE_TOKENS[self.kind],
                             REQUEST_TOKENS[self.kind])


def _texts(source: str | None) -> list[str] | None:
    """The texts of a pool file, or None when it cannot be read offline (a URL, a bad file)."""
    if not source or is_url(source):
        return None
    try:
        return read_text_pool(source)
    except DataError:
        return None


def _seed_texts(params: Params, kind: str) -> list[str]:
    config = params.personas
    if config.seeds == "builtin":
        return builtin_seeds(kind)
    return _texts(str(resolve_path(config.seeds) / f"{kind_plural(kind)}.jsonl")) or []


def _imported(params: Params, kind: str) -> str | None:
    return getattr(params.personas, f"import_{kind_plural(kind)}")


def pool_grows(params: Params, kind: str) -> bool:
    """A training pool is generated unless an import is the whole pool."""
    return not (_imported(params, kind) and params.personas.import_as == "pool")


def initial_texts(params: Params, kind: str) -> list[str]:
    """What a training pool starts from (readable offline): seeds and imports."""
    texts = [] if not pool_grows(params, kind) else _seed_texts(params, kind)
    return texts + (_texts(_imported(params, kind)) or [])


def generated_item_cap(params: Params) -> float:
    """The most tokens a generated pool item can hold: one generator reply, and at most
    MAX_ITEM_CHARS characters (stage 1 drops longer ones)."""
    return min(params.roles.generator.max_tokens, MAX_ITEM_CHARS / CEILING_CHARS_PER_TOKEN)


def benchmark_uses_generated_pools(params: Params) -> bool:
    """Stage 1 grows a benchmark only for a run that evaluates on its own (`benchmark: run`)."""
    return params.evaluation.benchmark == "run"


def generated_pools(params: Params) -> list[tuple[str, str]]:
    """(pool name, kind) of every pool stage 1 generates for this run."""
    pools = [(kind_plural(kind), kind) for kind in KINDS if pool_grows(params, kind)]
    if benchmark_uses_generated_pools(params):
        pools += [(f"benchmark_{kind_plural(kind)}", kind) for kind in KINDS]
    return pools


def _benchmark_files(params: Params) -> tuple[str | None, str | None] | None:
    """The official files the benchmark is read from, or None when it is generated."""
    if params.evaluation.benchmark == "aloe":
        return params.evaluation.aloe_profiles, params.evaluation.aloe_personalities
    return None


def benchmark_size(params: Params) -> int:
    """How many benchmark personas stage 5 talks with (after `evaluation.limit`)."""
    files = _benchmark_files(params)
    m = (ALOE_BENCHMARK_PERSONALITIES if params.evaluation.benchmark == "aloe"
         else params.personas.benchmark_personalities)
    if files is None:
        size = params.personas.benchmark_profiles * params.personas.benchmark_personalities
    else:
        profiles, personalities = (_texts(files[0]), _texts(files[1]))
        size = (len(profiles) if profiles is not None else ALOE_BENCHMARK[0]) * min(
            m, len(personalities) if personalities is not None else ALOE_BENCHMARK[1])
    limit = params.evaluation.limit
    return min(size, limit) if limit else size


def _longest(texts: list[str] | None, fallback: float) -> float:
    return max((len(t) / CEILING_CHARS_PER_TOKEN for t in texts), default=0.0) \
        if texts else fallback


def _mean(texts: list[str] | None, fallback: float) -> float:
    return sum(len(t) for t in texts) / len(texts) / FORECAST_CHARS_PER_TOKEN if texts \
        else fallback


def _ceiling_personas(params: Params) -> tuple[dict[str, float], dict[str, float]]:
    """The longest a training and a benchmark persona text can be, per kind."""
    cap = generated_item_cap(params)
    unknown = MAX_ITEM_CHARS / CEILING_CHARS_PER_TOKEN  # an official file not readable offline
    training, bench = {}, {}
    files = _benchmark_files(params)
    for index, kind in enumerate(KINDS):
        longest = _longest(initial_texts(params, kind), 0.0)
        training[kind] = max(longest, cap) if pool_grows(params, kind) else longest
        bench[kind] = cap if files is None else _longest(_texts(files[index]), unknown)
    return training, bench


def _forecast_personas(params: Params) -> tuple[dict[str, float], dict[str, float]]:
    """Typical persona texts: the run's own when it has them, else the seeds and imports."""
    training, bench = {}, {}
    written = read_records(params.layout.personas, check=persona_check())
    written_bench = read_records(params.layout.benchmark, check=persona_check())
    files = _benchmark_files(params)
    for index, kind in enumerate(KINDS):
        base = _mean(initial_texts(params, kind), 60.0)
        training[kind] = _mean([p[kind] for p in written], base) if written else base
        fallback = base if files is None else _mean(_texts(files[index]), base)
        bench[kind] = _mean([p[kind] for p in written_bench], fallback) if written_bench \
            else fallback
    return training, bench


def ceiling_lengths(params: Params) -> Lengths:
    """The longest every part can be: completions at max_tokens, persona texts at their most."""
    roles = params.roles
    completion = {role: float(config.max_tokens) for role, config in roles.as_mapping().items()}
    completion["policy"] = float(params.evaluation.max_new_tokens)
    training, bench = _ceiling_personas(params)
    items = {kind: training[kind] for kind in KINDS}
    sources = {role: "max_tokens" for role in completion}
    return Lengths("ceiling", CEILING_CHARS_PER_TOKEN, completion, training, bench, items,
                   sources)


def forecast_lengths(params: Params, measured: dict[tuple[str, str], Measured] | None = None
                     ) -> Lengths:
    """Typical lengths: measured completions where the ledgers have them, else the defaults."""
    measured = measured_completions(params) if measured is None else measured
    training, bench = _forecast_personas(params)
    completion: dict[str, float] = {}
    sources: dict[str, str] = {}
    for role, config in params.roles.as_mapping().items():
        default = (DEFAULT_COMPLETION.get(role) if role != "generator"
                   else params.personas.generate_n
                   * (training["profile"] + training["personality"]) / 2)
        completion[role], sources[role] = typical(measured, role, config.model,
                                                  config.max_tokens, float(default or 0))
    max_new = params.evaluation.max_new_tokens
    completion["policy"], sources["policy"] = DEFAULT_POLICY_SHARE * max_new, (
        f"default: {DEFAULT_POLICY_SHARE:.0%} of max_new_tokens")
    items = {kind: training[kind] for kind in KINDS}
    return Lengths("forecast", FORECAST_CHARS_PER_TOKEN, completion, training, bench, items,
                   sources)

