"""Routing: which tier answers a call.

An agent either declares its tier (`model="medium"`) or says `model="auto"` and lets the router
choose from a complexity score between 0 and 1: the input's length, the output schema's size and
depth, how many tools it may call, and its role. `RouterPolicy.scorer` replaces the built-in score
with your own function. Past the budget's degrade fraction the chosen tier moves one step cheaper.
Every decision the router makes (an `auto` tier, a degrade) is recorded with its reason.

The router's reach: `route` (the agent call picks the tier) and `FallbackStep` (the guard chain
tries the tier's models in order: the primary, then its fallback providers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from corral.errors import CircuitOpenError, ConfigError, ProviderError
from corral.guards.step import GuardEvent, ModelCall, Next
from corral.model import ModelResponse

__all__ = [
    "AUTO",
    "FallbackStep",
    "RouteInput",
    "RouterPolicy",
    "default_scorer",
    "route",
    "schema_shape",
]

AUTO = "auto"
"""The tier name that asks the router to choose."""

_HEAVY_ROLES = frozenset({"planner", "reviewer", "judge", "synthesizer", "supervisor"})


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteInput:
    """What the router knows about a call."""

    agent: str
    role: str | None
    input_tokens: int
    schema_fields: int
    schema_depth: int
    tools: int


def default_scorer(x: RouteInput) -> float:
    """0..1: long inputs, big or nested output schemas, tools and heavy roles score higher."""
    score = 0.45 * min(1.0, x.input_tokens / 3000)
    score += 0.25 * min(1.0, x.schema_fields / 20)
    score += 0.1 * min(1.0, max(0, x.schema_depth - 1) / 3)
    score += 0.1 * min(1.0, x.tools / 4)
    if x.role in _HEAVY_ROLES:
        score += 0.25
    return min(1.0, score)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterPolicy:
    """How `auto` agents are routed: scores below `thresholds[0]` go to `tiers[0]`, below
    `thresholds[1]` to `tiers[1]`, the rest to `tiers[2]`."""

    tiers: tuple[str, str, str] = ("small", "medium", "large")
    thresholds: tuple[float, float] = (0.3, 0.6)
    scorer: Callable[[RouteInput], float] | None = field(default=None, compare=False)
    """Python only: your own complexity score (0..1)."""

    def __post_init__(self) -> None:
        low, high = self.thresholds
        if not 0 <= low <= high <= 1:
            raise ConfigError(
                f"must be two increasing numbers in [0, 1], got {self.thresholds}",
                key="guards.router.thresholds",
            )


def schema_shape(schema: Mapping[str, Any] | None) -> tuple[int, int]:
    """(fields, depth) of a JSON schema: every property anywhere counts as a field."""
    if not schema:
        return 0, 0
    defs = schema.get("$defs", {})

    def walk(node: Any, depth: int, seen: frozenset[str]) -> tuple[int, int]:
        if not isinstance(node, Mapping):
            return 0, depth
        if "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            if name in seen:
                return 0, depth
            return walk(defs.get(name, {}), depth, seen | {name})
        fields_, deepest = 0, depth
        for key in ("anyOf", "oneOf", "allOf"):
            for option in node.get(key, []):
                f, d = walk(option, depth, seen)
                fields_, deepest = fields_ + f, max(deepest, d)
        if "items" in node:
            f, d = walk(node["items"], depth, seen)
            fields_, deepest = fields_ + f, max(deepest, d)
        props = node.get("properties", {})
        if props:
            deepest = max(deepest, depth + 1)
        for sub in props.values():
            f, d = walk(sub, depth + 1, seen)
            fields_, deepest = fields_ + 1 + f, max(deepest, d)
        return fields_, deepest

    return walk(schema, 0, frozenset())


def route(policy: RouterPolicy, tier: str, x: RouteInput) -> tuple[str, dict[str, Any] | None]:
    """The tier for a call and, when the router chose it, the reason to record."""
    if tier != AUTO:
        return tier, None
    score = (policy.scorer or default_scorer)(x)
    low, high = policy.thresholds
    chosen = (
        policy.tiers[0] if score < low else policy.tiers[1] if score < high else policy.tiers[2]
    )
    return chosen, {
        "tier": chosen,
        "score": round(score, 3),
        "because": {
            "input_tokens": x.input_tokens,
            "schema_fields": x.schema_fields,
            "schema_depth": x.schema_depth,
            "tools": x.tools,
            "role": x.role,
            "scorer": "custom" if policy.scorer else "default",
        },
    }


class FallbackStep:
    """The guard chain's fallback: the tier's models in order until one answers. The next model
    is tried when one's breaker is open or its retryable failures outlast its retries; a
    non-retryable failure ends the call (the request is wrong; another provider would refuse it
    too), and so does the failure that stopped the agent (`error_streak`: the agent is stopped for
    the run, not the model)."""

    def __call__(self, call: ModelCall, next: Next) -> Awaitable[ModelResponse]:
        # Not a coroutine when there is nothing to fall back to and the request already names
        # the model (the common case): no coroutine level added to the call.
        if len(call.models) == 1 and call.request.model == call.model.name:
            return next(call)
        return self._in_turn(call, next)

    async def _in_turn(self, call: ModelCall, next: Next) -> ModelResponse:
        asked = call.request
        last: ProviderError | CircuitOpenError | None = None
        for position, model in enumerate(call.models):
            if position > 0:
                await call.emit(
                    GuardEvent(
                        kind="fallback",
                        detail={
                            "from": call.model.name,
                            "to": model.name,
                            "because": last.code if last is not None else "",
                        },
                    )
                )
            call.model = model
            call.request = asked if asked.model == model.name else replace(asked, model=model.name)
            try:
                return await next(call)
            except CircuitOpenError as exc:
                last = exc
            except ProviderError as exc:
                # Not retryable: the request is wrong. Given up: the error streak stopped the
                # agent, so no other model may serve it in this run.
                if not exc.retryable or call.give_up:
                    raise
                last = exc
        assert last is not None  # a chain has at least one model
        raise last
