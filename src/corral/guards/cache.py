"""Exact response cache: the same request within its TTL gets the stored answer for $0.

The key is a hash of the normalized request (model, messages with their tool calls, output
schema, tools, temperature, max output tokens), in a namespace per tenant. Only successful
answers are stored, never errors; calls sampled above `max_temperature` are neither looked up nor
stored. Storage sits behind `ResponseCache`: the run database (`SqlStore`) in the embedded
default, a Redis backend for many workers, `MemoryCache` for tests.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

from corral.clock import Clock
from corral.model import ModelRequest

__all__ = ["MemoryCache", "ResponseCache", "SemanticCache", "cache_key"]


class ResponseCache(Protocol):
    """Where cached answers live."""

    async def cache_get(self, namespace: str, key: str, now: float) -> dict[str, Any] | None:
        """The stored answer for `key`, or None if absent or expired (`now`: epoch seconds)."""
        ...

    async def cache_put(
        self, namespace: str, key: str, value: dict[str, Any], *, now: float, ttl_s: float
    ) -> None:
        """Store an answer for `ttl_s` seconds from `now` (epoch seconds, the app's clock)."""
        ...


class SemanticCache(Protocol):
    """Answers found by meaning: same agent, same output schema, a similar enough input."""

    async def lookup(
        self, scope: tuple[str, str, str], text: str, *, now: float, threshold: float
    ) -> tuple[dict[str, Any], float] | None:
        """The stored answer whose input is most similar to `text` (and the similarity), if it
        reaches `threshold`. `scope` is (namespace, agent, schema key)."""
        ...

    async def add(
        self,
        scope: tuple[str, str, str],
        text: str,
        value: dict[str, Any],
        *,
        now: float,
        ttl_s: float,
    ) -> None:
        """Remember `value` as the answer to `text` in `scope`."""
        ...


def cache_key(request: ModelRequest) -> str:
    """The hash of everything that determines a model's answer."""
    body = {
        "model": request.model,
        "messages": [
            [
                m.role,
                m.content,
                m.tool_call_id,
                [[c.name, c.arguments] for c in m.tool_calls],
            ]
            for m in request.messages
        ],
        "schema": request.output_schema,
        "tools": [[t.name, t.parameters] for t in request.tools],
        "temperature": request.temperature,
        "max_output_tokens": request.max_output_tokens,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class MemoryCache:
    """An in-process cache (tests, single short-lived processes)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    async def cache_get(self, namespace: str, key: str, now: float) -> dict[str, Any] | None:
        found = self._entries.get((namespace, key))
        if found is None or found[0] <= now:
            return None
        return found[1]

    async def cache_put(
        self, namespace: str, key: str, value: dict[str, Any], *, now: float, ttl_s: float
    ) -> None:
        self._entries[(namespace, key)] = (now + ttl_s, value)
