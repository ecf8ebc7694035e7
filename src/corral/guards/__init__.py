"""Governance guards: budgets, loop limits, circuit breakers, retries, rate limits, kill switch.

Each guard is a small piece with a frozen policy and an injected clock; `corral.guards.chain`
composes them around every model call (see docs/ARCHITECTURE.md, "The call path").
"""

from __future__ import annotations

from corral.guards.breaker import BreakerRegistry, CircuitBreaker
from corral.guards.budget import Cost, DailyLedger, RunBudget
from corral.guards.kill import KillSwitch
from corral.guards.limiter import RateLimiter
from corral.guards.loops import LoopGuard
from corral.guards.policy import (
    PRIORITIES,
    BreakerPolicy,
    BudgetPolicy,
    CachePolicy,
    DailyLimit,
    GuardPolicies,
    LimiterPolicy,
    LoopPolicy,
    Priority,
    RateLimit,
    RetryPolicy,
)
from corral.guards.retry import RetryBudget

__all__ = [
    "PRIORITIES",
    "BreakerPolicy",
    "BreakerRegistry",
    "BudgetPolicy",
    "CachePolicy",
    "CircuitBreaker",
    "Cost",
    "DailyLedger",
    "DailyLimit",
    "GuardPolicies",
    "KillSwitch",
    "LimiterPolicy",
    "LoopGuard",
    "LoopPolicy",
    "Priority",
    "RateLimit",
    "RateLimiter",
    "RetryBudget",
    "RetryPolicy",
    "RunBudget",
]
