"""The policy: the model that is trained and evaluated, where it runs, and how it answers.

Shared by training (stages 3-4) and evaluation (stage 5), so that both resolve the same base
model, run on the same device in the same precision, and generate replies the same way:

- `detect_device`: CUDA (bfloat16 where supported, else float16) or CPU (float32), and
  whether `accelerate launch` started FSDP.
- `base_model`: the model a stage trains (`sft.base_model` / `dpo.base_model`, a Hugging
  Face id or a folder), else the local model (the embedded SmolLM2-135M-Instruct by default);
  `check_model_reference` refuses a missing folder or an uncached id when offline.
- Responders write the next assistant reply of many conversations at once: in-process
  (`InProcessResponder`: a Hugging Face model plus an optional PEFT adapter, batched), or an
  OpenAI-compatible endpoint (`EndpointResponder`, through the shared client).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aloe.core.chat import Message
from aloe.core.config import EvalModelSpec, Params, RoleConfig, resolve_path
from aloe.core.errors import AloeError, ParamsError
from aloe.core.layout import ADAPTER_CONFIG, ADAPTER_STAGES, ADAPTER_STATS, ADAPTER_WEIGHTS

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
RUN_ADAPTERS = ADAPTER_STAGES  # adapter names that mean this run's folders (sft, dpo, grpo)
# The notebook number of each stage, for "run stage N" hints (DPO and GRPO are both stage 4).
STAGE_NUMBERS = {"sft": 3, "dpo": 4, "grpo": 4}
# A fully fine-tuned model's weights (`method: full`), as transformers saves them: one file,
# or an index naming its shards.
FULL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
POLICY_ROLE = "policy"  # the ledger's name for a model under test behind an endpoint


class PolicyError(AloeError):
    """A model under test cannot be loaded (a missing adapter); the message names it."""


# ------------------------------------------------------------------------------------------
# Device and precision
# ------------------------------------------------------------------------------------------
@dataclass
class Device:
    """Where the policy runs and in which precision."""

    kind: str  # "cuda" or "cpu"
    name: str
    compute_dtype: Any  # torch dtype of the 4-bit matmuls and the LoRA compute
    fsdp: bool = False  # launched by `accelerate launch` with an FSDP config
    local_rank: int = 0

    @property
    def bf16(self) -> bool:
        import torch

        return self.kind == "cuda" and self.compute_dtype == torch.bfloat16

    @property
    def fp16(self) -> bool:
        import torch

        return self.kind == "cuda" and self.compute_dtype == torch.float16


def nf4_config(device: Device) -> Any:
    """4-bit NF4 with double quantisation, computing in the device's dtype: how QLoRA loads the
    base it trains on, and how `evaluation.adapter_base: as_trained` loads it to evaluate.
    Under FSDP the packed weights are stored in the compute dtype so that FSDP can shard them
    like any other parameter."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=device.compute_dtype,
        bnb_4bit_quant_storage=device.compute_dtype if device.fsdp else torch.uint8)


def detect_device() -> Device:
    import torch

    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return Device("cuda", torch.cuda.get_device_name(local_rank), dtype, fsdp, local_rank)
    return Device("cpu", "cpu", torch.float32, False, 0)


# ------------------------------------------------------------------------------------------
# Which model
# ------------------------------------------------------------------------------------------
def base_model(params: Params, stage: str = "sft") -> str:
    """The model that is trained and evaluated: `sft.base_model` / `dpo.base_model` (a Hugging
    Face id or path) when set, else the local model (the embedded one by default)."""
    from aloe.core.local_model import local_model_path

    configured = getattr(params, stage).base_model
    return configured if configured else str(local_model_path(params))


def looks_like_path(reference: str) -> bool:
    return reference.startswith(("/", ".", "~")) or resolve_path(reference).is_dir()


