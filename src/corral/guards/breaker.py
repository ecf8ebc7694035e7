"""Circuit breakers with resilience4j semantics (docs/governance.md).

Why our own: pybreaker, aiobreaker, purgatory and circuitbreaker were measured on this machine
kind; all count only consecutive failures, let every concurrent caller through HALF_OPEN, and some
count asyncio cancellation as a failure.

Usage: `permit = breaker.acquire()` (raises `CircuitOpenError` when the call must not be made),
then exactly one of `permit.success(duration_s)`, `permit.failure(duration_s)` or
`permit.ignore()`. Each returns the new state when the outcome moved the breaker, else None.
All methods are synchronous: in one event loop a breaker's state changes atomically.

The breakers' whole reach: `AgentBreakerStep` (the guard chain's outermost step: the agent call
as a whole, a fallback that answers is a success), `BreakerStep` (each attempt: the provider's
and the model's breaker) and the operator controls (`force_open`, `disable`, `reset`).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

from corral.clock import Clock
from corral.errors import CircuitOpenError, ProviderError
from corral.guards.policy import BreakerPolicy
from corral.guards.step import GuardEvent, ModelCall, Next
from corral.model import ModelResponse

__all__ = [
    "AgentBreakerStep",
    "BreakerRecord",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStep",
    "BreakerStore",
    "CircuitBreaker",
    "Permit",
]

log = logging.getLogger(__name__)

BreakerState = Literal["CLOSED", "OPEN", "HALF_OPEN", "FORCED_OPEN", "DISABLED"]


@dataclass(slots=True)
class _Counts:
    total: int = 0
    failures: int = 0
    slow: int = 0


class _CountWindow:
    """The last `size` outcomes, with running totals."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._outcomes: deque[tuple[bool, bool]] = deque()
        self._counts = _Counts()

    def add(self, failed: bool, slow: bool, now: float) -> _Counts:
        c = self._counts
        if len(self._outcomes) == self._size:
            if not (failed or slow or c.failures or c.slow):
                return c  # a clean call into a full window of clean calls changes nothing
            old_failed, old_slow = self._outcomes.popleft()
            c.total -= 1
            c.failures -= old_failed
            c.slow -= old_slow
        self._outcomes.append((failed, slow))
        c.total += 1
        c.failures += failed
        c.slow += slow
        return c

    def counts(self, now: float) -> _Counts:
        return self._counts


class _TimeWindow:
    """Per-second buckets over the last `size` seconds."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._buckets: deque[tuple[int, _Counts]] = deque()

    def add(self, failed: bool, slow: bool, now: float) -> _Counts:
        second = int(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append((second, _Counts()))
        bucket = self._buckets[-1][1]
        bucket.total += 1
        bucket.failures += failed
        bucket.slow += slow
        return self.counts(now)

    def counts(self, now: float) -> _Counts:
        horizon = int(now) - self._size
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()
        c = _Counts()
        for _, b in self._buckets:
            c.total += b.total
            c.failures += b.failures
            c.slow += b.slow
        return c


class Permit:
    """Permission for one call; report its outcome exactly once."""

    __slots__ = ("_breaker", "_done", "_generation", "_half_open")

    def __init__(self, breaker: CircuitBreaker, generation: int, half_open: bool) -> None:
        self._breaker = breaker
        self._generation = generation
        self._half_open = half_open
        self._done = False

    @property
    def key(self) -> str:
        """The breaker's key."""
        return self._breaker.key

    def success(self, duration_s: float) -> BreakerState | None:
        """The call succeeded (a slow success still counts as slow)."""
        b = self._breaker
        if (
            b._steady
            and duration_s <= b._slow_s
            and self._generation == b._generation
            and not self._done
        ):
            self._done = True  # a clean call into a full window of clean calls: nothing changes
            return None
        return self._report(failed=False, duration_s=duration_s)

    def failure(self, duration_s: float) -> BreakerState | None:
        """The call failed in a way that says the endpoint is unhealthy."""
        return self._report(failed=True, duration_s=duration_s)

    def ignore(self) -> BreakerState | None:
        """Neither success nor failure (cancelled, refused by Corral, a client error)."""
        if self._done:
            return None
        self._done = True
        return self._breaker._release(self)

    def _report(self, *, failed: bool, duration_s: float) -> BreakerState | None:
        if self._done:
            return None
        self._done = True
        return self._breaker._record(self, failed, duration_s)


