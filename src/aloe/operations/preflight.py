"""Stage 0: before anything is spent, the plan (`aloe.operations.plan`: requests, tokens, cost, GPU
hours; offline) and the readiness of everything the run needs, so that a run that would fail in
stage
3 fails here, in minutes, with every reason in full.

Readiness checks, each with its whole reason when it fails:

- keys: every API key variable a role or a model under test names is set;
- endpoints: every role, and every model under test behind an endpoint, is reached (its
  servers' model list, `GET /models`: no tokens, never cached, so a dead server or a refused key
  fails here whatever the cache holds) and answers a one-word probe (from the cache when it was
  answered before; asked afresh when a server has no model list), with the role's retries,
  each attempt at most 30 s;
- models: the Hugging Face ids of the models to train and evaluate resolve (a gated model this
  account cannot read is named with what to do; offline, the local cache decides, and what
  could not be asked is said), local model folders exist, the embedded model is installed;
- the embedding model of the persona filter is present (when stage 1 generates pools);
- benchmark and pool files are present, or their URLs reachable;
- a GPU with the memory each training stage still to run needs (the rule and figures of
  `gpu_figures.json`), or a policy small enough for the CPU; TRL accepts the trainer options;
- free disk for the run folder and for the base model's download.

`require_ready` raises `NotReadyError`, one line per failed check: the notebook ends there and
`aloe run` prints the lines, before any money or GPU time is spent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aloe.core.chat import Message
from aloe.core.config import Params, RoleConfig, is_url, resolve_path
from aloe.core.errors import AloeError
from aloe.core.layout import TRAINING_STAGES
from aloe.llm import LLM
from aloe.operations.hardware import (
    base_model_download_gb,
    disk_gb,
    policy_parameters,
    policy_reference,
    training_memory_gb,
)
from aloe.prompts import render
from aloe.stages.plan_lengths import Lengths, generated_pools
from aloe.stages.planned import PlannedRequest, policy_role

OK, FAILED, UNCHECKED = "ok", "FAILED", "not checked"
PROBE_TIMEOUT = 30.0
PROBE_MAX_TOKENS = 4  # the probe asks for one word
CPU_TRAINING_LIMIT = 1e9  # parameters: a smaller policy trains on a CPU (slowly, the tiny profile)
DISK_MARGIN = 1.2  # free disk wanted over the estimate


class NotReadyError(AloeError):
    """A run would fail: the message's first line counts the failed readiness checks, then
    one line per failed check, whole ("- check: reason and what to do")."""

    def __init__(self, headline: str, details: Sequence[str] = ()) -> None:
        super().__init__("\n".join([headline, *(f"- {line}" for line in details)]))
        self.headline, self.details = headline, list(details)


@dataclass
class Check:
    """One readiness check: what was checked, its status, and the whole reason or finding."""

    check: str
    status: str  # OK, FAILED or UNCHECKED (could not be asked; said why, not blocking)
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == FAILED


# ------------------------------------------------------------------------------------------
# Keys and endpoints
# ------------------------------------------------------------------------------------------
def _roles(params: Params) -> dict[str, RoleConfig]:
    """Every LLM the run talks to: the five roles and each model under test behind an
    endpoint (named as the plan names it)."""
    from aloe.stages.policy import endpoint_role

    roles = dict(params.roles.as_mapping())
    for spec in params.evaluation.models:
        if spec.base_url:
            roles[policy_role(spec)] = endpoint_role(params, spec)
    return roles


def check_keys(params: Params) -> list[Check]:
    """Every API key variable named by a role is set (its value is never shown)."""
    needed: dict[str, list[str]] = {}
    for role, config in _roles(params).items():
        if config.api_key_env:
            needed.setdefault(config.api_key_env, []).append(role)
    checks = []
    for variable, roles in needed.items():
        who = ", ".join(roles)
        if os.environ.get(variable):
            checks.append(Check(f"key {variable}", OK, f"set (for {who})"))
        else:
            verb = "needs" if len(roles) == 1 else "need"
            checks.append(Check(f"key {variable}", FAILED,
                                f"the environment variable {variable} is not set; {who} {verb} "
                                f"it as API key: export {variable}=... before `aloe run`"))
    return checks


def _probe_config(config: RoleConfig) -> RoleConfig:
    """A role for the probe: its own retries (a flaky backend is not a dead one), each
    attempt given at most PROBE_TIMEOUT seconds (a dead backend fails in seconds, a silent
    one in minutes, not hours)."""
    return config.model_copy(update={"timeout": min(config.timeout, PROBE_TIMEOUT)})


async def _probe(llm: LLM, role: str) -> Check:
    config = llm.role_config(role)
    where = f"{config.model} at {', '.join(config.base_urls)}"
    if config.api_key_env and not os.environ.get(config.api_key_env):
        return Check(f"endpoint {role}", UNCHECKED,
                     f"{where}: not tried, its key {config.api_key_env} is not set")
    started = time.perf_counter()
    try:
        listed = await llm.reach(role)  # the backend itself, whatever the cache holds
        reply = await llm.chat(role, _probe_messages(), max_tokens=PROBE_MAX_TOKENS,
                               temperature=0.0, fresh=not listed)
    except Exception as error:  # noqa: BLE001 - every failure is reported, whole
        said = str(error).strip().rstrip(".")
        return Check(f"endpoint {role}", FAILED, f"{type(error).__name__}: {said}; "
                                                 f"{_endpoint_fix(role, config)}")
    seconds = time.perf_counter() - started
    how = "reachable; its model answered earlier (cached)" if reply.cached else "answered"
    return Check(f"endpoint {role}", OK, f"{where} {how} {reply.text.strip()[:30]!r} in "
                                         f"{seconds:.1f} s")


def _probe_messages() -> list[Message]:
    return [{"role": "user", "content": render("probe_ready")}]


def planned_requests(params: Params, lengths: Lengths) -> list[PlannedRequest]:
    """Stage 0's requests for `aloe plan`: one probe of every role and endpoint model, as
    `check_endpoints` sends it."""
    probe = lengths.counter().tokens(_probe_messages())
    return [PlannedRequest(role, 1, probe, PROBE_MAX_TOKENS) for role in _roles(params)]


def _endpoint_fix(role: str, config: RoleConfig) -> str:
    """What to do about a backend that did not answer: the keys that say where it is."""
    setting = (f"the evaluation.models entry '{role.split(':', 1)[1]}'"
               if role.startswith("policy:") else f"roles.{role}")
    key = f", the key in {config.api_key_env}" if config.api_key_env else ""
    return (f"check that the server is up and reachable, and {setting} (base_url, "
            f"model{key})")


def check_endpoints(params: Params) -> list[Check]:
    """One tiny request per role and endpoint model, all at once."""
    from aloe.llm.server import ensure_local_server

    roles = {name: _probe_config(config) for name, config in _roles(params).items()}
    llm = LLM(roles, stage="preflight", layout=params.layout,
              local_server=lambda: ensure_local_server(params))

    async def probes() -> list[Check]:
        return list(await asyncio.gather(*(_probe(llm, role) for role in roles)))

    try:
        return llm.run(probes())
    finally:
        llm.save_ledger()
        llm.cache.close()


# ------------------------------------------------------------------------------------------
# Models and files
# ------------------------------------------------------------------------------------------
def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str)
               for name in ("config.json", "modules.json"))


def check_hub_model(reference: str, what: str) -> Check:
    """A model folder exists, or a Hugging Face id resolves with this account's access."""
    from aloe.stages.policy import HUB_ID, looks_like_path

    if looks_like_path(reference):
        folder = resolve_path(reference)
        found = (folder / "config.json").exists()
        return Check(what, OK if found else FAILED,
                     f"{reference}: a model folder" if found else
                     f"{reference}: no model folder there (no config.json): fix the path")
    if not HUB_ID.match(reference):
        return Check(what, FAILED, f"{reference!r} is neither a folder nor a Hugging Face id")
    cached = _cached(reference)
    if _offline():
        if cached:
            return Check(what, UNCHECKED, f"{reference}: in the local cache; access not asked "
                                          "(HF_HUB_OFFLINE is set)")
        return Check(what, FAILED, f"{reference}: not in the local Hugging Face cache and "
                                   f"HF_HUB_OFFLINE is set: run `hf download {reference}` where "
                                   "there is network, or unset HF_HUB_OFFLINE")
    return _ask_hub(reference, what, cached)