def check_model_reference(reference: str, key: str) -> None:
    """A local model folder must exist; a hub id must be cached when the hub is offline."""
    if looks_like_path(reference):
        folder = resolve_path(reference)
        if not folder.is_dir():
            raise ParamsError(f"{key}: model folder not found: {reference}")
        if not (folder / "config.json").exists():
            raise ParamsError(f"{key}: {reference} is not a model folder (no config.json)")
        return
    if not HUB_ID.match(reference):
        raise ParamsError(f"{key}: {reference!r} is neither an existing folder nor a Hugging "
                          "Face model id (owner/name)")
    from huggingface_hub import try_to_load_from_cache

    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "") not in ("", "0", "false", "False")
    if offline and not isinstance(try_to_load_from_cache(reference, "config.json"), str):
        raise ParamsError(f"{key}: {reference!r} is not in the local Hugging Face cache and "
                          "HF_HUB_OFFLINE is set: download it first (hf download "
                          f"{reference}) or unset HF_HUB_OFFLINE")


_SIZE_IN_NAME = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)


def parameter_count(reference: str) -> int | None:
    """How many parameters a model has, found offline: from the safetensors headers of a local
    folder or of a cached hub snapshot, else from the size in its name ("Llama-3-8B", "135M");
    None when nothing says. Plans and readiness checks size GPU time and memory by it."""
    folder: Path | None = None
    if looks_like_path(reference):
        folder = resolve_path(reference)
    elif HUB_ID.match(reference):
        from huggingface_hub import try_to_load_from_cache

        for name in ("model.safetensors.index.json", "model.safetensors"):
            cached = try_to_load_from_cache(reference, name)
            if isinstance(cached, str):
                folder = Path(cached).parent
                break
    counted = _safetensors_parameters(folder) if folder is not None else None
    if counted:
        return counted
    match = _SIZE_IN_NAME.search(Path(reference).name)
    if match is None:
        return None
    return int(float(match[1]) * (1e9 if match[2].lower() == "b" else 1e6))


def _safetensors_parameters(folder: Path) -> int | None:
    """The sum of the tensor sizes named in the headers of a folder's safetensors files."""
    import json
    import math
    import struct

    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        total += sum(math.prod(entry["shape"]) for name, entry in header.items()
                     if name != "__metadata__")
    return total or None


def same_model(a: str, b: str) -> bool:
    """Whether two references name the same model (equal ids, or the same folder)."""
    if a == b:
        return True
    if looks_like_path(a) and looks_like_path(b):
        return resolve_path(a).resolve() == resolve_path(b).resolve()
    return False


# ------------------------------------------------------------------------------------------
# Models under test
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """A model's reply, and whether it stopped at the token limit rather than on its own.
    `raw` is the whole text where `text` was extracted from it (`ExtractingResponder`), and
    `extracted` whether the pattern found the reply in it."""

    text: str
    truncated: bool = False
    raw: str | None = None
    extracted: bool | None = None


class Responder(Protocol):
    """Writes the next assistant reply of many conversations at once."""

    def reply_many(self, histories: Sequence[Sequence[Message]]) -> list[Reply | BaseException]:
        ...

    def close(self) -> None: ...


