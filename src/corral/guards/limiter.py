"""A priority RPM + TPM rate limiter that queues callers instead of letting them hit a 429.

Why our own: the Python limiters measured here (aiolimiter, limits, pyrate-limiter) bucket
requests only; none reserves tokens before a call and reconciles after it, checks several keys
(model, provider, tenant) all-or-none, or orders waiters by priority with aging.

Shape:
- A `LimiterBackend` holds the buckets and does one admission atomically: every key's RPM and TPM
  bucket is checked and deducted together, or none is. `MemoryLimiterBackend` is the in-process
  backend; a Redis backend implements the same three methods with one Lua script each.
- `RateLimiter` queues callers that do not fit, ordered by (priority level, arrival): FIFO within
  a level, a waiter moves up one level per `aging_s` waited, and a lower-priority waiter never
  overtakes a blocked higher one on a shared key. Waiting goes through the injected `Clock`.
- Tokens are reserved as (counted input + max output) and reconciled with the actual usage
  (`Ticket.settle`); a failed call with no usage keeps only its input estimate.
- Provider feedback: a 429 blocks the key for its Retry-After and empties its buckets; remaining
  counts from rate-limit headers lower the local allowance; client-side adaptive throttling
  defers calls with probability max(0, (requests - k * accepts) / (requests + 1)).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from corral.clock import Clock
from corral.errors import RateLimitedError
from corral.guards.policy import LimiterPolicy, RateLimit

__all__ = ["LimiterBackend", "MemoryLimiterBackend", "RateLimiter", "Ticket"]


class LimiterBackend(Protocol):
    """Bucket state for every key; each method is one atomic operation."""

    def try_acquire(self, keys: list[str], tokens: int, now: float) -> tuple[float, list[str]]:
        """Admit one request of `tokens` on every key (deducting all) and return `(0, [])`, or
        deduct nothing and return the seconds until it could fit and the keys that lack room."""
        ...

    def adjust(self, keys: list[str], tokens: int, now: float) -> None:
        """Give back `tokens` (negative: charge more) on every key's token bucket."""
        ...

    def penalize(self, key: str, retry_after_s: float, now: float) -> None:
        """The provider said 429: nothing more on `key` until `retry_after_s` has passed."""
        ...

    def observe(
        self, key: str, remaining_requests: int | None, remaining_tokens: int | None, now: float
    ) -> None:
        """The provider reported what is left; never allow more than that locally."""
        ...


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: int, burst_s: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_s(self, amount: float) -> float:
        # A request larger than the bucket is admitted when the bucket is full (it goes into
        # debt), so no request is too big to ever run.
        need = min(amount, self.capacity)
        if self.level >= need - 1e-9:  # refill arithmetic drifts by ulps
            return 0.0
        # At least a microsecond: a wait that rounds to nothing would spin without time passing.
        return max((need - self.level) / self.rate, 1e-6) if self.rate > 0 else math.inf


@dataclass(slots=True)
class _Key:
    requests: _Bucket | None
    tokens: _Bucket | None
    blocked_until: float = 0.0


