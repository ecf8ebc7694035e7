"""The guard chain around one model call (docs/ARCHITECTURE.md, "The call path").

Each guard is one step, an interceptor with `next` (`corral.guards.step`), living in its
guard's module. `Guards.chain` composes them in this order, outermost first:

    redact         redact.RedactStep         loaded secrets in the messages become [REDACTED]
    agent_breaker  breaker.AgentBreakerStep  the agent's breaker judges the agent call as a whole
    fallback       router.FallbackStep       the tier's models in order: primary, then fallbacks
    cache          cache.CacheStep           exact, then semantic (only when a cache is set)
    retry          retry.RetryStep           retryable errors, full-jitter backoff, retry budget
    kill_switch    kill.KillSwitchStep       each attempt: raise if halted, wait while paused
    error_streak   loops.ErrorStreakStep     the same error N times in a row stops the agent
    budget         budget.BudgetStep         reserve the worst case; pause on a daily limit
    breaker        breaker.BreakerStep       the provider's and the model's breakers
    limiter        limiter.LimiterStep       RPM/TPM by priority (only when limits are set)
    (your steps)                             `Guards.add(step, before=...)`; default: here
    provider       ProviderStep (below)      the call, under the kill switch and a timeout

Why not ARCHITECTURE's order (kill switch, loop guard, budget, breaker, cache, limiter, retry,
router, provider): that order reads as "once per agent call", but Corral's guards act per
concrete model and per attempt. The budget prices the model being called, breakers and limits
are per model and provider, and the cache key names the model, so those sit inside `fallback`;
a retry must pass the kill switch, the error-streak check, the budget, the breakers and the
limiter again, so those sit inside `retry`. The agent's breaker and (per run, in the run
context) the loop guard's turn checks are what judge the agent call as a whole.

Every decision is a `GuardEvent` handed to `ModelCall.emit`, which the agent call records as a
`guard` span under the model call. Refusals (`BudgetExhaustedError`, `KilledError`,
`LoopDetectedError`, `RateLimitedError`) are raised as they are and end the run unless the
workflow catches them. A model that cannot answer raises the last `ProviderError` or
`CircuitOpenError`; the agent call turns that into an `AgentError` so the agent's fallback agent
gets its turn.

Call-site contract (what the agent call does):

    call = ModelCall(run_guards, agent.name, timeout_s, emit, agent.cache, agent.semantic_cache)
    response = await call.call(models, request)   # models: the tier's chain, unpriced
    cost = call.cost                               # what `response` cost (USD)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Iterable
from decimal import Decimal
from typing import Protocol

from corral.clock import Clock
from corral.contracts import RunId
from corral.errors import ProviderTimeoutError, UsageError
from corral.guards.breaker import AgentBreakerStep, BreakerRegistry, BreakerStep
from corral.guards.budget import (
    BudgetStep,
    DailyLedger,
    InputRatios,
    RunAccounts,
    RunBudget,
    memory_run_accounts,
)
from corral.guards.cache import CacheStep, ResponseCache, SemanticCache
from corral.guards.kill import KillSwitch, KillSwitchStep
from corral.guards.limiter import LimiterStep, RateLimiter
from corral.guards.loops import ErrorStreakStep, LoopGuard
from corral.guards.policy import PRIORITIES, GuardPolicies
from corral.guards.redact import RedactStep
from corral.guards.retry import RetryBudget, RetryStep
from corral.guards.router import FallbackStep
from corral.guards.step import (
    STEP_NAMES,
    Alarm,
    GuardEvent,
    GuardStep,
    ModelCall,
    Next,
    StepName,
    estimate_input_tokens,
)
from corral.model import UNPRICED, ModelResponse, Pricer

__all__ = [
    "Attempts",
    "GuardEvent",
    "GuardStep",
    "Guards",
    "ModelCall",
    "ProviderStep",
    "RunGuards",
    "estimate_input_tokens",
]


class Attempts(Protocol):
    """Where a durable run records a model call before sending it (its journal), so a call
    answered but lost in a crash is counted when the run resumes."""

    async def attempt(self, step_id: str, model: str, usd: Decimal, tokens: int) -> None:
        """Record (durably) that step `step_id` sends a call to `model` holding `usd`, `tokens`."""
        ...


class ProviderStep:
    """The end of the chain: the provider's call, which a halt of the run or agent cancels and
    `ModelCall.timeout_s` bounds, priced by the app's `Pricer`.

    The model is the provider itself (the app hands the chain unpriced models), so a call
    builds one response object; its price is `ModelCall.cost`.
    """

    def __init__(self, kill: KillSwitch, clock: Clock, pricer: Pricer) -> None:
        self.kill = kill
        self.clock = clock
        self.pricer = pricer

    async def __call__(self, call: ModelCall) -> ModelResponse:
        kill, model, run_id = self.kill, call.model, call.run.run_id
        if kill.engaged:  # halted while it queued
            kill.check(run_id, call.agent)
        journal = call.run.attempts
        if journal is not None:  # durable: recorded before it is sent, in case we crash
            await journal.attempt(call.request.metadata.get("step_id", ""), model.name, *call.held)
        call.sent_at = self.clock.monotonic()
        # The watch is the call's timeout and its halt switch in one object (one loop timer).
        watch = kill.watch(run_id, call.agent, call.timeout_s)
        try:
            try:
                response = await model.complete(call.request)
            except asyncio.CancelledError:
                kill.stopped(watch)
                raise
            finally:
                kill.unwatch(watch)
        except TimeoutError:
            raise ProviderTimeoutError(
                f"model {model.name} did not answer within {call.timeout_s:g}s",
                provider=model.name.split(":", 1)[0],
                timeout_s=call.timeout_s,
            ) from None
        call.cost = self.pricer.price(model.name, response)
        return response


class _Link:
    """One step bound to the rest of the chain: `next` for the step above it."""

    __slots__ = ("next", "step")

    def __init__(self, step: GuardStep, next: Next) -> None:
        self.step = step
        self.next = next

    def __call__(self, call: ModelCall) -> Awaitable[ModelResponse]:
        return self.step(call, self.next)


class Guards:
    """The app's guards: their shared state and the chain that applies them to model calls.

    Args:
        policies: Every guard's policy.
        clock: All guard time.
        seed: Seeds retry jitter and adaptive throttling (deterministic tests).
        tiers: The app's tier names (degrading skips tiers it does not define).
        pricer: Prices model calls (default: what providers report, nothing reserved).
        run_accounts: Where runs' budget accounts live (default: in this process).
    """

    def __init__(
        self,
        policies: GuardPolicies,
        clock: Clock,
        *,
        seed: int = 0,
        tiers: Iterable[str] = ("small", "medium", "large"),
        pricer: Pricer = UNPRICED,
        run_accounts: RunAccounts | None = None,
    ) -> None:
        self.policies = policies
        self.run_accounts = run_accounts or memory_run_accounts()
        self.tiers = frozenset(tiers)
        self.clock = clock
        self.pricer = pricer
        self.breakers = BreakerRegistry(policies.breaker, clock)
        self.limiter = RateLimiter(policies.limits, policies.limiter, clock, seed=seed)
        self.retry_budget = RetryBudget(policies.retry, clock)
        self.kill = KillSwitch(clock)
        self.daily = DailyLedger(policies.daily, clock)
        self.input_ratios = InputRatios()
        """What each model counts as input against the estimate, learned from its answers."""
        self.rng = random.Random(seed)
        self._cache: ResponseCache | None = None
        self._semantic: SemanticCache | None = None
        self._custom: list[tuple[StepName, GuardStep]] = []
        self._chain: Next | None = None
        self.alarm: Alarm | None = None
        """Where guards' alerts (an agent stopped by an error streak) are stored and sent; set
        by the app while it is open and alerts are on (None: the log and the span only)."""

    # -- the chain ------------------------------------------------------------------------------

    def add(self, step: GuardStep, *, before: StepName = "provider") -> None:
        """Add your own step to every model call, just above the built-in step `before`.

        Steps added with the same `before` run in the order they were added. See
        `corral.guards.step` for an example.

        Raises:
            UsageError: `before` names no built-in step.
        """
        if before not in STEP_NAMES:
            raise UsageError(f"unknown guard step {before!r}; use one of {list(STEP_NAMES)}")
        self._custom.append((before, step))
        self._chain = None

    def steps(self) -> list[tuple[str, GuardStep | ProviderStep]]:
        """The chain's steps by name, outermost first (the provider last)."""
        p, clock = self.policies, self.clock
        builtin: list[tuple[StepName, GuardStep | None]] = [
            ("redact", RedactStep()),
            ("agent_breaker", AgentBreakerStep(self.breakers, clock)),
            ("fallback", FallbackStep()),
            (
                "cache",
                CacheStep(p.cache, clock, self._cache, self._semantic)
                if (p.cache.enabled and self._cache is not None) or self._semantic is not None
                else None,  # no cache configured: not in the chain
            ),
            ("retry", RetryStep(self.retry_budget, clock, self.rng)),
            ("kill_switch", KillSwitchStep(self.kill)),
            ("error_streak", ErrorStreakStep(p.loops, lambda: self.alarm)),
            ("budget", BudgetStep(self.daily, self.pricer, self.input_ratios)),
            ("breaker", BreakerStep(self.breakers, clock)),
            # No limits configured: not in the chain.
            ("limiter", LimiterStep(self.limiter, clock) if p.limits else None),
        ]
        chain: list[tuple[str, GuardStep | ProviderStep]] = []
        for name, found in builtin:
            chain.extend((f"custom:{type(s).__name__}", s) for b, s in self._custom if b == name)
            if found is not None:
                chain.append((name, found))
        chain.extend((f"custom:{type(s).__name__}", s) for b, s in self._custom if b == "provider")
        chain.append(("provider", ProviderStep(self.kill, clock, self.pricer)))
        return chain

    @property
    def chain(self) -> Next:
        """The composed chain (built on first use, again after `add` or a cache change)."""
        chain = self._chain
        if chain is None:
            chain = self._chain = self._compose()
        return chain

    def _compose(self) -> Next:
        steps = self.steps()
        provider = steps[-1][1]
        assert isinstance(provider, ProviderStep)
        chain: Next = provider
        for _, step in reversed(steps[:-1]):
            assert not isinstance(step, ProviderStep)
            chain = _Link(step, chain)
        return chain

    @property
    def cache(self) -> ResponseCache | None:
        """Where exact-cached answers live; set by the app when `policies.cache.enabled`."""
        return self._cache

    @cache.setter
    def cache(self, cache: ResponseCache | None) -> None:
        self._cache = cache
        self._chain = None

    @property
    def semantic(self) -> SemanticCache | None:
        """The semantic cache; set by the app when `policies.cache.enabled`."""
        return self._semantic

    @semantic.setter
    def semantic(self, semantic: SemanticCache | None) -> None:
        self._semantic = semantic
        self._chain = None

    # -- runs -----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the guards' own tasks (the rate limiter's admission timer)."""
        await self.limiter.close()

    def run(
        self, run_id: RunId, *, priority: str, tenant: str | None, user: str | None
    ) -> RunGuards:
        """Fresh per-run state (budget, loop guard) for a run."""
        return RunGuards(self, run_id=run_id, priority=priority, tenant=tenant, user=user)

    def cheaper_tier(self, tier: str) -> str | None:
        """The next cheaper tier in `degrade_order` that this app defines, or None."""
        order = [t for t in self.policies.degrade_order if t in self.tiers or t == tier]
        if tier not in order:
            return None
        i = order.index(tier)
        return order[i + 1] if i + 1 < len(order) else None


class RunGuards:
    """One run's budget and loop guard, plus who it is for (daily limits, priority)."""

    def __init__(
        self,
        guards: Guards,
        *,
        run_id: RunId,
        priority: str,
        tenant: str | None,
        user: str | None,
    ) -> None:
        if priority not in PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}; use one of {list(PRIORITIES)}")
        self.guards = guards
        self.run_id = run_id
        self.priority = priority
        self.level = PRIORITIES[priority]
        self.tenant = tenant
        self.user = user
        self.budget = RunBudget(guards.policies.budget, run_id, guards.run_accounts)
        self.attempts: Attempts | None = None
        """A durable run's journal: model calls are recorded there before they are sent."""
        self.loops = LoopGuard(guards.policies.loops)
