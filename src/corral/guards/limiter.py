"""A priority RPM + TPM rate limiter that queues callers instead of letting them hit a 429.

Why our own: the Python limiters measured here (aiolimiter, limits, pyrate-limiter) bucket
requests only; none reserves tokens before a call and reconciles after it, checks several keys
(model, provider, tenant) all-or-none, or orders waiters by priority with aging.

Shape:
- A `LimiterBackend` holds the buckets and does one admission atomically: every key's RPM and TPM
  bucket is checked and deducted together, or none is. `corral.state.memory.MemoryLimiterBackend`
  is the in-process backend; a Redis backend implements the same methods with one Lua script
  each. The queue (who waits, in which order) stays in the process; the backend also knows the
  best priority each limiter (holder) has waiting on a key, so a worse-priority call from
  another process does not take room a better one is waiting for. Aging orders one process's
  queue; across processes the better level wins.
- `RateLimiter` queues callers that do not fit, ordered by (priority level, arrival): FIFO within
  a level, and a lower-priority waiter never overtakes a blocked higher one on a shared key.
  Aging: a waiter that has waited `aging_s` per level below the best waiting level counts as
  aged, and aged waiters get every other admission while higher priorities are queued. So
  `batch` is never starved by an `interactive` flood, and an `interactive` trickle is never
  stuck behind a `batch` backlog (which plain "promote by waiting time" would do: in a flood the
  old batch calls would outrank every new interactive one). Waiting goes through the `Clock`.
- Tokens are reserved as (counted input + max output) and reconciled with the actual usage
  (`Ticket.settle`); a failed call with no usage keeps only its input estimate.
- Provider feedback: a 429 blocks the key for its Retry-After and empties its buckets; remaining
  counts from rate-limit headers lower the local allowance; client-side adaptive throttling
  defers calls with probability max(0, (requests - k * accepts) / (requests + 1)).

The limiter's whole reach: `LimiterStep` (the guard chain: admit, settle, feed back the
provider's answer) and the metrics that read its queue.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import math
import random
import uuid
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

from corral.clock import Clock
from corral.errors import ProviderError, ProviderRateLimitError, RateLimitedError
from corral.guards.policy import LimiterPolicy, RateLimit
from corral.guards.step import GuardEvent, ModelCall, Next
from corral.model import ModelResponse

__all__ = ["FOREIGN_POLL_S", "LimiterBackend", "LimiterStep", "RateLimiter", "Ticket"]


class LimiterBackend(Protocol):
    """Bucket state for every key, and who waits where; each method is one atomic operation.

    Contract for a shared backend (many processes): `try_acquire` checks and deducts every key's
    RPM and TPM bucket in one atomic step (all or none: a Lua script in Redis), and admits
    nothing on a key where another holder (another limiter, in this process or another) has a
    waiter registered at a better priority level, so priority holds across processes; `wait`
    and `unwait` register and remove such a waiter (a shared backend expires the registrations
    of a holder that stops renewing them, so a dead process blocks nobody). `adjust` is an
    atomic add, capped at the bucket's capacity; `penalize` and `observe` only ever lower what
    is allowed, so their races are harmless. Methods are synchronous: the in-memory backend
    costs no coroutine per model call. A network backend keeps a local lease of tokens and
    refills it in the background (or the limiter grows an async variant); the contract stays
    the same. `tests/state/test_limiter_backend.py` is the contract, parametrized over backends.
    """

    def has_limit(self, key: str) -> bool:
        """Whether `key` (or its kind's `kind:*`) has a configured limit."""
        ...

    def try_acquire(
        self, keys: list[str], tokens: int, now: float, priority: int, holder: str
    ) -> tuple[float, list[str]]:
        """Admit one request of `tokens` at `priority` (0 = best) for `holder` on every key
        (deducting all) and return `(0, [])`, or deduct nothing and return the seconds until it
        could fit (`FOREIGN_POLL_S` when a better waiter of another holder is in the way) and
        the keys that lack room."""
        ...

    def wait(self, keys: list[str], priority: int, holder: str, now: float) -> None:
        """`holder` has one waiter at `priority` on `keys`: other holders' worse-priority
        requests on those keys wait behind it."""
        ...

    def unwait(self, keys: list[str], priority: int, holder: str) -> None:
        """One waiter registered by `wait` was admitted or gave up."""
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


FOREIGN_POLL_S = 0.05
"""How often a waiter held back by another holder's better waiter looks again (a shared
backend has no cross-process wakeup)."""


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


class _Outcomes:
    """Provider answers for one key over a sliding window, with running totals."""

    __slots__ = ("accepts", "events", "requests")

    def __init__(self) -> None:
        self.events: deque[tuple[float, bool]] = deque()
        self.requests = 0
        self.accepts = 0

    def add(self, now: float, accepted: bool) -> None:
        self.events.append((now, accepted))
        self.requests += 1
        self.accepts += accepted

    def trim(self, horizon: float) -> None:
        while self.events and self.events[0][0] <= horizon:
            _, accepted = self.events.popleft()
            self.requests -= 1
            self.accepts -= accepted


@dataclass(slots=True)
class _Waiter:
    keys: list[str]
    tokens: int
    level: int
    seq: int
    arrived: float
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    admitted: bool = False
    gone: bool = False
    """Admitted, expired or cancelled: no longer in the queue."""


class RateLimiter:
    """Admission for model calls across every configured key.

    Waiters are kept by (level, arrival) and by arrival; admission alternates between the best
    waiter and the oldest aged one (see the module docstring). Admission runs when a caller
    arrives, when a reservation is refunded, and on a single timer for the moment the head of the
    queue will fit, so a queue of thousands costs little more per admission than a queue of one.

    Args:
        limits: `RateLimit` by key; `tenant:*` applies to every tenant separately.
        policy: Queueing (max wait, aging, adaptive throttling).
        clock: All waiting goes through it.
        backend: Bucket state (default: `corral.state.memory.MemoryLimiterBackend`).
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
        if backend is None:
            # The in-process default: stdlib only, so the core may build it.
            from corral.state.memory import MemoryLimiterBackend

            backend = MemoryLimiterBackend(limits)
        self._backend: LimiterBackend = backend
        self._queue: list[tuple[int, int, _Waiter]] = []
        self._arrivals: dict[int, deque[_Waiter]] = {}
        """Waiters by level, oldest first (for the aged turn)."""
        self._last_aged = False
        self._key_counts: Counter[str] = Counter()
        self._seq = itertools.count()
        self._ticker: asyncio.Task[None] | None = None
        self._kick: asyncio.Event | None = None
        self._rng = random.Random(seed)
        self.holder = uuid.uuid4().hex
        """This limiter's name in a shared backend's waiter registrations."""
        self._outcomes: dict[str, _Outcomes] = {}
        self.admitted = 0
        self.waited = 0
        """Calls that had to queue (for metrics)."""

    @property
    def backend(self) -> LimiterBackend:
        """Where the buckets live."""
        return self._backend

    def keys_for(self, *candidates: str | None) -> list[str]:
        """The candidate keys that have a configured limit."""
        return [k for k in candidates if k and self._backend.has_limit(k)]

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def queue_depths(self) -> dict[int, int]:
        """Calls waiting now, by priority level (0 = critical)."""
        depths: Counter[int] = Counter(level for level, _, _ in self._queue)
        return dict(depths)

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
        if not self._queue and self._throttle_wait(keys, now) == 0:
            # Nobody is waiting: no queue to respect, admit straight away if it fits.
            wait, _ = self._backend.try_acquire(keys, tokens, now, priority, self.holder)
            if wait == 0:
                self.admitted += 1
                return Ticket(self, keys, tokens, input_estimate)
        seq = next(self._seq)
        waiter = _Waiter(keys=keys, tokens=tokens, level=priority, seq=seq, arrived=now)
        bisect.insort(self._queue, (priority, seq, waiter))
        self._arrivals.setdefault(priority, deque()).append(waiter)
        self._key_counts.update(keys)
        self._backend.wait(keys, priority, self.holder, now)
        self._pump()
        if not waiter.admitted:
            self.waited += 1
            await self._wait(waiter)
        self.admitted += 1
        return Ticket(self, keys, tokens, input_estimate)

    async def _wait(self, waiter: _Waiter) -> None:
        self._ensure_ticker()
        ready = asyncio.ensure_future(waiter.ready.wait())
        expiry = asyncio.ensure_future(self._clock.sleep(self.policy.max_wait_s))
        try:
            await asyncio.wait({ready, expiry}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if waiter.admitted:  # admitted as we were cancelled: give the room back
                self._backend.adjust(waiter.keys, waiter.tokens, self._clock.monotonic())
            raise
        finally:
            ready.cancel()
            expiry.cancel()
            if not waiter.admitted:
                self._remove(waiter)
        if not waiter.admitted:
            waited = self._clock.monotonic() - waiter.arrived
            raise RateLimitedError(",".join(waiter.keys), waited_s=waited, retry_after_s=None)

    def _remove(self, waiter: _Waiter) -> None:
        if waiter.gone:
            return
        waiter.gone = True
        self._backend.unwait(waiter.keys, waiter.level, self.holder)
        i = bisect.bisect_left(self._queue, (waiter.level, waiter.seq))
        if i < len(self._queue) and self._queue[i][2] is waiter:
            del self._queue[i]
        self._key_counts.subtract(waiter.keys)
        line = self._arrivals.get(waiter.level)
        while line and line[0].gone:
            line.popleft()

    def _pump(self) -> float:
        """Admit every waiter that fits; the seconds until the next one might."""
        now = self._clock.monotonic()
        blocked: set[str] = set()
        tried: set[int] = set()
        soonest = math.inf
        while self._queue:
            if len(blocked) >= sum(1 for c in self._key_counts.values() if c > 0):
                break
            w, aged = self._candidate(now, blocked, tried)
            if w is None:
                break
            wait = self._throttle_wait(w.keys, now)
            short = w.keys
            if wait == 0:
                wait, short = self._backend.try_acquire(w.keys, w.tokens, now, w.level, self.holder)
            if wait == 0:
                w.admitted = True
                w.ready.set()
                self._remove(w)
                self._last_aged = aged
                continue
            # Later waiters may not take room on the keys this one is waiting for; on its other
            # keys they may go ahead (a tenant's limit does not hold up other tenants).
            tried.add(w.seq)
            blocked.update(short)
            soonest = min(soonest, wait)
        return soonest

    def _candidate(
        self, now: float, blocked: set[str], tried: set[int]
    ) -> tuple[_Waiter | None, bool]:
        best = next(
            (
                w
                for _, _, w in self._queue
                if w.seq not in tried and not blocked.intersection(w.keys)
            ),
            None,
        )
        if best is None or self._last_aged:
            return best, False
        aged: _Waiter | None = None
        for level, line in self._arrivals.items():
            if level <= best.level or not line:
                continue
            w = line[0]  # the oldest of its level
            if w.gone or w.seq in tried or blocked.intersection(w.keys):
                continue
            if now - w.arrived >= self.policy.aging_s * (level - best.level) and (
                aged is None or w.seq < aged.seq
            ):
                aged = w
        return (aged, True) if aged is not None else (best, False)

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(
                self._tick(), name="corral-rate-limiter"
            )
        elif self._kick is not None:
            self._kick.set()

    async def _tick(self) -> None:
        """Admit waiters when the head of the queue will fit; owned by the limiter."""
        while self._queue:
            wait = self._pump()
            if not self._queue:
                break
            kick = self._kick = asyncio.Event()
            tasks: set[asyncio.Future[object]] = {asyncio.ensure_future(kick.wait())}
            if math.isfinite(wait):
                tasks.add(asyncio.ensure_future(self._clock.sleep(max(wait, 1e-6))))
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()

    async def close(self) -> None:
        """Stop the admission timer (waiters still queued get `rate_limited` at their expiry)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    def _adjust(self, keys: list[str], tokens: int) -> None:
        if tokens:
            self._backend.adjust(keys, tokens, self._clock.monotonic())
            if tokens > 0 and self._queue:
                self._pump()
                if self._kick is not None:
                    self._kick.set()

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
            stats = self._outcomes.get(key)
            if stats is None:
                stats = self._outcomes[key] = _Outcomes()
            stats.add(now, accepted)

    def reject_probability(self, key: str, now: float | None = None) -> float:
        """Client-side adaptive throttling (Google SRE): the share of calls to defer locally."""
        stats = self._outcomes.get(key)
        if stats is None:
            return 0.0
        if now is None:
            now = self._clock.monotonic()
        stats.trim(now - self.policy.adaptive_window_s)
        requests, accepts = stats.requests, stats.accepts
        return max(0.0, (requests - self.policy.adaptive_k * accepts) / (requests + 1))

    def _throttle_wait(self, keys: list[str], now: float) -> float:
        if not self._outcomes:
            return 0.0
        p = max((self.reject_probability(k, now) for k in keys), default=0.0)
        if p > 0 and self._rng.random() < p:
            return 1.0  # deferred locally: try again in a second rather than add to the storm
        return 0.0


class LimiterStep:
    """The guard chain's rate limiter: wait (by the run's priority) until the call fits the
    model's, the provider's and the tenant's limits, then settle the tokens with the actual
    usage and feed back what the provider said (429s, remaining counts)."""

    def __init__(self, limiter: RateLimiter, clock: Clock) -> None:
        self.limiter = limiter
        self.clock = clock
        self._keys: dict[tuple[str, str | None], tuple[list[str], list[str]]] = {}
        """(keys with a limit, the provider's own among them) by (model, tenant), resolved
        once: limits are fixed at start-up."""

    def _keys_for(self, model: str, tenant: str | None) -> tuple[list[str], list[str]]:
        found = self._keys.get((model, tenant))
        if found is None:
            if len(self._keys) >= 10_000:  # many tenants: resolve again as they are used
                self._keys.clear()
            keys = self.limiter.keys_for(
                f"model:{model}",
                f"provider:{model.split(':', 1)[0]}",
                f"tenant:{tenant}" if tenant else None,
            )
            # The provider's rate-limit headers speak for its own keys, not for a tenant's.
            found = self._keys[(model, tenant)] = (
                keys,
                [k for k in keys if not k.startswith("tenant:")],
            )
        return found

    def __call__(self, call: ModelCall, next: Next) -> Awaitable[ModelResponse]:
        keys = self._keys_for(call.model.name, call.run.tenant)
        if not keys[0]:
            return next(call)  # no limit applies to this call: no coroutine level for it
        return self._admitted(call, next, *keys)

    async def _admitted(
        self, call: ModelCall, next: Next, keys: list[str], provider_keys: list[str]
    ) -> ModelResponse:
        limiter, clock = self.limiter, self.clock
        input_tokens = call.input_tokens
        t0 = clock.monotonic()
        ticket = await limiter.acquire(
            keys,
            input_tokens + call.request.max_output_tokens,
            priority=call.run.level,
            input_estimate=input_tokens,
        )
        waited = clock.monotonic() - t0
        if waited > 0:
            await call.emit(
                GuardEvent(kind="queued", detail={"keys": keys, "waited_s": round(waited, 3)})
            )
        try:
            response = await next(call)
        except ProviderError as exc:
            ticket.settle_failed()
            if isinstance(exc, ProviderRateLimitError):
                limiter.record_outcome(keys, accepted=False)
                limiter.penalize(keys, exc.retry_after_s or 1.0)
            raise
        except BaseException:
            if call.sent_at is None:
                ticket.settle(0)
            else:
                ticket.settle_failed()
            raise
        ticket.settle(response.input_tokens + response.output_tokens)
        limiter.record_outcome(keys, accepted=True)
        if response.remaining_requests is not None or response.remaining_tokens is not None:
            for key in provider_keys:
                limiter.observe(
                    key,
                    remaining_requests=response.remaining_requests,
                    remaining_tokens=response.remaining_tokens,
                )
        return response