class InProcessResponder:
    """A Hugging Face causal LM (plus an optional PEFT adapter) answering in batches.

    All conversations of a turn go through `generate` together, `batch_size` at a time, sorted
    by length so that a batch holds prompts of similar length; each conversation is rendered by
    the tokenizer's own chat template, and prompts are padded on the left so that every row's
    reply starts right after its own last token.
    """

    def __init__(self, model: str, adapter: str | Path | None = None, *, batch_size: int = 16,
                 max_new_tokens: int = 96, temperature: float | None = 0.7, seed: int = 0,
                 load_in_4bit: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = detect_device()
        self.device, dtype = device.kind, device.compute_dtype
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        quantized = {"quantization_config": nf4_config(device)} if load_in_4bit else {}
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype,
                                                          device_map=self.device, **quantized)
        if adapter is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter))
        self.model.eval()
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.temperature, self.seed = temperature, seed
        self._torch = torch

    def prompts(self, histories: Sequence[Sequence[Message]]) -> list[str]:
        return [self.tokenizer.apply_chat_template(list(h), tokenize=False,
                                                   add_generation_prompt=True) for h in histories]

    def _sampling(self) -> dict[str, Any]:
        if self.temperature is None:  # the model's own generation config (as released)
            return {}
        if self.temperature <= 0:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature}

    def _stopped(self) -> set[int]:
        """The token ids that end a reply (the model's end-of-sequence ids)."""
        ids = self.model.generation_config.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        return {int(i) for i in ids if i is not None} | {int(self.tokenizer.eos_token_id)}

    def reply_many(self, histories: Sequence[Sequence[Message]], *,
                   batch_size: int | None = None) -> list[Reply | BaseException]:
        texts = self.prompts(histories)
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False).input_ids]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        size = batch_size or self.batch_size
        stop = self._stopped()
        replies: list[Reply | BaseException] = [Reply("")] * len(texts)
        self._torch.manual_seed(self.seed)
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            batch = self.tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True,
                                   add_special_tokens=False).to(self.device)
            with self._torch.inference_mode():
                output = self.model.generate(**batch, max_new_tokens=self.max_new_tokens,
                                             pad_token_id=self.tokenizer.pad_token_id,
                                             **self._sampling())
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            texts_out = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for i, text, tokens in zip(rows, texts_out, new_tokens.tolist()):
                ended = any(token in stop for token in tokens)
                replies[i] = Reply(text.strip(),
                                   truncated=not ended and len(tokens) >= self.max_new_tokens)
        return replies

    def close(self) -> None:
        del self.model
        gc.collect()
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


def endpoint_role(params: Params, spec: EvalModelSpec) -> RoleConfig:
    """A model under test behind an endpoint, as an LLM role: the evaluation's sampling, and
    its batch size as the concurrency."""
    e = params.evaluation
    model = spec.model or ("local" if spec.base_url == "local" else None)
    if model is None:
        raise PolicyError(f"evaluation model '{spec.name}': an endpoint needs `model` "
                          "(the name the server knows it by)")
    return RoleConfig(model=model, base_url=spec.base_url or "local",
                      api_key_env=spec.api_key_env, temperature=e.temperature,
                      max_tokens=e.max_new_tokens, concurrency=e.batch_size,
                      timeout=spec.timeout, max_retries=spec.max_retries)


class EndpointResponder:
    """A model behind an OpenAI-compatible endpoint, through the shared client (cache, retries,
    bounded concurrency, usage ledger under its own stage name `evaluate-NAME`)."""

    def __init__(self, params: Params, spec: EvalModelSpec):
        from aloe.llm import LLM  # the client only when a policy is served: training
        from aloe.llm.budget import Budget
        from aloe.llm.server import ensure_local_server  # and gpu_check need none of it

        self.llm = LLM({POLICY_ROLE: endpoint_role(params, spec)},
                       stage=f"evaluate-{spec.name}", layout=params.layout,
                       seed=params.run.seed, local_server=lambda: ensure_local_server(params),
                       budget=Budget.for_run(params))

    def reply_many(self, histories: Sequence[Sequence[Message]]) -> list[Reply | BaseException]:
        results = self.llm.run(self.llm.chat_many(POLICY_ROLE, [list(h) for h in histories]))
        return [r if isinstance(r, BaseException)
                else Reply(r.text.strip(), truncated=r.finish_reason == "length")
                for r in results]

    def close(self) -> None:
        self.llm.save_ledger()
        self.llm.cache.close()


