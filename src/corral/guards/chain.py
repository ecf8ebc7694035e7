"""The guard chain around one model call (docs/ARCHITECTURE.md, "The call path").

Order, outermost first: kill switch -> budget (reserve the worst case; pause on a daily limit) ->
circuit breakers (agent, provider, model) -> rate limiter (queue by priority) -> the provider,
under the kill switch and a timeout -> reconcile budget and limiter with the real usage. Around
that, per model in the tier's chain: retries of retryable errors with full-jitter backoff and the
process's retry budget; when a model's breaker is open or its retries are spent, the next model in
the chain (the fallback provider) is tried.

Every decision is a `GuardEvent` handed to `emit`, which the agent call records as a `guard` span
under the model call, so `corral show` displays it. Loop checks (turns, repeats, ping-pong, depth)
happen per agent call in `RunContext.call`; the error-streak check happens here, per attempt.

Refusals (`BudgetExhaustedError`, `KilledError`, `LoopDetectedError`, `RateLimitedError`) are
raised as they are and end the run unless the workflow catches them. A model that cannot answer
(retries exhausted on every model, or every breaker open) raises the last `ProviderError` or
`CircuitOpenError`; the agent call turns that into an `AgentError` so the agent's fallback agent
gets its turn.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol, cast

from corral.clock import Clock
from corral.errors import (
    BudgetExhaustedError,
    CircuitOpenError,
    ProviderError,
    ProviderRateLimitError,
    ProviderTimeoutError,
)
from corral.guards.breaker import BreakerRegistry, CircuitBreaker, Permit
from corral.guards.budget import CallReservation, Cost, DailyLedger, RunBudget
from corral.guards.cache import ResponseCache, SemanticCache, cache_key
from corral.guards.kill import KillSwitch
from corral.guards.limiter import RateLimiter, Ticket
from corral.guards.loops import LoopGuard
from corral.guards.policy import PRIORITIES, GuardPolicies
from corral.guards.retry import RetryBudget, backoff_s, is_retryable
from corral.model import Model, ModelRequest, ModelResponse

__all__ = ["GuardEvent", "Guards", "ModelCaller", "RunGuards", "estimate_input_tokens"]

log = logging.getLogger(__name__)

Emit = Callable[["GuardEvent"], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardEvent:
    """One guard decision: `kind` is `degrade`, `retry`, `fallback`, `breaker`, `queued`,
    `paused`, `refused` or `agent_stopped`; `detail` carries its numbers."""

    kind: str
    detail: dict[str, Any] = field(default_factory=dict)
    alert: bool = False
    """Worth an operator's attention (an agent stopped, a breaker opened)."""


class Guards:
    """The app's shared guard state: breakers, limiter, retry budget, kill switch, daily limits.

    Args:
        policies: Every guard's policy.
        clock: All guard time.
        seed: Seeds retry jitter and adaptive throttling (deterministic tests).
        tiers: The app's tier names (degrading skips tiers it does not define).
    """

    def __init__(
        self,
        policies: GuardPolicies,
        clock: Clock,
        *,
        seed: int = 0,
        tiers: Iterable[str] = ("small", "medium", "large"),
    ) -> None:
        self.policies = policies
        self.tiers = frozenset(tiers)
        self.clock = clock
        self.breakers = BreakerRegistry(policies.breaker, clock)
        self.limiter = RateLimiter(policies.limits, policies.limiter, clock, seed=seed)
        self.retry_budget = RetryBudget(policies.retry, clock)
        self.kill = KillSwitch()
        self.daily = DailyLedger(policies.daily, clock)
        self.rng = random.Random(seed)
        self.cache: ResponseCache | None = None
        """Where cached answers live; set by the app when `policies.cache.enabled`."""
        self.semantic: SemanticCache | None = None
        """The semantic cache; set by the app when `policies.cache.enabled`."""
        self._lanes: dict[tuple[str, str, str | None], Lane] = {}

    def lane(self, agent: str, model: str, tenant: str | None) -> Lane:
        """The breakers and limiter keys of `agent`'s calls to `model` for `tenant`."""
        key = (agent, model, tenant)
        found = self._lanes.get(key)
        if found is None:
            if len(self._lanes) >= _MAX_LANES:  # many tenants: rebuild lanes as they are used
                self._lanes.clear()
            found = self._lanes[key] = Lane(self, agent, model, tenant)
        return found

    async def close(self) -> None:
        """Stop the guards' own tasks (the rate limiter's admission timer)."""
        await self.limiter.close()

    def run(self, run_id: str, *, priority: str, tenant: str | None, user: str | None) -> RunGuards:
        """Fresh per-run state (budget, loop guard) for a run."""
        return RunGuards(self, run_id=run_id, priority=priority, tenant=tenant, user=user)

    def cheaper_tier(self, tier: str) -> str | None:
        """The next cheaper tier in `degrade_order` that this app defines, or None."""
        order = [t for t in self.policies.degrade_order if t in self.tiers or t == tier]
        if tier not in order:
            return None
        i = order.index(tier)
        return order[i + 1] if i + 1 < len(order) else None