def _ask_hub(reference: str, what: str, cached: bool) -> Check:
    from huggingface_hub import auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        auth_check(reference)
    except GatedRepoError:
        return Check(what, FAILED, f"{reference} is gated and this account has no access: "
                                   f"request it at https://huggingface.co/{reference}, then log "
                                   "in with `hf auth login` (or set HF_TOKEN)")
    except RepositoryNotFoundError:
        return Check(what, FAILED, f"{reference}: no such model on the Hugging Face hub, or a "
                                   "private one this account cannot see: check the id, or "
                                   "`hf auth login`")
    except Exception as error:  # noqa: BLE001 - the hub could not be asked
        reason = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
        if cached:
            return Check(what, UNCHECKED, f"{reference}: in the local cache; the hub could not "
                                          f"be asked ({reason})")
        return Check(what, FAILED, f"{reference}: the Hugging Face hub could not be asked "
                                   f"({reason}) and it is not cached: check the network, or "
                                   f"`hf download {reference}` where there is one")
    return Check(what, OK, f"{reference}: resolvable on the hub"
                           + (" and cached" if cached else " (downloaded on first use)"))


def check_models(params: Params) -> list[Check]:
    """The models to train and evaluate: hub ids, folders, the embedded model (each once)."""
    references: dict[str, str] = {}
    for stage in TRAINING_STAGES:
        references.setdefault(policy_reference(params, stage), f"model {stage}.base_model")
    for spec in params.evaluation.models:
        if spec.model and not spec.base_url:
            references.setdefault(spec.model, f"model evaluation '{spec.name}'")
    embedded = _embedded_reference(params)
    return [_check_embedded(reference, what) if reference == embedded
            else check_hub_model(reference, what) for reference, what in references.items()]