class ExtractingResponder:
    """A model under test with its own system prompt and a response extractor, as a model
    trained to answer in a format (RLPA's policy writes <profile>...</profile><response>...
    </response>): it is shown its system prompt first, and the user and the judge see only the
    part of its answer that `pattern` (one group) finds; the whole answer is kept as `raw`."""

    def __init__(self, inner: Responder, system_prompt: str | None, pattern: str | None):
        self.inner, self.system_prompt = inner, system_prompt
        self.pattern = re.compile(pattern, re.DOTALL) if pattern else None

    def reply_many(self, histories: Sequence[Sequence[Message]]) -> list[Reply | BaseException]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        replies = self.inner.reply_many([system + list(h) for h in histories])
        return [r if isinstance(r, BaseException) else self.extract(r) for r in replies]

    def extract(self, reply: Reply) -> Reply:
        if self.pattern is None:
            return reply
        found = self.pattern.search(reply.text)
        text = found.group(1).strip() if found else reply.text
        return Reply(text, reply.truncated, raw=reply.text, extracted=found is not None)

    def close(self) -> None:
        self.inner.close()


def trained_in_full(params: Params, adapter: str | None) -> bool:
    """Whether `adapter` names this run's stage that trained every weight (`method: full`):
    its folder holds a whole model, loaded as the model under test, with no adapter."""
    return adapter in RUN_ADAPTERS and getattr(params, str(adapter)).method == "full"


def full_model_path(params: Params, stage: str) -> Path:
    """A fully fine-tuned stage's model folder; raises naming it when it is missing, has no
    weights, or its weights changed since training."""
    path = params.layout.adapter(stage)
    number = STAGE_NUMBERS[stage]
    if not (path / "config.json").exists():
        raise PolicyError(f"{stage}: no fully fine-tuned model at {path} (no config.json); run "
                          f"stage {number} ({stage}) first")
    verify_adapter_weights(path, f"delete the folder and run stage {number} ({stage}) again")
    return path


def adapter_path(params: Params, spec: EvalModelSpec) -> Path | None:
    """The adapter folder of an in-process model; raises naming the folder when it is missing,
    has no weights, or its weights changed since training. A stage trained in full has no
    adapter: its folder is checked here and loaded as the model (`spec_model`)."""
    if not spec.adapter:
        return None
    if trained_in_full(params, spec.adapter):
        full_model_path(params, spec.adapter)
        return None
    if spec.adapter in RUN_ADAPTERS:
        path = params.layout.adapter(spec.adapter)
        stage = STAGE_NUMBERS[spec.adapter]
        hint = (f"run stage {stage} ({spec.adapter}) first, or remove model '{spec.name}' "
                "from evaluation.models")
        redo = f"delete the folder and run stage {stage} ({spec.adapter}) again"
    else:
        path, hint = resolve_path(spec.adapter), "check evaluation.models"
        redo = "check the adapter's folder"
    if not (path / ADAPTER_CONFIG).exists():
        raise PolicyError(f"model '{spec.name}': no PEFT adapter at {path} "
                          f"(no {ADAPTER_CONFIG}); {hint}")
    verify_adapter_weights(path, redo)
    return path


# ------------------------------------------------------------------------------------------
# Adapter weights: present, and the ones training wrote
# ------------------------------------------------------------------------------------------
def adapter_weights(folder: Path) -> Path | None:
    """The weights file of a PEFT adapter folder, or of a fully fine-tuned model's (its
    single file or its shards' index); None: it has none."""
    names = (*ADAPTER_WEIGHTS, *FULL_WEIGHTS)
    return next((folder / name for name in names if (folder / name).is_file()), None)


def _weight_files(weights: Path) -> list[Path]:
    """The files a weights record covers: the file itself, or an index and its shards."""
    if not weights.name.endswith(".index.json"):
        return [weights]
    shards = sorted(set(json.loads(weights.read_text()).get("weight_map", {}).values()))
    return [weights, *(weights.parent / shard for shard in shards)]