class _SharedPermit(Permit):
    """The permit `CircuitBreaker.enter` hands every call while CLOSED: one object per breaker
    generation instead of one per call. It keeps no exactly-once flag, so its caller must report
    each call's outcome once (the guard chain does, by construction); a CLOSED permit has
    nothing else to release."""

    __slots__ = ()

    def __init__(self, breaker: CircuitBreaker, generation: int) -> None:
        super().__init__(breaker, generation, False)

    def success(self, duration_s: float) -> BreakerState | None:
        b = self._breaker
        if b._steady and duration_s <= b._slow_s and self._generation == b._generation:
            return None  # a clean call into a full window of clean calls: nothing changes
        return b._record(self, False, duration_s)

    def failure(self, duration_s: float) -> BreakerState | None:
        return self._breaker._record(self, True, duration_s)

    def ignore(self) -> BreakerState | None:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerRecord:
    """A breaker's state that every process must agree on (`BreakerStore`)."""

    state: BreakerState
    generation: int
    """Moves forward on every transition; a permit of an older generation reports nothing."""
    opened_at: float = 0.0
    """When it opened (the clock's monotonic time)."""
    wait_s: float
    """How long it stays open before probing."""


class BreakerStore(Protocol):
    """Breaker state shared by processes; transitions are compare-and-set on the generation.

    Contract: `compare_and_set(key, g, record)` stores `record` (whose generation is g + 1) only
    if the key's generation is still `g` (an absent key has generation 0), atomically, and
    returns what the key holds afterwards: `record` if it won, the other process's record if
    not. `get` returns the current record (None: never moved). Count windows and probes stay in
    each process (as resilience4j keeps them per instance); only transitions are shared, so a
    breaker one process opens is open for all once they `refresh`. Synchronous for the
    in-memory store; transitions are rare, so a shared store's round trip is paid rarely.
    `tests/state/test_breaker_store.py` is the contract, parametrized over backends.
    """

    def get(self, key: str) -> BreakerRecord | None:
        """The key's current record."""
        ...

    def compare_and_set(self, key: str, generation: int, record: BreakerRecord) -> BreakerRecord:
        """Store `record` if the key is still at `generation`; what the key holds after."""
        ...