_MAX_LANES = 10_000


class Lane:
    """One agent's path to one model for one tenant, resolved once per process.

    Every model call touches the agent's, the provider's and the model's breaker and the
    limiter keys that have limits; looking them up by formatted key on each call cost more than
    the checks themselves. Breakers are never replaced (an operator reset changes a breaker's
    state, not the object) and limits are fixed at start-up, so the resolution stays valid.
    """

    __slots__ = ("agent_breaker", "breakers", "limit_keys", "model", "provider", "provider_keys")

    def __init__(self, guards: Guards, agent: str, model: str, tenant: str | None) -> None:
        self.model = model
        self.provider = _provider(model)
        registry = guards.breakers
        self.agent_breaker = registry.get(f"agent:{agent}")
        self.breakers = (registry.get(f"provider:{self.provider}"), registry.get(f"model:{model}"))
        self.limit_keys = guards.limiter.keys_for(
            f"model:{model}", f"provider:{self.provider}", f"tenant:{tenant}" if tenant else None
        )
        # The provider's rate-limit headers speak for its own keys, not for a tenant's.
        self.provider_keys = [k for k in self.limit_keys if not k.startswith("tenant:")]


class RunGuards:
    """One run's budget and loop guard, plus who it is for (daily limits, priority)."""

    def __init__(
        self, guards: Guards, *, run_id: str, priority: str, tenant: str | None, user: str | None
    ) -> None:
        if priority not in PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}; use one of {list(PRIORITIES)}")
        self.guards = guards
        self.run_id = run_id
        self.priority = priority
        self.level = PRIORITIES[priority]
        self.tenant = tenant
        self.user = user
        self.budget = RunBudget(guards.policies.budget, run_id)
        self.loops = LoopGuard(guards.policies.loops)


def estimate_input_tokens(request: ModelRequest) -> int:
    """Tokens the request's messages will count as (about 4 characters a token)."""
    chars = 0
    for message in request.messages:  # a loop: no generator per call
        chars += len(message.content)
    return chars // 4 + 4 * len(request.messages) + 1


_ZERO = Decimal(0)


class _PricedModel(Protocol):
    """What `ModelCaller` uses of `corral.models.pricing.Priced` (found by duck typing: the
    guards do not import the models package)."""

    def send_unpriced(self, request: ModelRequest) -> Awaitable[ModelResponse]: ...

    def price(self, response: ModelResponse) -> Decimal: ...


def _provider(model_name: str) -> str:
    return model_name.split(":", 1)[0]