class MemoryLimiterBackend:
    """Buckets in this process (embedded mode)."""

    def __init__(self, limits: dict[str, RateLimit]) -> None:
        self._limits = dict(limits)
        self._keys: dict[str, _Key] = {}

    def has_limit(self, key: str) -> bool:
        return key in self._limits or f"{key.split(':', 1)[0]}:*" in self._limits

    def _key(self, key: str, now: float) -> _Key:
        found = self._keys.get(key)
        if found is None:
            limit = self._limits.get(key) or self._limits[f"{key.split(':', 1)[0]}:*"]
            found = _Key(
                requests=_Bucket(limit.rpm, limit.burst_s, now) if limit.rpm else None,
                tokens=_Bucket(limit.tpm, limit.burst_s, now) if limit.tpm else None,
            )
            self._keys[key] = found
        return found

    def try_acquire(self, keys: list[str], tokens: int, now: float) -> tuple[float, list[str]]:
        state = [self._key(k, now) for k in keys]
        wait = 0.0
        short: list[str] = []
        for key, s in zip(keys, state, strict=True):
            key_wait = s.blocked_until - now
            for bucket, amount in ((s.requests, 1), (s.tokens, tokens)):
                if bucket is not None:
                    bucket.refill(now)
                    key_wait = max(key_wait, bucket.wait_s(amount))
            if key_wait > 0:
                short.append(key)
                wait = max(wait, key_wait)
        if short:
            return wait, short
        for s in state:
            if s.requests is not None:
                s.requests.level -= 1
            if s.tokens is not None:
                s.tokens.level -= tokens
        return 0.0, []

    def adjust(self, keys: list[str], tokens: int, now: float) -> None:
        for k in keys:
            bucket = self._key(k, now).tokens
            if bucket is not None:
                bucket.refill(now)
                bucket.level = min(bucket.capacity, bucket.level + tokens)

    def penalize(self, key: str, retry_after_s: float, now: float) -> None:
        if not self.has_limit(key):
            return
        s = self._key(key, now)
        s.blocked_until = max(s.blocked_until, now + retry_after_s)
        for bucket in (s.requests, s.tokens):
            if bucket is not None:
                bucket.refill(now)
                bucket.level = min(bucket.level, 0.0)
                bucket.updated = max(bucket.updated, now + retry_after_s)

    def observe(
        self, key: str, remaining_requests: int | None, remaining_tokens: int | None, now: float
    ) -> None:
        if not self.has_limit(key):
            return
        s = self._key(key, now)
        for bucket, left in ((s.requests, remaining_requests), (s.tokens, remaining_tokens)):
            if bucket is not None and left is not None:
                bucket.refill(now)
                bucket.level = min(bucket.level, float(left))


class Ticket:
    """An admitted call's token reservation; settle it once with the actual usage."""

    __slots__ = ("_limiter", "input_estimate", "keys", "settled", "tokens")

    def __init__(self, limiter: RateLimiter, keys: list[str], tokens: int, input_estimate: int):
        self._limiter = limiter
        self.keys = keys
        self.tokens = tokens
        self.input_estimate = input_estimate
        self.settled = False

    def settle(self, actual_tokens: int) -> None:
        """Refund (or charge) the difference to the reservation. A second call does nothing."""
        if self.settled or not self.keys:
            self.settled = True
            return
        self.settled = True
        self._limiter._adjust(self.keys, self.tokens - actual_tokens)

    def settle_failed(self) -> None:
        """The call failed with no usage: keep the input estimate, refund the rest."""
        self.settle(self.input_estimate)


@dataclass(slots=True)
class _Waiter:
    keys: list[str]
    tokens: int
    level: int
    seq: int
    arrived: float
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    admitted: bool = False


