"""Guard state in this process: the in-memory backends (one process, embedded mode).

Each class implements a state protocol that lives beside its guard, so a shared backend
(Redis, PostgreSQL) can replace it without touching the guard:

- `MemoryLimiterBackend`: `corral.guards.limiter.LimiterBackend` (token buckets per key).
- `MemoryCache`: `corral.guards.cache.ResponseCache` (the exact response cache).
- `MemoryCooldowns`: `corral.observe.alerts.Cooldowns` (alert cooldowns).
- `MemoryFlags`: `corral.guards.kill.FlagStore` (the kill switch's halts and pauses).
- `MemoryBudgetStore`: `corral.guards.budget.BudgetStore` (daily budget accounts).
- `MemoryBreakerStore`: `corral.guards.breaker.BreakerStore` (breaker transitions).

In one event loop every method here is atomic (no `await` inside), which is what each
protocol's contract asks of a shared backend across processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from corral.errors import BudgetExhaustedError
from corral.guards.budget import Account, Limits
from corral.guards.policy import RateLimit

if TYPE_CHECKING:
    from corral.guards.breaker import BreakerRecord
    from corral.guards.kill import Flag

__all__ = [
    "MemoryBreakerStore",
    "MemoryBudgetStore",
    "MemoryCache",
    "MemoryCooldowns",
    "MemoryFlags",
    "MemoryLimiterBackend",
]


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


class MemoryCache:
    """An in-process cache (tests, single short-lived processes)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    async def cache_get(self, namespace: str, key: str, now: float) -> dict[str, Any] | None:
        found = self._entries.get((namespace, key))
        if found is None or found[0] <= now:
            return None
        return found[1]

    async def cache_put(
        self, namespace: str, key: str, value: dict[str, Any], *, now: float, ttl_s: float
    ) -> None:
        self._entries[(namespace, key)] = (now + ttl_s, value)


class MemoryCooldowns:
    """Alert cooldowns in this process: a key claimed at `at` cannot be claimed again until
    `cooldown_s` later."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def claim(self, key: str, *, at: float, cooldown_s: float) -> bool:
        until = self._until.get(key)
        if until is not None and at < until:
            return False
        self._until[key] = at + cooldown_s
        return True


class MemoryFlags:
    """The kill switch's flags in this process."""

    def __init__(self) -> None:
        self._flags: dict[Flag, str] = {}
        self.version = 0

    def set(self, flag: Flag, reason: str) -> int:
        self._flags[flag] = reason
        self.version += 1
        return self.version

    def clear(self, flag: Flag) -> int:
        self._flags.pop(flag, None)
        self.version += 1
        return self.version

    def flags(self) -> tuple[int, dict[Flag, str]]:
        return self.version, dict(self._flags)


class MemoryBudgetStore:
    """Daily budget accounts in this process."""

    def __init__(self) -> None:
        self._accounts: dict[str, Account] = {}

    def open(self, key: str, scope: str, limits: Limits) -> None:
        if key not in self._accounts:
            self._accounts[key] = Account(scope, limits)

    def set_limits(self, key: str, limits: Limits) -> None:
        self._accounts[key].limits = limits

    def account(self, key: str) -> Account:
        """The account itself (reports and tests)."""
        return self._accounts[key]

    def reserve(
        self, keys: Sequence[str], usd: Decimal, tokens: int
    ) -> BudgetExhaustedError | None:
        accounts = [self._accounts[k] for k in keys]
        for account in accounts:
            refusal = account.shortfall(usd, tokens)
            if refusal is not None:
                return refusal
        for account in accounts:
            account.r_usd += usd
            account.r_tokens += tokens
            account.r_model_calls += 1
        return None

    def settle(
        self, keys: Sequence[str], held_usd: Decimal, held_tokens: int, usd: Decimal, tokens: int
    ) -> None:
        for k in keys:
            account = self._accounts[k]
            account.r_usd -= held_usd
            account.r_tokens -= held_tokens
            account.r_model_calls -= 1
            account.usd += usd
            account.tokens += tokens
            account.model_calls += 1

    def release(self, keys: Sequence[str], held_usd: Decimal, held_tokens: int) -> None:
        for k in keys:
            account = self._accounts[k]
            account.r_usd -= held_usd
            account.r_tokens -= held_tokens
            account.r_model_calls -= 1


class MemoryBreakerStore:
    """Breaker transitions in this process."""

    def __init__(self) -> None:
        self._records: dict[str, BreakerRecord] = {}

    def get(self, key: str) -> BreakerRecord | None:
        return self._records.get(key)

    def compare_and_set(self, key: str, generation: int, record: BreakerRecord) -> BreakerRecord:
        current = self._records.get(key)
        if (0 if current is None else current.generation) != generation:
            assert current is not None
            return current
        self._records[key] = record
        return record
