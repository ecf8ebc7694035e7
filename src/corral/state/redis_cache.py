"""The response cache in Redis, shared by every worker: `SET key value PX ttl`.

Keys are `corral:cache:<namespace>:<key>`; Redis expires them itself, so the cache needs no
cleanup job. A Redis that cannot be reached makes a lookup a miss and a store a no-op (logged
once per minute): a cache must never fail a run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from corral.secrets import hide_url_password

__all__ = ["RedisCache"]

log = logging.getLogger(__name__)


class RedisCache:
    """A `ResponseCache` in Redis.

    Args:
        url: `redis://host:port/db`.
        prefix: Key prefix (several apps can share one Redis).
        redact: Applied to each answer's JSON text before it is stored (the app passes its
            store's redactor: no loaded secret or key-shaped string is written to Redis).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "corral:cache",
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self._redact = redact
        self._redis = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._prefix = prefix
        self._url = url
        self._warned_at = 0.0
        self.errors = 0
        """Redis failures seen (lookups treated as misses, stores skipped)."""

    def _key(self, namespace: str, key: str) -> str:
        return f"{self._prefix}:{namespace}:{key}"

    def _failed(self, exc: RedisError) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning(
                "response cache at %s unavailable (%s); running without it",
                hide_url_password(self._url),
                exc,
            )

    async def cache_get(self, namespace: str, key: str, now: float) -> dict[str, Any] | None:
        try:
            raw = await self._redis.get(self._key(namespace, key))
        except RedisError as exc:
            self._failed(exc)
            return None
        return None if raw is None else dict(json.loads(raw))

    async def cache_put(
        self, namespace: str, key: str, value: dict[str, Any], *, now: float, ttl_s: float
    ) -> None:
        # Redis keeps its own time: the entry lives `ttl_s` from when Redis stores it.
        text = json.dumps(value, separators=(",", ":"))
        if self._redact is not None:
            text = self._redact(text)
        try:
            await self._redis.set(
                self._key(namespace, key),
                text,
                px=max(1, int(ttl_s * 1000)),
            )
        except RedisError as exc:
            self._failed(exc)

    async def aclose(self) -> None:
        await self._redis.aclose()
