"""Sentence embeddings and the novelty filter that keeps a persona pool diverse.

A candidate joins a pool only when its highest cosine similarity to the pool (and to the
candidates admitted before it in the same call) is at most the threshold. The released ALOE
code re-encodes the whole pool for every candidate (quadratic in the pool); `NoveltyFilter`
keeps the pool's normalised embeddings and screens a batch of candidates with one encoding each
and one matrix product.

The embedding model (`aloe.stages.embeddings`): the bundled all-MiniLM-L6-v2 by default, or any
sentence-transformers model by name or local folder (`personas.embedding_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from aloe.stages.embeddings import (  # noqa: F401
    DEFAULT_EMBEDDING_MODEL,
    EmbeddingModelError,
    load_embedding_model,
)


@dataclass
class Screening:
    """The decision on one candidate: its highest similarity to the pool, and to what."""

    text: str
    max_similarity: float | None  # None: nothing to compare with (empty pool)
    nearest: int | None  # index into the filter's pool of the most similar item
    admitted: bool
    status: str  # "admitted" | "rejected" | "surplus" (not needed: the limit was reached)


class NoveltyFilter:
    """The pool's normalised embeddings, and a screen that admits only novel candidates.

    `extend(texts)` adds texts unchecked (seeds, imports); `admit(candidates)` returns the
    candidates whose highest cosine similarity to the pool and to the candidates admitted
    before them in the same call is at most `threshold`, and adds them. Cost per call: one
    embedding per candidate and one matrix product against the pool; the pool is never
    re-encoded. The similarities of the last call are kept in `last_screening`.
    """

    def __init__(self, threshold: float = 0.6, model: str = DEFAULT_EMBEDDING_MODEL, *,
                 batch_size: int = 64):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.model_name = model
        self.batch_size = batch_size
        self.model = load_embedding_model(model)
        dimension = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        dim = dimension()
        self.texts: list[str] = []
        self._buffer = np.zeros((64, dim), dtype=np.float32)
        self.last_screening: list[Screening] = []

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def embeddings(self) -> np.ndarray:
        """The pool's unit-length embeddings, one row per text (a view; do not modify)."""
        return self._buffer[:len(self.texts)]

    @property
    def last_similarities(self) -> list[float | None]:
        """The highest similarity of each candidate of the last `admit` call."""
        return [s.max_similarity for s in self.last_screening]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings (float32), one row per text."""
        if not texts:
            return np.zeros((0, self._buffer.shape[1]), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size,
                                    convert_to_numpy=True, normalize_embeddings=True,
                                    show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def _append(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        needed = len(self.texts) + len(texts)
        if needed > len(self._buffer):  # grow geometrically: appends cost O(1) amortised
            grown = np.zeros((max(needed, 2 * len(self._buffer)), self._buffer.shape[1]),
                             dtype=np.float32)
            grown[:len(self.texts)] = self.embeddings
            self._buffer = grown
        self._buffer[len(self.texts):needed] = vectors
        self.texts.extend(texts)

    def extend(self, texts: Sequence[str], vectors: np.ndarray | None = None) -> None:
        """Add texts to the pool without checking them (seeds, imported pools)."""
        texts = list(texts)
        self._append(texts, self.encode(texts) if vectors is None else vectors)

    def copy(self) -> NoveltyFilter:
        """A filter over the same pool (shared model, copied matrix) that grows on its own."""
        other = object.__new__(NoveltyFilter)
        other.__dict__.update(self.__dict__)
        other.texts = list(self.texts)
        other._buffer = self._buffer.copy()
        other.last_screening = []
        return other

    def similarity_to_pool(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each text's highest similarity to the pool and the index of that pool item."""
        vectors = self.encode(texts)
        if not len(self) or not len(vectors):
            return np.full(len(vectors), np.nan), np.full(len(vectors), -1)
        scores = vectors @ self.embeddings.T
        return scores.max(axis=1), scores.argmax(axis=1)

    def screen(self, candidates: Sequence[str], limit: int | None = None) -> list[Screening]:
        """Decide on each candidate in order and add the admitted ones (at most `limit`)."""
        candidates = list(candidates)
        vectors = self.encode(candidates)
        pool_size = len(self)
        if pool_size:
            scores = vectors @ self.embeddings.T
            best, nearest = scores.max(axis=1), scores.argmax(axis=1)
        else:
            best, nearest = np.full(len(candidates), -np.inf), np.full(len(candidates), -1)
        among = vectors @ vectors.T
        admitted: list[int] = []
        decisions = []
        for i, text in enumerate(candidates):
            top, where = float(best[i]), int(nearest[i])
            for rank, j in enumerate(admitted):
                if among[i, j] > top:
                    top, where = float(among[i, j]), pool_size + rank
            similarity = None if top == -np.inf else round(top, 6)
            if top > self.threshold:
                status = "rejected"
            elif limit is not None and len(admitted) >= limit:
                status = "surplus"
            else:
                status = "admitted"
                admitted.append(i)
            decisions.append(Screening(text, similarity, None if where < 0 else where,
                                       status == "admitted", status))
        self._append([candidates[i] for i in admitted], vectors[admitted])
        self.last_screening = decisions
        return decisions

    def admit(self, candidates: Sequence[str], limit: int | None = None) -> list[str]:
        """The novel candidates, in order; they join the pool. See `last_screening`."""
        return [s.text for s in self.screen(candidates, limit) if s.admitted]

    def nearest_neighbour_similarities(self, block: int = 2048) -> np.ndarray:
        """Each pool item's highest similarity to any other pool item (blockwise)."""
        matrix = self.embeddings
        result = np.full(len(matrix), np.nan, dtype=np.float32)
        for start in range(0, len(matrix), block):
            scores = matrix[start:start + block] @ matrix.T
            for offset in range(len(scores)):
                scores[offset, start + offset] = -np.inf
            if len(matrix) > 1:
                result[start:start + block] = scores.max(axis=1)
        return result
