"""Governance guards: budgets, loop limits, circuit breakers, retries, rate limits, kill switch.

Each guard is a small piece with a frozen policy and an injected clock, and one step of the
guard chain (`corral.guards.step`) in its own module; `corral.guards.chain` composes the steps
around every model call in one visible order. Add your own step with `Guards.add` (an app's
guards are `app.guards`). Guard state that many processes may share sits behind a protocol
beside its guard, with the in-process implementation in `corral.state.memory`.
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
from corral.guards.step import GuardEvent, GuardStep, ModelCall, Next, StepName

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
    "GuardEvent",
    "GuardPolicies",
    "GuardStep",
    "KillSwitch",
    "LimiterPolicy",
    "LoopGuard",
    "LoopPolicy",
    "ModelCall",
    "Next",
    "Priority",
    "RateLimit",
    "RateLimiter",
    "RetryBudget",
    "RetryPolicy",
    "RunBudget",
    "StepName",
]