class CircuitBreaker:
    """One breaker for one key (`provider:sim`, `model:sim:small`, `agent:planner`)."""

    def __init__(
        self, key: str, policy: BreakerPolicy, clock: Clock, store: BreakerStore | None = None
    ) -> None:
        if store is None:
            # The in-process default: stdlib only, so the core may build it.
            from corral.state.memory import MemoryBreakerStore

            store = MemoryBreakerStore()
        self._store = store
        self.key = key
        self.policy = policy
        self._slow_s = policy.slow_call_s  # read by every successful call
        self._clock = clock
        self.state: BreakerState = "CLOSED"
        self.rejected = 0
        """Calls refused while OPEN or with HALF_OPEN full (for metrics)."""
        self._generation = 0
        self._window = self._new_window()
        self._opened_at = 0.0
        self._wait_s = policy.wait_in_open_s
        self._half_open_at = 0.0
        self._permits_out = 0
        self._probe = _Counts()
        self._steady = False
        """CLOSED with a full count window of clean calls: another clean call changes nothing
        (`Permit.success` returns at once)."""
        self._shared: _SharedPermit | None = _SharedPermit(self, 0)
        """`enter`'s permit for this generation while CLOSED (None in any other state)."""

    def _new_window(self) -> _CountWindow | _TimeWindow:
        p = self.policy
        return _CountWindow(p.window_size) if p.window == "count" else _TimeWindow(p.window_size)

    # -- admission ------------------------------------------------------------------------------

    def acquire(self) -> Permit:
        """A permit for one call.

        Raises:
            CircuitOpenError: OPEN (and its wait has not passed), FORCED_OPEN, or HALF_OPEN with
                every probe permit taken.
        """
        if self.state == "CLOSED":  # the common case: no clock read needed
            return Permit(self, self._generation, False)
        now = self._clock.monotonic()
        if self.state == "DISABLED":
            return Permit(self, -1, half_open=False)
        if self.state == "FORCED_OPEN":
            self.rejected += 1
            raise CircuitOpenError(self.key, state=self.state, retry_after_s=None)
        if self.state == "OPEN":
            remaining = self._opened_at + self._wait_s - now
            if remaining > 0:
                self.rejected += 1
                raise CircuitOpenError(self.key, state=self.state, retry_after_s=remaining)
            self._to_half_open(now)
        if self.state == "HALF_OPEN":
            if now - self._half_open_at > self.policy.max_wait_in_half_open_s:
                # Probes that never reported: treat the endpoint as still unhealthy.
                self._to_open(now, grow=True)
                self.rejected += 1
                raise CircuitOpenError(self.key, state=self.state, retry_after_s=self._wait_s)
            if self._permits_out >= self.policy.permitted_in_half_open:
                self.rejected += 1
                raise CircuitOpenError(self.key, state=self.state, retry_after_s=None)
            self._permits_out += 1
            return Permit(self, self._generation, half_open=True)
        return Permit(self, self._generation, half_open=False)

    def enter(self) -> Permit:
        """`acquire` for a caller that reports every call's outcome exactly once (the guard
        chain): while CLOSED, the same permit for every call, so a call builds nothing here.

        Raises:
            CircuitOpenError: as `acquire`.
        """
        shared = self._shared
        return shared if shared is not None else self.acquire()

    # -- outcomes -------------------------------------------------------------------------------

    def _record(self, permit: Permit, failed: bool, duration_s: float) -> BreakerState | None:
        if permit._generation != self._generation:
            return None  # the breaker moved on since this call started
        if self.state == "CLOSED" and self.policy.window == "count":  # the common case
            counts = self._window.add(failed, duration_s > self.policy.slow_call_s, 0.0)
            if counts.failures or counts.slow:
                self._steady = False
                if self._tripped(counts):
                    self._to_open(self._clock.monotonic(), grow=False)
                    return self.state
            else:
                self._steady = counts.total >= self.policy.window_size
            return None
        if self.state in ("DISABLED", "FORCED_OPEN"):
            return None
        now = (
            self._clock.monotonic()
            if self.policy.window == "time" or self.state != "CLOSED"
            else 0.0
        )
        slow = duration_s > self.policy.slow_call_s
        if self.state == "HALF_OPEN":
            self._probe.total += 1
            self._probe.failures += failed
            self._probe.slow += slow
            if self._probe.total >= self.policy.permitted_in_half_open:
                if self._tripped(self._probe):
                    self._to_open(now, grow=True)
                else:
                    self._to_closed()
                return self.state
            return None
        counts = self._window.add(failed, slow, now)
        if self.state == "CLOSED" and self._tripped(counts):
            self._to_open(self._clock.monotonic(), grow=False)
            return self.state
        return None

    def _release(self, permit: Permit) -> BreakerState | None:
        if permit._half_open and permit._generation == self._generation:
            self._permits_out -= 1
        return None

    def _tripped(self, c: _Counts) -> bool:
        p = self.policy
        minimum = min(p.minimum_calls, p.window_size) if p.window == "count" else p.minimum_calls
        if self.state == "HALF_OPEN":
            minimum = p.permitted_in_half_open
        if c.total < minimum or c.total == 0:
            return False
        return c.failures / c.total >= p.failure_rate or c.slow / c.total >= p.slow_call_rate

    # -- transitions ----------------------------------------------------------------------------

    def _to_open(self, now: float, *, grow: bool) -> None:
        wait_s = self._wait_s
        if grow and self.state == "HALF_OPEN":
            wait_s = min(wait_s * self.policy.wait_multiplier, self.policy.max_wait_in_open_s)
        self._set("OPEN", opened_at=now, wait_s=wait_s)

    def _to_half_open(self, now: float) -> None:
        self._set("HALF_OPEN")

    def _to_closed(self) -> None:
        self._set("CLOSED", wait_s=self.policy.wait_in_open_s)

    def _set(
        self, state: BreakerState, *, opened_at: float | None = None, wait_s: float | None = None
    ) -> None:
        """Move to `state` by compare-and-set on the generation: if another process moved
        this breaker first, take its state instead."""
        record = BreakerRecord(
            state=state,
            generation=self._generation + 1,
            opened_at=self._opened_at if opened_at is None else opened_at,
            wait_s=self._wait_s if wait_s is None else wait_s,
        )
        self._adopt(self._store.compare_and_set(self.key, self._generation, record))

    def _adopt(self, record: BreakerRecord) -> None:
        log.info(
            "circuit %s: %s -> %s", self.key, self.state, record.state, extra={"breaker": self.key}
        )
        self.state = state = record.state
        self._generation = record.generation
        self._opened_at, self._wait_s = record.opened_at, record.wait_s
        self._steady = False
        self._shared = _SharedPermit(self, self._generation) if state == "CLOSED" else None
        # What each process keeps for itself: its count window and its probes.
        if state == "CLOSED":
            self._window = self._new_window()
        elif state == "HALF_OPEN":
            self._half_open_at = self._clock.monotonic()
            self._permits_out = 0
            self._probe = _Counts()

    def refresh(self) -> None:
        """Catch up with the store if another process moved this breaker."""
        record = self._store.get(self.key)
        if record is not None and record.generation != self._generation:
            self._adopt(record)

    # -- operators ------------------------------------------------------------------------------

    def force_open(self) -> None:
        """Reject every call until `reset()`."""
        self._set("FORCED_OPEN")

    def disable(self) -> None:
        """Admit every call and record nothing until `reset()`."""
        self._set("DISABLED")

    def reset(self) -> None:
        """Back to CLOSED with an empty window."""
        self._to_closed()