def _embedded_reference(params: Params) -> str | None:
    """The embedded model's folder, when a training stage uses it."""
    if params.local_model.path:
        return None
    users = [stage for stage in TRAINING_STAGES if not getattr(params, stage).base_model]
    return policy_reference(params, users[0]) if users else None


def _check_embedded(reference: str, what: str) -> Check:
    """The embedded SmolLM2, converted, or its package there to convert it from."""
    from aloe.core.local_model import LocalModelError, embedded_gguf

    folder = Path(reference)
    if (folder / "config.json").exists():
        return Check(what, OK, f"the embedded model, converted at {folder}")
    try:
        return Check(what, OK, f"the embedded model, converted on first use from {embedded_gguf()}")
    except LocalModelError as error:
        return Check(what, FAILED, str(error))


def check_embedding_model(params: Params) -> list[Check]:
    """The persona filter's sentence-embedding model is on disk (or on the hub, online)."""
    if not generated_pools(params):
        return []
    from aloe.stages.embeddings import EmbeddingModelError, hub_id, resolve_embedding_model

    name = params.personas.embedding_model
    what = "embedding model"
    try:
        where = resolve_embedding_model(name)
    except EmbeddingModelError as error:
        return [Check(what, FAILED, str(error))]
    if Path(where).exists():
        return [Check(what, OK, f"{name}: on disk at {where}")]
    check = check_hub_model(hub_id(name), what)
    if check.failed:
        check.detail += ("; or give personas.embedding_model a local folder holding the "
                         "sentence-transformers model")
    return [check]