def file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(weights: Path) -> str:
    """The checksum of a weights file, or of an index and every shard it names, in order."""
    files = _weight_files(weights)
    if len(files) == 1:
        return file_sha256(weights)
    return hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest()


def weights_record(folder: Path) -> dict[str, Any]:
    """What training records of an adapter's weights (in training_stats.json), so that a
    missing or changed file is caught before PEFT loads it (or asks the hub for it)."""
    weights = adapter_weights(folder)
    if weights is None:
        raise PolicyError(f"{folder}: training wrote no weights ({ADAPTER_WEIGHTS[0]} or "
                          f"{FULL_WEIGHTS[0]})")
    size = sum(f.stat().st_size for f in _weight_files(weights))
    return {"file": weights.name, "bytes": size, "sha256": weights_sha256(weights)}


def verify_adapter_weights(folder: Path, redo: str) -> None:
    """Raise PolicyError naming the folder (and `redo`, what to do) when the adapter's weights
    are missing, or differ from the checksum training recorded (adapters trained before the
    checksum was recorded are only checked for presence)."""
    weights = adapter_weights(folder)
    if weights is None:
        raise PolicyError(f"{folder}: the adapter has no weights file ({ADAPTER_WEIGHTS[0]}): "
                          f"it is unfinished or damaged; {redo}")
    stats = folder / ADAPTER_STATS
    recorded = _recorded_weights(stats)
    if recorded and (recorded.get("file") != weights.name
                     or recorded.get("sha256") != weights_sha256(weights)):
        raise PolicyError(f"{weights}: the adapter's weights changed since training (their "
                          f"sha256 differs from the one in {ADAPTER_STATS}); restore them, or "
                          f"{redo}")


def _recorded_weights(stats: Path) -> dict[str, Any] | None:
    try:
        return json.loads(stats.read_text()).get("adapter_weights")
    except (OSError, ValueError, AttributeError):
        return None


def spec_model(params: Params, spec: EvalModelSpec) -> str:
    """The model an in-process spec loads: a stage trained in full (its folder), else its
    own `model`, else the training base model."""
    if trained_in_full(params, spec.adapter):
        return str(full_model_path(params, str(spec.adapter)))
    if spec.model:
        local = resolve_path(spec.model)
        return str(local) if local.exists() else spec.model
    return base_model(params, _trained_by(spec))


def evaluated_in_4bit(params: Params, spec: EvalModelSpec) -> bool:
    """Whether an in-process model is loaded on a 4-bit NF4 base: with
    `evaluation.adapter_base: as_trained`, as its training stage loaded the base (DPO's for
    the dpo adapter, GRPO's for grpo, SFT's for every other model, the base itself included,
    so that base and adapters differ by the adapter alone)."""
    if params.evaluation.adapter_base != "as_trained":
        return False
    return getattr(params, _trained_by(spec)).load_in_4bit


def _trained_by(spec: EvalModelSpec) -> str:
    """The training stage whose settings an in-process model takes: its own run adapter's
    (dpo, grpo), SFT's for every other model (the base itself included)."""
    return str(spec.adapter) if spec.adapter in RUN_ADAPTERS else "sft"


def open_responder(params: Params, spec: EvalModelSpec) -> Responder:
    """The model under test `spec` names, with its system prompt and response extractor
    where it has them."""
    e = params.evaluation
    responder: Responder
    if spec.base_url:
        responder = EndpointResponder(params, spec)
    else:
        seed = int(hashlib.sha256(f"{params.run.seed}:{spec.name}".encode()).hexdigest()[:8], 16)
        responder = InProcessResponder(spec_model(params, spec), adapter_path(params, spec),
                                       batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
                                       temperature=e.temperature, seed=seed,
                                       load_in_4bit=evaluated_in_4bit(params, spec))
    if spec.system_prompt or spec.response_pattern:
        return ExtractingResponder(responder, spec.system_prompt, spec.response_pattern)
    return responder