class BreakerRegistry:
    """The process's breakers, one per key, created on first use with the default policy."""

    def __init__(
        self,
        policy: BreakerPolicy,
        clock: Clock,
        overrides: dict[str, BreakerPolicy] | None = None,
        store: BreakerStore | None = None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._overrides = dict(overrides or {})
        self._breakers: dict[str, CircuitBreaker] = {}
        if store is None:
            from corral.state.memory import MemoryBreakerStore

            store = MemoryBreakerStore()
        self.store = store
        """Where transitions are shared (this process unless the store is shared)."""

    def get(self, key: str) -> CircuitBreaker:
        """The breaker for `key`."""
        found = self._breakers.get(key)
        if found is None:
            policy = self._overrides.get(key, self.policy)
            found = self._breakers[key] = CircuitBreaker(key, policy, self._clock, self.store)
        return found

    def states(self) -> dict[str, BreakerState]:
        """Every breaker's state, by key."""
        return {key: b.state for key, b in sorted(self._breakers.items())}


async def _report(call: ModelCall, permit: Permit, state: BreakerState | None) -> None:
    if state is not None:
        await call.emit(
            GuardEvent(kind="breaker", detail={"key": permit.key, "state": state}, alert=True)
        )


class AgentBreakerStep:
    """The guard chain's agent breaker: judges an agent's call as a whole (a fallback model
    that answers is a success; a client error is neither success nor failure)."""

    def __init__(self, registry: BreakerRegistry, clock: Clock) -> None:
        self.registry = registry
        self.clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        """By agent name: formatting `agent:<name>` per call cost more than the check."""

    async def __call__(self, call: ModelCall, next: Next) -> ModelResponse:
        breaker = self._breakers.get(call.agent)
        if breaker is None:
            breaker = self._breakers[call.agent] = self.registry.get(f"agent:{call.agent}")
        permit = breaker.enter()  # reported exactly once below, whatever happens
        clock = self.clock
        t0 = clock.monotonic()
        try:
            response = await next(call)
        except ProviderError as exc:
            if exc.status in self.registry.policy.ignore_status:
                state = permit.ignore()
            else:
                state = permit.failure(clock.monotonic() - t0)
            await _report(call, permit, state)
            raise
        except BaseException:
            permit.ignore()
            raise
        state = permit.success(clock.monotonic() - t0)
        if state is not None:
            await _report(call, permit, state)
        return response


class BreakerStep:
    """The guard chain's attempt breakers: the provider's and the model's. A call that was sent
    and failed counts as a failure (a client error is ignored); a refusal or cancellation
    before or during the call teaches nothing about the provider and is ignored. Durations are
    the provider call's alone (`ModelCall.sent_at`), without queueing."""

    def __init__(self, registry: BreakerRegistry, clock: Clock) -> None:
        self.registry = registry
        self.clock = clock
        self._pairs: dict[str, tuple[CircuitBreaker, CircuitBreaker]] = {}
        """(provider, model) breakers by model name, resolved once: breakers are never
        replaced (an operator reset changes a breaker's state, not the object)."""

    def _breakers(self, model: str) -> tuple[CircuitBreaker, CircuitBreaker]:
        pair = self._pairs.get(model)
        if pair is None:
            provider = model.split(":", 1)[0]
            pair = self._pairs[model] = (
                self.registry.get(f"provider:{provider}"),
                self.registry.get(f"model:{model}"),
            )
        return pair

    async def __call__(self, call: ModelCall, next: Next) -> ModelResponse:
        provider, model = self._breakers(call.model.name)
        first = provider.enter()
        try:
            second = model.enter()
        except CircuitOpenError:
            first.ignore()
            raise
        permits = (first, second)
        try:
            response = await next(call)
        except ProviderError as exc:
            sent_at = call.sent_at
            duration = 0.0 if sent_at is None else self.clock.monotonic() - sent_at
            ignored = exc.status in self.registry.policy.ignore_status
            for p in permits:
                await _report(call, p, p.ignore() if ignored else p.failure(duration))
            raise
        except BaseException:
            for p in permits:
                p.ignore()
            raise
        sent_at = call.sent_at
        duration = 0.0 if sent_at is None else self.clock.monotonic() - sent_at
        predicate = self.registry.policy.failure_predicate
        bad = predicate is not None and predicate(response.with_cost(call.cost))
        for p in permits:
            state = p.failure(duration) if bad else p.success(duration)
            if state is not None:
                await _report(call, p, state)
        return response