class ModelCaller:
    """Makes one model call of one agent through the whole chain.

    A `Priced` model's provider is called directly (`Priced.send_unpriced`) and its answer
    priced here (`Priced.price`): `call` returns the provider's response object as it came, and
    what the call cost is `cost` (a second, priced response object per call cost more than the
    rest of the pricing).
    """

    def __init__(
        self,
        run: RunGuards,
        agent: str,
        timeout_s: float,
        emit: Emit,
        cache: bool = True,
        semantic: bool = False,
    ) -> None:
        self.run = run
        self.guards = run.guards
        self.agent = agent
        self.timeout_s = timeout_s
        self.emit = emit
        self.use_cache = cache
        self.use_semantic = semantic
        self.cost = _ZERO
        """What the answer `call` returned cost (USD; 0 for a cached answer)."""

    async def call(self, models: list[Model], request: ModelRequest) -> ModelResponse:
        """Answer `request` with the first model of the chain that can: the response (its
        `cost_usd` may be unset; what it cost is `self.cost`).

        Raises:
            LimitError: a guard refused (budget, kill switch, error streak, rate-limit wait).
            CircuitOpenError: every model's breaker (or the agent's) is open.
            ProviderError: every model failed; the last failure.
        """
        # The agent's breaker judges the agent call as a whole (a fallback that answers is a
        # success); provider and model breakers judge each attempt.
        lane = self.guards.lane(self.agent, models[0].name, self.run.tenant)
        agent_permit = lane.agent_breaker.enter()  # reported once below, whatever happens
        t0 = self.guards.clock.monotonic()
        try:
            if len(models) == 1 and request.model == models[0].name and not self._may_cache():
                # The common case: `_with_retries` without its own coroutine for the first try.
                self.guards.retry_budget.record_request(t0)
                try:
                    response = await self._attempt(models[0], request, 1, lane)
                except ProviderError as exc:
                    response = await self._retry(models[0], request, exc)
            else:
                response = await self._through_chain(models, request)
        except ProviderError as exc:
            ignored = exc.status in self.guards.policies.breaker.ignore_status
            duration = self.guards.clock.monotonic() - t0
            state = agent_permit.ignore() if ignored else agent_permit.failure(duration)
            await self._breaker_event(agent_permit, state)
            raise
        except BaseException:
            agent_permit.ignore()
            raise
        state = agent_permit.success(self.guards.clock.monotonic() - t0)
        if state is not None:
            await self._breaker_event(agent_permit, state)
        return response

    async def _through_chain(self, models: list[Model], request: ModelRequest) -> ModelResponse:
        last: ProviderError | CircuitOpenError | None = None
        for position, model in enumerate(models):
            if position > 0:
                await self.emit(
                    GuardEvent(
                        kind="fallback",
                        detail={
                            "from": models[position - 1].name,
                            "to": model.name,
                            "because": last.code if last is not None else "",
                        },
                    )
                )
            asked = request if request.model == model.name else replace(request, model=model.name)
            key = self._cache_key(asked)
            if key is not None:
                hit = await self._cache_get(key)
                if hit is not None:
                    self.cost = _ZERO
                    return hit
            meaning = self._semantic_scope(asked) if key is not None else None
            if meaning is not None:
                hit = await self._semantic_get(*meaning)
                if hit is not None:
                    self.cost = _ZERO
                    return hit
            try:
                response = await self._with_retries(model, asked)
                if key is not None or meaning is not None:
                    response = response.with_cost(self.cost)  # cached with its price
                if key is not None:
                    await self._cache_put(key, response)
                if meaning is not None and not response.tool_calls:
                    await self._semantic_put(*meaning, response)
                return response
            except CircuitOpenError as exc:
                last = exc
            except ProviderError as exc:
                last = exc
                if not exc.retryable:
                    raise  # the request is wrong; another provider would refuse it too
        assert last is not None
        raise last

    def _may_cache(self) -> bool:
        g = self.guards
        return (self.use_cache and g.cache is not None and g.policies.cache.enabled) or (
            self.use_semantic and g.semantic is not None
        )

    def _cache_key(self, request: ModelRequest) -> tuple[str, str] | None:
        policy = self.guards.policies.cache
        if (
            not policy.enabled
            or not self.use_cache
            or self.guards.cache is None
            or request.temperature > policy.max_temperature
        ):
            return None
        tenant = self.run.tenant if policy.per_tenant and self.run.tenant else "*"
        return f"tenant:{tenant}", cache_key(request)

    async def _cache_get(self, key: tuple[str, str]) -> ModelResponse | None:
        assert self.guards.cache is not None
        found = await self.guards.cache.cache_get(*key, self.guards.clock.now().timestamp())
        if found is None:
            return None
        original = ModelResponse.from_dict(found)
        await self.emit(
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
        return replace(
            original,
            input_tokens=0,
            output_tokens=0,
            cost_usd=Decimal(0),
            latency_s=0.0,
            cached=True,
        )

    async def _cache_put(self, key: tuple[str, str], response: ModelResponse) -> None:
        assert self.guards.cache is not None
        await self.guards.cache.cache_put(
            *key,
            response.to_dict(),
            now=self.guards.clock.now().timestamp(),
            ttl_s=self.guards.policies.cache.ttl_s,
        )

    def _semantic_scope(self, request: ModelRequest) -> tuple[tuple[str, str, str], str] | None:
        """(scope, text) when this call may use the semantic cache: the agent opted in, and it
        is the first turn (no tool results yet) of a structured call."""
        if not self.use_semantic or self.guards.semantic is None or request.output_schema is None:
            return None
        if any(m.role in ("tool", "assistant") for m in request.messages):
            return None
        users = [m.content for m in request.messages if m.role == "user"]
        if not users:
            return None
        tenant = (
            self.run.tenant if self.guards.policies.cache.per_tenant and self.run.tenant else "*"
        )
        schema = cache_key(ModelRequest(model="", messages=(), output_schema=request.output_schema))
        return (f"tenant:{tenant}", self.agent, schema), users[-1]

    async def _semantic_get(self, scope: tuple[str, str, str], text: str) -> ModelResponse | None:
        assert self.guards.semantic is not None
        policy = self.guards.policies.cache
        found = await self.guards.semantic.lookup(
            scope,
            text,
            now=self.guards.clock.now().timestamp(),
            threshold=policy.semantic_threshold,
        )
        if found is None:
            return None
        value, similarity = found
        original = ModelResponse.from_dict(value)
        await self.emit(
            GuardEvent(
                kind="cache_hit",
                detail={
                    "cache": "semantic",
                    "similarity": round(similarity, 4),
                    "threshold": policy.semantic_threshold,
                    "saved_usd": str(original.cost_usd or 0),
                },
            )
        )
        return replace(
            original,
            input_tokens=0,
            output_tokens=0,
            cost_usd=Decimal(0),
            latency_s=0.0,
            cached=True,
        )

    async def _semantic_put(
        self, scope: tuple[str, str, str], text: str, response: ModelResponse
    ) -> None:
        assert self.guards.semantic is not None
        await self.guards.semantic.add(
            scope,
            text,
            response.to_dict(),
            now=self.guards.clock.now().timestamp(),
            ttl_s=self.guards.policies.cache.ttl_s,
        )

    async def _with_retries(self, model: Model, request: ModelRequest) -> ModelResponse:
        self.guards.retry_budget.record_request()
        try:
            return await self._attempt(model, request, 1)
        except ProviderError as exc:
            return await self._retry(model, request, exc)

    async def _retry(
        self, model: Model, request: ModelRequest, failure: ProviderError
    ) -> ModelResponse:
        """The first attempt failed with `failure`: retry while the policy and budget allow."""
        policy = self.guards.policies.retry
        attempt = 1
        while True:
            exc = failure
            if self.run.loops.on_error(self.agent, model.name, _signature(exc)):
                # No infinite retry of the same faulty prompt: this call fails now and the
                # agent's later calls in this run are refused (LoopGuard.on_call).
                await self.emit(
                    GuardEvent(
                        kind="agent_stopped",
                        detail={
                            "agent": self.agent,
                            "endpoint": model.name,
                            "error": exc.code,
                            "times": self.guards.policies.loops.error_streak,
                        },
                        alert=True,
                    )
                )
                raise exc
            if not is_retryable(exc) or attempt >= policy.max_attempts:
                raise exc
            if not self.guards.retry_budget.try_retry():
                await self.emit(
                    GuardEvent(
                        kind="retry_denied",
                        detail={"model": model.name, "attempt": attempt, "error": exc.code},
                    )
                )
                raise exc
            delay = backoff_s(policy, attempt, self.guards.rng, exc)
            await self.emit(
                GuardEvent(
                    kind="retry",
                    detail={
                        "model": model.name,
                        "attempt": attempt + 1,
                        "delay_s": round(delay, 3),
                        "error": exc.code,
                        "status": exc.status,
                    },
                )
            )
            await self.guards.clock.sleep(delay)
            attempt += 1
            try:
                return await self._attempt(model, request, attempt)
            except ProviderError as again:
                failure = again

    async def _attempt(
        self, model: Model, request: ModelRequest, attempt: int, lane: Lane | None = None
    ) -> ModelResponse:
        g, run = self.guards, self.run
        kill = g.kill
        if kill.engaged:
            await kill.gate(run.run_id, self.agent)
        if lane is None:
            lane = g.lane(self.agent, model.name, run.tenant)
        input_tokens = estimate_input_tokens(request)
        reservation = self._try_reserve(model, request, input_tokens)
        if reservation is None:
            reservation = await self._reserve(model, request, input_tokens)
        permits: list[Permit] = []
        ticket: Ticket | None = None
        sent = False
        t0 = 0.0  # set as the call is sent: only a sent call fails with a ProviderError
        try:
            permits = _acquire(lane.breakers)
            tokens = input_tokens + request.max_output_tokens
            # The common case, without a coroutine: the call fits now.
            ticket = g.limiter.try_admit(lane.limit_keys, tokens, input_estimate=input_tokens)
            if ticket is None:
                ticket = await self._admit(lane, tokens, input_tokens)
            if kill.engaged:
                kill.check(run.run_id, self.agent)
            # A `Priced` model: its provider's call, priced below (see the class docstring).
            priced = cast(_PricedModel, model) if hasattr(model, "send_unpriced") else None
            send = model.complete if priced is None else priced.send_unpriced
            t0 = g.clock.monotonic()
            sent = True
            watch = kill.watch(run.run_id, self.agent, self.timeout_s)  # `KillSwitch.guard`
            try:
                try:
                    response = await send(request)
                except asyncio.CancelledError:
                    kill.stopped(watch)
                    raise
                finally:
                    kill.unwatch(watch)
            except TimeoutError:
                raise ProviderTimeoutError(
                    f"model {model.name} did not answer within {self.timeout_s:g}s",
                    provider=lane.provider,
                    timeout_s=self.timeout_s,
                ) from None
        except ProviderError as exc:
            await self._failed(exc, permits, ticket, reservation, g.clock.monotonic() - t0)
            raise
        except BaseException:
            # Refused, killed or cancelled: nothing was learned about the provider.
            for p in permits:
                p.ignore()
            if sent:  # the provider may bill the input of a call it was sent
                reservation.settle_failed()
                if ticket is not None:
                    ticket.settle_failed()
            else:
                reservation.settle(Cost())
                if ticket is not None:
                    ticket.settle(0)
            raise
        duration = g.clock.monotonic() - t0
        used = response.input_tokens + response.output_tokens
        cost = self.cost = (
            priced.price(response) if priced is not None else response.cost_usd or _ZERO
        )
        reservation.settle_usage(cost, used)
        if ticket.keys:
            ticket.settle(used)
            g.limiter.record_outcome(ticket.keys, accepted=True)
            if response.remaining_requests is not None or response.remaining_tokens is not None:
                for key in lane.provider_keys:
                    g.limiter.observe(
                        key,
                        remaining_requests=response.remaining_requests,
                        remaining_tokens=response.remaining_tokens,
                    )
        predicate = g.policies.breaker.failure_predicate
        bad = predicate is not None and predicate(response.with_cost(cost))
        for p in permits:
            state = p.failure(duration) if bad else p.success(duration)
            if state is not None:
                await self._breaker_event(p, state)
        run.loops.on_success(self.agent, model.name)
        return response

    def _costs(
        self, model: Model, request: ModelRequest, input_tokens: int
    ) -> tuple[Decimal, int, Decimal]:
        """(worst-case USD, worst-case tokens, USD of the input alone) of one call. A model
        that can price a call before it is made has `call_costs` (`Priced` does)."""
        tokens = input_tokens + request.max_output_tokens
        costs = getattr(model, "call_costs", None)
        if costs is None:
            return _ZERO, tokens, _ZERO
        usd, input_usd = costs(input_tokens, request.max_output_tokens)
        return usd, tokens, input_usd

    def _try_reserve(
        self, model: Model, request: ModelRequest, input_tokens: int
    ) -> CallReservation | None:
        """The common case without an `await`: the reservation fits."""
        run = self.run
        usd, tokens, floor_usd = self._costs(model, request, input_tokens)
        daily = self.guards.daily.accounts(tenant=run.tenant, user=run.user)
        try:
            return run.budget.reserve_call(usd, tokens, floor_usd, input_tokens, daily)
        except BudgetExhaustedError:
            return None  # `_reserve` refuses or pauses, with its events

    async def _reserve(
        self, model: Model, request: ModelRequest, input_tokens: int
    ) -> CallReservation:
        run = self.run
        usd, tokens, floor_usd = self._costs(model, request, input_tokens)
        while True:
            daily = self.guards.daily.accounts(tenant=run.tenant, user=run.user)
            try:
                return run.budget.reserve_call(usd, tokens, floor_usd, input_tokens, daily)
            except BudgetExhaustedError as exc:
                await self.emit(GuardEvent(kind="refused", detail=exc.to_dict()))
                if exc.scope == "run" or run.priority == "critical":
                    raise
                # A daily hard limit: pause (not fail) until the day rolls over or an operator
                # raises the limit; the run's deadline still bounds the wait.
                await self.emit(
                    GuardEvent(
                        kind="paused",
                        detail={
                            "scope": exc.scope,
                            "resets_in_s": round(self.guards.daily.seconds_to_reset(), 1),
                        },
                    )
                )
                await self.guards.daily.wait_for_room()

    async def _admit(self, lane: Lane, tokens: int, input_tokens: int) -> Ticket:
        """Wait for the rate limiter (the call did not fit at once: `try_admit` said no)."""
        g = self.guards
        keys = lane.limit_keys
        t0 = g.clock.monotonic()
        ticket = await g.limiter.acquire(
            keys, tokens, priority=self.run.level, input_estimate=input_tokens
        )
        waited = g.clock.monotonic() - t0
        if waited > 0:
            await self.emit(
                GuardEvent(kind="queued", detail={"keys": keys, "waited_s": round(waited, 3)})
            )
        return ticket

    async def _failed(
        self,
        exc: ProviderError,
        permits: list[Permit],
        ticket: Ticket | None,
        reservation: CallReservation,
        duration: float,
    ) -> None:
        g = self.guards
        client_error = exc.status in g.policies.breaker.ignore_status
        for p in permits:
            await self._breaker_event(p, p.ignore() if client_error else p.failure(duration))
        reservation.settle_failed()
        if ticket is not None:
            ticket.settle_failed()
            if isinstance(exc, ProviderRateLimitError):
                g.limiter.record_outcome(ticket.keys, accepted=False)
                g.limiter.penalize(ticket.keys, exc.retry_after_s or 1.0)

    async def _breaker_event(self, permit: Permit, state: str | None) -> None:
        if state is not None:
            await self.emit(
                GuardEvent(kind="breaker", detail={"key": permit.key, "state": state}, alert=True)
            )


def _acquire(breakers: tuple[CircuitBreaker, CircuitBreaker]) -> list[Permit]:
    """A permit from both of a lane's attempt breakers (provider, model), or none (a refusal
    releases the permit taken). `_attempt` reports each permit's outcome exactly once, so it
    takes them with `enter`."""
    provider, model = breakers
    permit = provider.enter()
    try:
        return [permit, model.enter()]
    except CircuitOpenError:
        permit.ignore()
        raise


def _signature(exc: ProviderError) -> str:
    return f"{exc.code}:{exc.status}"
