"""Frozen policy objects for every guard, with safe defaults that are on without configuration.

Semantics are in docs/governance.md; each field's docstring says what it bounds. Policies
are validated when built (a negative limit is a `ConfigError` naming the field), so a bad one never
reaches a running guard. `corral.config` builds them from `corral.toml`; Python code builds them
directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Literal

from corral.errors import ConfigError
from corral.guards.router import RouterPolicy

__all__ = [
    "PRIORITIES",
    "BreakerPolicy",
    "BudgetPolicy",
    "CachePolicy",
    "DailyLimit",
    "GuardPolicies",
    "LimiterPolicy",
    "LoopPolicy",
    "Priority",
    "RateLimit",
    "RetryPolicy",
]

Priority = Literal["critical", "interactive", "batch"]
PRIORITIES: dict[str, int] = {"critical": 0, "interactive": 1, "batch": 2}
"""Priority classes, most urgent first (the number is the queue level)."""


def _check(obj: Any, prefix: str) -> None:
    """Every numeric field must be >= 0 (None means "no limit")."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float | Decimal) and value < 0:
            raise ConfigError(f"must be >= 0, got {value}", key=f"{prefix}.{f.name}")


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetPolicy:
    """Per-run budget. Every model call reserves its worst case first and is refused when it does
    not fit; past `degrade_at` of the USD limit calls route one tier cheaper."""

    usd: Decimal | None = Decimal("5")
    """Dollars per run (children and parallel calls draw from the same budget)."""
    tokens: int | None = 2_000_000
    """Input + output tokens per run."""
    model_calls: int | None = 500
    """Model calls per run (retries and repairs count)."""
    agent_turns: int | None = None
    """Agent calls per run, as a budget (the run ends `budget_exhausted` with its best result)."""
    degrade_at: float = 0.8
    """Fraction of the USD (or token) budget after which calls use the next cheaper tier."""

    def __post_init__(self) -> None:
        _check(self, "guards.budget")
        if not 0 < self.degrade_at <= 1:
            raise ConfigError(
                f"must be in (0, 1], got {self.degrade_at}", key="guards.budget.degrade_at"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class DailyLimit:
    """A hard limit per UTC day for one scope: a tenant, a user or the whole project."""

    usd: Decimal | None = None
    tokens: int | None = None

    def __post_init__(self) -> None:
        _check(self, "guards.daily")


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopPolicy:
    """Bounds that stop runaway agent loops; every one is on by default."""

    max_turns: int = 200
    """Agent calls per run."""
    max_agent_turns: int = 50
    """Calls of one agent per run."""
    repeat_limit: int = 3
    """Calls of one agent with the same input per run: 3 allows three such calls, and a fourth
    stops the run (like `max_turns`, a number of calls allowed)."""
    ping_pong_cycles: int = 2
    """A cycle of handoffs (length <= `max_cycle`) whose outputs repeat this many times in a row."""
    max_cycle: int = 4
    max_depth: int = 8
    """Nested delegation depth (a call made while another call of the same run is running)."""
    error_streak: int = 5
    """The same error from the same endpoint this many times in a row (across calls and
    retries) fails the call and stops that agent for the rest of the run."""

    def __post_init__(self) -> None:
        _check(self, "guards.loops")
        for name in ("max_turns", "max_agent_turns", "repeat_limit", "max_depth", "error_streak"):
            if getattr(self, name) < 1:
                raise ConfigError("must be >= 1", key=f"guards.loops.{name}")
        if self.ping_pong_cycles < 2:
            raise ConfigError("must be >= 2", key="guards.loops.ping_pong_cycles")


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """Circuit breaker settings (resilience4j semantics, see governance.md)."""

    window: Literal["count", "time"] = "count"
    window_size: int = 20
    """Outcomes (count window) or seconds (time window) the rates are computed over."""
    minimum_calls: int = 10
    """No rate is computed before this many outcomes (count window: min(this, window_size))."""
    failure_rate: float = 0.5
    """Trip when the failure rate is >= this."""
    slow_call_rate: float = 1.0
    """Trip when the share of slow calls is >= this."""
    slow_call_s: float = 60.0
    """A call is slow when it takes strictly longer than this."""
    wait_in_open_s: float = 30.0
    """How long OPEN rejects before letting probes through."""
    wait_multiplier: float = 1.0
    """Each re-opening from HALF_OPEN multiplies the wait (1.5 = grow by half)."""
    max_wait_in_open_s: float = 600.0
    permitted_in_half_open: int = 3
    """Probes admitted in HALF_OPEN; every other concurrent caller is rejected at once."""
    max_wait_in_half_open_s: float = 120.0
    """Probes that have not all reported after this long send the breaker back to OPEN."""
    ignore_status: tuple[int, ...] = (400, 401, 403, 404, 422)
    """Client errors: neither success nor failure (the request was wrong, not the provider)."""
    failure_predicate: Callable[[Any], bool] | None = field(default=None, compare=False)
    """Python only: a returned value for which this is true counts as a failure."""

    def __post_init__(self) -> None:
        _check(self, "guards.breaker")
        for name in ("window_size", "minimum_calls", "permitted_in_half_open"):
            if getattr(self, name) < 1:
                raise ConfigError("must be >= 1", key=f"guards.breaker.{name}")
        for name in ("failure_rate", "slow_call_rate"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError("must be in (0, 1]", key=f"guards.breaker.{name}")
        if self.wait_multiplier < 1:
            raise ConfigError("must be >= 1", key="guards.breaker.wait_multiplier")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Retries of retryable provider errors (429, 5xx, timeouts, connection errors) only."""

    max_attempts: int = 3
    """Attempts per call, the first included."""
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    """Delay before retry n is uniform(0, min(max_delay_s, base_delay_s * 2**n)) (full jitter);
    a provider's Retry-After is a floor."""
    budget_ratio: float = 0.1
    """Retries stay under this share of requests over `budget_window_s` (per process)."""
    budget_window_s: float = 60.0
    budget_min_retries: int = 10
    """Retries always allowed per window, so a quiet process can still retry a blip."""

    def __post_init__(self) -> None:
        _check(self, "guards.retry")
        if self.max_attempts < 1:
            raise ConfigError("must be >= 1", key="guards.retry.max_attempts")


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """Requests and tokens per minute for one key (`model:sim:small`, `provider:sim`, ...)."""

    rpm: int | None = None
    tpm: int | None = None
    burst_s: float = 6.0
    """Bucket depth in seconds of the rate: how much may go at once after a quiet spell."""

    def __post_init__(self) -> None:
        _check(self, "guards.limits")
        if self.burst_s <= 0:
            raise ConfigError("must be > 0", key="guards.limits.burst_s")


@dataclass(frozen=True, slots=True, kw_only=True)
class LimiterPolicy:
    """How callers queue for the rate limiter."""

    max_wait_s: float = 300.0
    """A caller not admitted after this long gets `rate_limited` (the run deadline also bounds)."""
    aging_s: float = 10.0
    """A waiter moves up one priority level per this many seconds waited (no starvation)."""
    adaptive_k: float = 2.0
    """Client-side throttling: defer locally with probability
    max(0, (requests - k * accepts) / (requests + 1)) over `adaptive_window_s`."""
    adaptive_window_s: float = 120.0

    def __post_init__(self) -> None:
        _check(self, "guards.limiter")
        if self.aging_s <= 0:
            raise ConfigError("must be > 0", key="guards.limiter.aging_s")


@dataclass(frozen=True, slots=True, kw_only=True)
class CachePolicy:
    """Exact response caching: an identical request (model, messages, schema, tools,
    temperature, max tokens) within `ttl_s` gets the stored answer at $0. Off by default."""

    enabled: bool = False
    ttl_s: float = 3600.0
    max_temperature: float = 0.0
    """Calls sampled above this temperature are not cached (their answers are meant to vary)."""
    per_tenant: bool = True
    """Each tenant has its own namespace: one tenant never gets another's cached answer."""
    backend: Literal["database", "redis"] = "database"
    """Where answers are kept: the run database, or Redis (shared by many workers)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    semantic_threshold: float = 0.95
    """Semantic cache (agents opt in with `Agent(semantic_cache=True)`): a stored answer of the
    same agent and output schema is reused when its input's embedding has at least this cosine
    similarity to the new input's."""

    def __post_init__(self) -> None:
        _check(self, "guards.cache")
        if self.ttl_s <= 0:
            raise ConfigError("must be > 0", key="guards.cache.ttl_s")
        if not 0 < self.semantic_threshold <= 1:
            raise ConfigError("must be in (0, 1]", key="guards.cache.semantic_threshold")


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardPolicies:
    """Every guard's policy. `GuardPolicies()` is the safe default that is always on."""

    budget: BudgetPolicy = BudgetPolicy()
    loops: LoopPolicy = LoopPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    retry: RetryPolicy = RetryPolicy()
    limiter: LimiterPolicy = LimiterPolicy()
    cache: CachePolicy = CachePolicy()
    router: RouterPolicy = RouterPolicy()
    limits: dict[str, RateLimit] = field(default_factory=dict)
    """Rate limits by key: `model:<name>`, `provider:<name>`, `tenant:<id>` or `tenant:*`."""
    daily: dict[str, DailyLimit] = field(default_factory=dict)
    """Daily hard limits by scope: `tenant:<id>`, `user:<id>`, `tenant:*`, `user:*`, `project`."""
    degrade_order: tuple[str, ...] = ("large", "medium", "small")
    """Tiers from most to least expensive; degrading moves one step right."""
