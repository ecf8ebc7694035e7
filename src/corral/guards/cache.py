"""Exact response cache: the same request within its TTL gets the stored answer for $0.

The key is a hash of the normalized request (model, messages with their tool calls, output
schema, tools, temperature, max output tokens), in a namespace per tenant. Only successful
answers are stored, never errors; calls sampled above `max_temperature` are neither looked up nor
stored. Storage sits behind `ResponseCache`; the composition root (`corral._wiring`) is the one
place that picks the backends (the run database in the embedded default, Redis for many
workers, `corral.state.memory.MemoryCache` in one process).

The cache's whole reach: `CacheStep` (the guard chain, per model of the tier's chain: exact,
then semantic) and the app, which picks the backends when it opens.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from decimal import Decimal
from typing import Any, Protocol

from corral.clock import Clock
from corral.guards.policy import CachePolicy
from corral.guards.step import GuardEvent, ModelCall, Next
from corral.model import ModelRequest, ModelResponse

__all__ = ["CacheStep", "ResponseCache", "SemanticCache", "cache_key"]


class ResponseCache(Protocol):
    """Where cached answers live.

    Contract: `cache_put` then `cache_get` of the same (namespace, key) before `ttl_s` has
    passed returns the value; after it, or for another namespace, None. Last write wins; a
    backend that cannot be reached answers None and stores nothing (a cache never fails a
    call). `tests/state/test_cache.py` is the contract, parametrized over backends.
    """

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


_ZERO = Decimal(0)


def _as_cached(original: ModelResponse) -> ModelResponse:
    return replace(
        original, input_tokens=0, output_tokens=0, cost_usd=_ZERO, latency_s=0.0, cached=True
    )


class CacheStep:
    """The guard chain's caches, per model: the exact cache, then the semantic cache (for an
    agent that opted in, on the first turn of a structured call). A hit answers for $0 without
    the steps below; a fresh answer is stored with its price."""

    def __init__(
        self,
        policy: CachePolicy,
        clock: Clock,
        exact: ResponseCache | None,
        semantic: SemanticCache | None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.exact = exact if policy.enabled else None
        self.semantic = semantic

    async def __call__(self, call: ModelCall, next: Next) -> ModelResponse:
        request = call.request
        key = self._key(call, request)
        if key is not None:
            hit = await self._get(call, key)
            if hit is not None:
                return hit
        meaning = self._scope(call, request) if key is not None else None
        if meaning is not None:
            hit = await self._get_similar(call, *meaning)
            if hit is not None:
                return hit
        response = await next(call)
        if key is not None or meaning is not None:
            response = response.with_cost(call.cost)  # cached with its price
        if key is not None:
            assert self.exact is not None
            await self.exact.cache_put(
                *key,
                response.to_dict(),
                now=self.clock.now().timestamp(),
                ttl_s=self.policy.ttl_s,
            )
        if meaning is not None and not response.tool_calls:
            assert self.semantic is not None
            await self.semantic.add(
                *meaning,
                response.to_dict(),
                now=self.clock.now().timestamp(),
                ttl_s=self.policy.ttl_s,
            )
        return response

    def _namespace(self, call: ModelCall) -> str:
        tenant = call.run.tenant if self.policy.per_tenant and call.run.tenant else "*"
        return f"tenant:{tenant}"

    def _key(self, call: ModelCall, request: ModelRequest) -> tuple[str, str] | None:
        if (
            self.exact is None
            or not call.use_cache
            or request.temperature > self.policy.max_temperature
        ):
            return None
        return self._namespace(call), cache_key(request)

    async def _get(self, call: ModelCall, key: tuple[str, str]) -> ModelResponse | None:
        assert self.exact is not None
        found = await self.exact.cache_get(*key, self.clock.now().timestamp())
        if found is None:
            return None
        original = ModelResponse.from_dict(found)
        await call.emit(
            GuardEvent(
                kind="cache_hit",
                detail={
                    "model": original.model,
                    "namespace": key[0],
                    "saved_usd": str(original.cost_usd or 0),
                    "saved_tokens": original.input_tokens + original.output_tokens,
                },
            )
        )
        call.cost = _ZERO
        return _as_cached(original)

    def _scope(
        self, call: ModelCall, request: ModelRequest
    ) -> tuple[tuple[str, str, str], str] | None:
        """(scope, text) when this call may use the semantic cache: the agent opted in, and it
        is the first turn (no tool results yet) of a structured call."""
        if not call.use_semantic or self.semantic is None or request.output_schema is None:
            return None
        if any(m.role in ("tool", "assistant") for m in request.messages):
            return None
        users = [m.content for m in request.messages if m.role == "user"]
        if not users:
            return None
        schema = cache_key(ModelRequest(model="", messages=(), output_schema=request.output_schema))
        return (self._namespace(call), call.agent, schema), users[-1]

    async def _get_similar(
        self, call: ModelCall, scope: tuple[str, str, str], text: str
    ) -> ModelResponse | None:
        assert self.semantic is not None
        found = await self.semantic.lookup(
            scope,
            text,
            now=self.clock.now().timestamp(),
            threshold=self.policy.semantic_threshold,
        )
        if found is None:
            return None
        value, similarity = found
        original = ModelResponse.from_dict(value)
        await call.emit(
            GuardEvent(
                kind="cache_hit",
                detail={
                    "cache": "semantic",
                    "similarity": round(similarity, 4),
                    "threshold": self.policy.semantic_threshold,
                    "saved_usd": str(original.cost_usd or 0),
                },
            )
        )
        call.cost = _ZERO
        return _as_cached(original)
