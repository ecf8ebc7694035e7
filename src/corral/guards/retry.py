"""Retries: what may be retried, how long to wait, and a per-process retry budget.

Only errors a retry can fix are retried (429, 5xx, timeouts, connection errors: the adapter sets
`ProviderError.retryable`); client errors, content refusals and Corral's own refusals never are.
The backoff is full jitter (uniform(0, min(cap, base * 2**n))) with the provider's Retry-After as
a floor. The retry budget keeps retries under a share of requests over a sliding window, so an
outage does not multiply the load on a provider that is already failing.

The retries' whole reach: `RetryStep` (the guard chain, per model of the tier's chain) and the
metrics that read the retry budget.
"""

from __future__ import annotations

import math
import random
from collections import deque

from corral.clock import Clock
from corral.errors import ProviderError, ProviderRateLimitError
from corral.guards.policy import RetryPolicy
from corral.guards.step import GuardEvent, ModelCall, Next
from corral.model import ModelResponse

__all__ = ["RetryBudget", "RetryStep", "backoff_s", "is_retryable"]


def is_retryable(error: BaseException) -> bool:
    """Whether trying the same call again can succeed."""
    return isinstance(error, ProviderError) and error.retryable


def backoff_s(policy: RetryPolicy, retry: int, rng: random.Random, error: BaseException) -> float:
    """Seconds to wait before retry number `retry` (1 = the first retry)."""
    ceiling = min(policy.max_delay_s, policy.base_delay_s * 2**retry)
    delay = rng.uniform(0, ceiling)
    if isinstance(error, ProviderRateLimitError) and error.retry_after_s is not None:
        delay = max(delay, error.retry_after_s)
    return delay


class RetryBudget:
    """Retries allowed: at most `max(min_retries, ratio * requests)` per sliding window.

    Requests are counted in one-second buckets (every model call records one, so a timestamp
    per request would grow without bound in a process that never retries); retries, which are
    rare and bounded by the budget, keep their timestamps.
    """

    def __init__(self, policy: RetryPolicy, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self._buckets: deque[tuple[int, int]] = deque()  # closed seconds: (second, requests)
        self._request_count = 0  # the closed buckets' requests
        # The open second, counted in attributes: every model call adds one here.
        self._second = 0
        self._until = -math.inf  # where the open second ends (no second open yet)
        self._open = 0
        self._retries: deque[float] = deque()
        self.denied = 0
        """Retries refused because the budget was spent (for metrics)."""

    def _trim(self, now: float) -> None:
        horizon = now - self.policy.budget_window_s
        buckets = self._buckets
        while buckets and buckets[0][0] <= horizon:
            self._request_count -= buckets.popleft()[1]
        if self._open and self._second <= horizon:
            self._open = 0  # the open second slid out of the window too
        while self._retries and self._retries[0] <= horizon:
            self._retries.popleft()

    def record_request(self, now: float | None = None) -> None:
        """A first attempt was made (`now`: the clock's monotonic time, if the caller has it)."""
        if now is None:
            now = self._clock.monotonic()
        if self._second <= now < self._until:  # the common case: the same second
            self._open += 1
            return
        if self._open:  # close the open second
            self._buckets.append((self._second, self._open))
            self._request_count += self._open
        self._second = second = math.floor(now)
        self._until = second + 1
        self._open = 1
        self._trim(now)

    def _requests(self, now: float) -> int:
        self._trim(now)
        return self._request_count + self._open

    def try_retry(self) -> bool:
        """Take one retry from the budget; False when none is left."""
        now = self._clock.monotonic()
        allowed = max(
            self.policy.budget_min_retries, self.policy.budget_ratio * self._requests(now)
        )
        if len(self._retries) + 1 > allowed:
            self.denied += 1
            return False
        self._retries.append(now)
        return True

    @property
    def counts(self) -> tuple[int, int]:
        """(requests, retries) in the current window."""
        return self._requests(self._clock.monotonic()), len(self._retries)


class RetryStep:
    """The guard chain's retries of one model: retryable errors only, while the policy's
    attempts and the process's retry budget last, with full-jitter backoff on the clock."""

    def __init__(self, budget: RetryBudget, clock: Clock, rng: random.Random) -> None:
        self.budget = budget
        self.policy = budget.policy
        self.clock = clock
        self.rng = rng

    async def __call__(self, call: ModelCall, next: Next) -> ModelResponse:
        self.budget.record_request()
        call.attempt = 1
        call.give_up = False
        call.sent_at = None
        try:
            return await next(call)
        except ProviderError as exc:
            failure = exc
        while True:
            await self._before_retry(call, failure)
            call.attempt += 1
            call.sent_at = None
            try:
                return await next(call)
            except ProviderError as again:
                failure = again

    async def _before_retry(self, call: ModelCall, failure: ProviderError) -> None:
        """Wait out the backoff before the next attempt, or raise `failure` (no retry)."""
        attempt = call.attempt
        if call.give_up or not is_retryable(failure) or attempt >= self.policy.max_attempts:
            raise failure
        if not self.budget.try_retry():
            await call.emit(
                GuardEvent(
                    kind="retry_denied",
                    detail={"model": call.model.name, "attempt": attempt, "error": failure.code},
                )
            )
            raise failure
        delay = backoff_s(self.policy, attempt, self.rng, failure)
        await call.emit(
            GuardEvent(
                kind="retry",
                detail={
                    "model": call.model.name,
                    "attempt": attempt + 1,
                    "delay_s": round(delay, 3),
                    "error": failure.code,
                    "status": failure.status,
                },
            )
        )
        await self.clock.sleep(delay)