class RateLimiter:
    """Admission for model calls across every configured key.

    Args:
        limits: `RateLimit` by key; `tenant:*` applies to every tenant separately.
        policy: Queueing (max wait, aging, adaptive throttling).
        clock: All waiting goes through it.
        backend: Bucket state (default: in this process).
        seed: Seeds the adaptive-throttling coin.
    """

    def __init__(
        self,
        limits: dict[str, RateLimit],
        policy: LimiterPolicy,
        clock: Clock,
        *,
        backend: LimiterBackend | None = None,
        seed: int = 0,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._memory = MemoryLimiterBackend(limits)
        self._backend: LimiterBackend = backend or self._memory
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._changed: asyncio.Event | None = None
        self._rng = random.Random(seed)
        self._outcomes: dict[str, deque[tuple[float, bool]]] = {}
        self.admitted = 0
        self.waited = 0
        """Calls that had to queue (for metrics)."""

    def keys_for(self, *candidates: str | None) -> list[str]:
        """The candidate keys that have a configured limit."""
        return [k for k in candidates if k and self._memory.has_limit(k)]

    @property
    def queue_depth(self) -> int:
        return sum(1 for w in self._waiters if not w.admitted)

    async def acquire(
        self, keys: list[str], tokens: int, *, priority: int, input_estimate: int
    ) -> Ticket:
        """Wait (by priority) until the call fits every key's RPM and TPM, then reserve it.

        Raises:
            RateLimitedError: not admitted within `policy.max_wait_s`.
        """
        if not keys:
            return Ticket(self, [], 0, 0)
        now = self._clock.monotonic()
        waiter = _Waiter(keys=keys, tokens=tokens, level=priority, seq=next(self._seq), arrived=now)
        self._waiters.append(waiter)
        queued = False
        try:
            while True:
                wait = self._pump()
                if waiter.admitted:
                    self.admitted += 1
                    return Ticket(self, keys, tokens, input_estimate)
                if not queued:
                    queued = True
                    self.waited += 1
                waited = self._clock.monotonic() - waiter.arrived
                if waited >= self.policy.max_wait_s:
                    raise RateLimitedError(",".join(keys), waited_s=waited, retry_after_s=wait)
                await self._sleep(waiter, min(wait, self.policy.max_wait_s - waited))
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if queued:
                self._notify()

    def _level(self, w: _Waiter, now: float) -> float:
        return w.level - math.floor((now - w.arrived) / self.policy.aging_s)

    def _pump(self) -> float:
        """Admit every waiter that fits, best first; the seconds until the next one might."""
        now = self._clock.monotonic()
        pending = sorted(
            (w for w in self._waiters if not w.admitted), key=lambda w: (self._level(w, now), w.seq)
        )
        blocked: set[str] = set()
        soonest = math.inf
        for w in pending:
            if blocked.intersection(w.keys):
                continue
            wait = self._throttle_wait(w.keys, now)
            short = w.keys
            if wait == 0:
                wait, short = self._backend.try_acquire(w.keys, w.tokens, now)
            if wait == 0:
                w.admitted = True
                w.ready.set()
            else:
                # Later waiters may not take room on the keys this one is waiting for; on its
                # other keys they may go ahead (a tenant's limit does not hold up other tenants).
                blocked.update(short)
                soonest = min(soonest, wait)
        return soonest

    async def _sleep(self, waiter: _Waiter, seconds: float) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        tasks: set[asyncio.Future[object]] = {
            asyncio.ensure_future(waiter.ready.wait()),
            asyncio.ensure_future(changed.wait()),
        }
        if math.isfinite(seconds):
            tasks.add(asyncio.ensure_future(self._clock.sleep(max(seconds, 1e-6))))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _adjust(self, keys: list[str], tokens: int) -> None:
        if tokens:
            self._backend.adjust(keys, tokens, self._clock.monotonic())
            if tokens > 0:
                self._notify()

    # -- provider feedback ----------------------------------------------------------------------

    def penalize(self, keys: list[str], retry_after_s: float) -> None:
        """A 429 came back: hold these keys for `retry_after_s`."""
        now = self._clock.monotonic()
        for key in keys:
            self._backend.penalize(key, retry_after_s, now)

    def observe(
        self,
        key: str,
        *,
        remaining_requests: int | None = None,
        remaining_tokens: int | None = None,
    ) -> None:
        """Rate-limit headers said what is left on `key`."""
        self._backend.observe(key, remaining_requests, remaining_tokens, self._clock.monotonic())

    def record_outcome(self, keys: list[str], *, accepted: bool) -> None:
        """Whether the provider accepted an admitted call (False: it answered 429)."""
        now = self._clock.monotonic()
        for key in keys:
            self._outcomes.setdefault(key, deque()).append((now, accepted))

    def reject_probability(self, key: str) -> float:
        """Client-side adaptive throttling (Google SRE): the share of calls to defer locally."""
        outcomes = self._outcomes.get(key)
        if not outcomes:
            return 0.0
        horizon = self._clock.monotonic() - self.policy.adaptive_window_s
        while outcomes and outcomes[0][0] <= horizon:
            outcomes.popleft()
        requests = len(outcomes)
        accepts = sum(1 for _, ok in outcomes if ok)
        return max(0.0, (requests - self.policy.adaptive_k * accepts) / (requests + 1))

    def _throttle_wait(self, keys: list[str], now: float) -> float:
        p = max((self.reject_probability(k) for k in keys), default=0.0)
        if p > 0 and self._rng.random() < p:
            return 1.0  # deferred locally: try again in a second rather than add to the storm
        return 0.0