def _input_files(params: Params) -> list[tuple[str, str]]:
    """(key, path or URL) of every pool and benchmark file the run reads."""
    p, e = params.personas, params.evaluation
    files = [("personas.import_profiles", p.import_profiles),
             ("personas.import_personalities", p.import_personalities)]
    if e.benchmark == "aloe":
        files += [("evaluation.aloe_profiles", e.aloe_profiles),
                  ("evaluation.aloe_personalities", e.aloe_personalities)]
    return [(key, value) for key, value in files if value]


def _missing_benchmark_keys(params: Params) -> list[Check]:
    e = params.evaluation
    missing = []
    if e.benchmark == "aloe":
        missing += [f"evaluation.{k}" for k in ("aloe_profiles", "aloe_personalities")
                    if not getattr(e, k)]
    return [Check(f"file {key}", FAILED, f"{key} is not set but the run reads the official "
                                         "benchmark: give a path or URL of the official file")
            for key in missing]


def check_files(params: Params) -> list[Check]:
    """Pool and benchmark files are there; URLs answer."""
    checks = _missing_benchmark_keys(params)
    seen: set[str] = set()
    for key, value in _input_files(params):
        if value in seen:
            continue
        seen.add(value)
        checks.append(_check_url(key, value) if is_url(value) else _check_path(key, value))
    return checks


def _check_path(key: str, value: str) -> Check:
    found = resolve_path(value).is_file()
    return Check(f"file {key}", OK if found else FAILED,
                 f"{value}: present" if found else f"{value}: no such file: fix {key}")


def _check_url(key: str, url: str) -> Check:
    import httpx

    try:
        response = httpx.get(url, timeout=15.0, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as error:
        return Check(f"file {key}", FAILED,
                     f"{url} could not be fetched ({type(error).__name__}: {error}): check the "
                     f"network, or download the file and give its local path in {key}")
    return Check(f"file {key}", OK, f"{url}: reachable ({len(response.content):,} bytes)")


# ------------------------------------------------------------------------------------------
# GPU, trainer options, disk
# ------------------------------------------------------------------------------------------
def _stages_to_train(params: Params) -> list[str]:
    """Training stages whose adapter is not finished yet."""
    from aloe.stages.training import is_finished

    return [stage for stage in TRAINING_STAGES if not is_finished(params, stage)]


def _free_gpu_gb() -> tuple[str, float, float] | None:
    """The first GPU's name, free and total memory in GB; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(0)
    return torch.cuda.get_device_name(0), free / 2**30, total / 2**30


def check_gpu(params: Params, gpu: Callable[[], tuple[str, float, float] | None] = _free_gpu_gb
              ) -> list[Check]:
    """Each training stage still to run: a GPU with the memory it needs, or a CPU-sized
    policy. `gpu` reports the GPU (a parameter so that tests can describe other machines)."""
    stages = _stages_to_train(params)
    if not stages:
        return [Check("gpu", OK, "both adapters are trained: no training left to run")]
    found = gpu()
    checks = []
    for stage in stages:
        parameters, about = policy_parameters(params, stage)
        needed = training_memory_gb(params, stage)
        checks.append(_gpu_check(stage, parameters, about, needed, found))
    return checks


def _gpu_check(stage: str, parameters: float, about: str, needed: float,
               found: tuple[str, float, float] | None) -> Check:
    what = f"gpu for {stage}"
    basis = "gpu_figures.json: measured peaks scaled to this model"
    if found is None:
        if parameters < CPU_TRAINING_LIMIT:
            return Check(what, OK, f"no GPU: {about} trains on the CPU (slowly)")
        return Check(what, FAILED, f"no GPU is visible (torch.cuda.is_available() is False) but "
                                   f"training {about} needs one with about {needed:.0f} GB "
                                   f"free ({basis}): run on a GPU machine with a CUDA build of "
                                   "torch, or choose a smaller base_model")
    name, free, total = found
    if free < needed:
        return Check(what, FAILED, f"{name} has {free:.1f} of {total:.0f} GB free but training "
                                   f"{about} needs about {needed:.0f} GB ({basis}): free the "
                                   f"GPU (another process holds it?), lower "
                                   f"{stage}.trainer.max_length, or use a larger GPU")
    return Check(what, OK, f"{name}: {free:.1f} of {total:.0f} GB free; about {needed:.0f} GB "
                           f"needed ({basis})")


def check_trainer_options(params: Params) -> list[Check]:
    """TRL builds its config from each stage's trainer options on this machine's device."""
    from aloe.stages.policy import detect_device
    from aloe.stages.qlora import trainer_arguments

    checks = []
    device = detect_device()
    for stage in _stages_to_train(params):
        with tempfile.TemporaryDirectory() as folder, _notes("aloe.stages.training") as notes:
            try:
                trainer_arguments(stage, getattr(params, stage), Path(folder), device,
                                  seed=params.run.seed)
            except Exception as error:  # noqa: BLE001 - TRL's own message, whole
                checks.append(Check(f"trainer options {stage}", FAILED,
                                    f"TRL refuses {stage}.trainer on {device.name}: "
                                    f"{type(error).__name__}: {' '.join(str(error).split())}"))
                continue
        said = f" ({'; '.join(notes)})" if notes else ""
        checks.append(Check(f"trainer options {stage}", OK,
                            f"accepted by TRL on {device.name}{said}"))
    return checks


@contextmanager
def _notes(logger: str) -> Iterator[list[str]]:
    """What a logger says meanwhile, collected instead of printed (a check's detail)."""
    said: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    target, handler = logging.getLogger(logger), Collect()
    target.addHandler(handler)
    propagate, target.propagate = target.propagate, False
    try:
        yield said
    finally:
        target.removeHandler(handler)
        target.propagate = propagate


def _free_gb(path: Path) -> float:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free / 1e9


def check_disk(params: Params) -> list[Check]:
    """Free disk for the run folder, and for the base model's download when it is not cached."""
    checks = [_disk_check("disk for the run folder", params.layout.run_dir, disk_gb(params))]
    download = base_model_download_gb(params)
    reference = policy_reference(params)
    if download and not _cached(reference):
        from huggingface_hub import constants

        checks.append(_disk_check(f"disk for {reference}", Path(constants.HF_HUB_CACHE),
                                  download))
    return checks


def _disk_check(what: str, path: Path, needed_gb: float) -> Check:
    free = _free_gb(path)
    if free < needed_gb * DISK_MARGIN:
        return Check(what, FAILED, f"{path}: {free:,.1f} GB free but about {needed_gb:,.1f} GB "
                                   "needed (with a 20% margin): free space, or set "
                                   "run.output_dir / HF_HOME to a larger disk")
    return Check(what, OK, f"{path}: {free:,.1f} GB free, about {needed_gb:,.1f} GB needed")


# ------------------------------------------------------------------------------------------
# All of it
# ------------------------------------------------------------------------------------------
CHECKS: tuple[Callable[[Params], list[Check]], ...] = (
    check_keys, check_endpoints, check_models, check_embedding_model, check_files, check_gpu,
    check_trainer_options, check_disk)


def readiness(params: Params) -> list[Check]:
    """Every readiness check of the run, in order."""
    return [check for run_checks in CHECKS for check in run_checks(params)]


def checks_table(checks: Iterable[Check]) -> pd.DataFrame:
    return pd.DataFrame([vars(c) for c in checks], columns=["check", "status", "detail"])


def show(checks: list[Check]) -> None:
    """The checks as a table with every reason in full (no cell cut short)."""
    from IPython.display import display

    from aloe.presentation.tables import text_table

    with pd.option_context("display.max_colwidth", None):
        display(text_table(checks_table(checks), hide_index=True))


def require_ready(checks: list[Check]) -> None:
    """Raise NotReadyError when any check failed: a headline with their count, then one line
    per failed check (`aloe run` prints them so, under the parameter file's name)."""
    failed = [c for c in checks if c.failed]
    if failed:
        raise NotReadyError(f"{len(failed)} of {len(checks)} readiness checks failed; nothing "
                            "was spent; fix them and run again:",
                            [f"{c.check}: {' '.join(c.detail.split())}" for c in failed])


