"""Guard state in this process: the in-memory backends (one process, embedded mode).

Each class implements a state protocol that lives beside its guard, so a shared backend
(Redis, PostgreSQL) can replace it without touching the guard:

- `MemoryLimiterBackend`: `corral.guards.limiter.LimiterBackend` (token buckets per key).
- `MemoryCache`: `corral.guards.cache.ResponseCache` (the exact response cache).
- `MemoryCooldowns`: `corral.observe.alerts.Cooldowns` (alert cooldowns).
- `MemoryFlags`: `corral.guards.kill.FlagStore` (the kill switch's halts and pauses).
- `MemoryRunAccounts`, `MemoryAccount`: `corral.guards.budget.RunAccounts`, `RunAccount` (a
  run's budget).
- `MemoryBudgetStore`: `corral.guards.budget.BudgetStore` (daily budget accounts).
- `MemoryBreakerStore`: `corral.guards.breaker.BreakerStore` (breaker transitions).

In one event loop every method here is atomic (no `await` inside), which is what each
protocol's contract asks of a shared backend across processes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from corral.errors import BudgetExhaustedError
from corral.guards.budget import Cost, Limits
from corral.guards.limiter import FOREIGN_POLL_S
from corral.guards.policy import RateLimit

_ZERO = Decimal(0)

if TYPE_CHECKING:
    from corral.contracts import RunId
    from corral.guards.breaker import BreakerRecord
    from corral.guards.kill import Flag

__all__ = [
    "MemoryAccount",
    "MemoryBreakerStore",
    "MemoryBudgetStore",
    "MemoryCache",
    "MemoryCooldowns",
    "MemoryFlags",
    "MemoryLimiterBackend",
    "MemoryRunAccounts",
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
        self._waiting: dict[str, Counter[tuple[int, str]]] = {}
        """Registered waiters per key: (level, holder) -> how many."""

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

    def try_acquire(
        self, keys: list[str], tokens: int, now: float, priority: int, holder: str
    ) -> tuple[float, list[str]]:
        if self._waiting:  # only while some limiter has callers queued
            ahead = [k for k in keys if self._ahead(k, priority, holder)]
            if ahead:
                return FOREIGN_POLL_S, ahead
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

    def _ahead(self, key: str, priority: int, holder: str) -> bool:
        """Whether another holder has a better-priority waiter on `key`."""
        found = self._waiting.get(key)
        return found is not None and any(
            level < priority and other != holder for level, other in found
        )

    def wait(self, keys: list[str], priority: int, holder: str, now: float) -> None:
        for k in keys:
            self._waiting.setdefault(k, Counter())[(priority, holder)] += 1

    def unwait(self, keys: list[str], priority: int, holder: str) -> None:
        for k in keys:
            found = self._waiting.get(k)
            if found is None:
                continue
            found[(priority, holder)] -= 1
            if found[(priority, holder)] <= 0:
                del found[(priority, holder)]
            if not found:
                del self._waiting[k]

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


class MemoryAccount:
    """Limits, committed spend and open reservations for one scope, in this process: a run's
    `RunAccount`, and each daily account of a `MemoryBudgetStore`.

    Spend (`usd`, `tokens`, `model_calls`, `agent_turns`) and reservations (`r_usd`,
    `r_tokens`, `r_model_calls`) are plain attributes rather than dicts: every model call checks,
    reserves and settles them. `spent` and `reserved` give them as dicts for reading.
    """

    __slots__ = (
        "agent_turns",
        "limits",
        "model_calls",
        "r_model_calls",
        "r_tokens",
        "r_usd",
        "scope",
        "tokens",
        "usd",
    )

    def __init__(self, scope: str, limits: Limits) -> None:
        self.scope = scope
        self.limits = limits
        self.usd: Decimal = _ZERO
        self.tokens = self.model_calls = self.agent_turns = 0
        self.r_usd: Decimal = _ZERO
        self.r_tokens = self.r_model_calls = 0

    @property
    def spent(self) -> dict[str, Decimal | int]:
        return {
            "usd": self.usd,
            "tokens": self.tokens,
            "model_calls": self.model_calls,
            "agent_turns": self.agent_turns,
        }

    @property
    def reserved(self) -> dict[str, Decimal | int]:
        return {
            "usd": self.r_usd,
            "tokens": self.r_tokens,
            "model_calls": self.r_model_calls,
            "agent_turns": 0,
        }

    def used(self) -> tuple[Decimal, int]:
        return self.usd + self.r_usd, self.tokens + self.r_tokens

    def shortfall(self, usd: Decimal, tokens: int) -> BudgetExhaustedError | None:
        """The refusal one more model call costing `usd` and `tokens` would get, or None."""
        limits = self.limits
        cap_usd = limits.usd
        if cap_usd is not None and self.usd + self.r_usd + usd > cap_usd:
            return self._refusal("usd", self.usd + self.r_usd, usd)
        cap = limits.tokens
        if cap is not None and self.tokens + self.r_tokens + tokens > cap:
            return self._refusal("tokens", self.tokens + self.r_tokens, tokens)
        cap = limits.model_calls
        if cap is not None and self.model_calls + self.r_model_calls + 1 > cap:
            return self._refusal("model_calls", self.model_calls + self.r_model_calls, 1)
        return None

    def _refusal(
        self, dimension: str, used: Decimal | int, need: Decimal | int
    ) -> BudgetExhaustedError:
        limit = self.limits.of(dimension)
        assert limit is not None
        return BudgetExhaustedError(
            dimension=dimension, scope=self.scope, limit=limit, spent=used, needed=need
        )

    def reserve(self, usd: Decimal, tokens: int) -> BudgetExhaustedError | None:
        refusal = self.shortfall(usd, tokens)
        if refusal is None:  # `hold`, inlined: every model call of every run passes here
            self.r_usd += usd
            self.r_tokens += tokens
            self.r_model_calls += 1
        return refusal

    def hold(self, usd: Decimal, tokens: int) -> None:
        """Hold a call's worst case without checking (the store checked every account first)."""
        self.r_usd += usd
        self.r_tokens += tokens
        self.r_model_calls += 1

    def settle(self, held_usd: Decimal, held_tokens: int, usd: Decimal, tokens: int) -> None:
        self.r_usd -= held_usd  # the refund and the spend in one pass
        self.r_tokens -= held_tokens
        self.r_model_calls -= 1
        self.usd += usd
        self.tokens += tokens
        self.model_calls += 1

    def release(self, held_usd: Decimal, held_tokens: int) -> None:
        self.r_usd -= held_usd
        self.r_tokens -= held_tokens
        self.r_model_calls -= 1

    def take_turn(self) -> BudgetExhaustedError | None:
        cap = self.limits.agent_turns
        if cap is not None and self.agent_turns + 1 > cap:
            return self._refusal("agent_turns", self.agent_turns, 1)
        self.agent_turns += 1
        return None

    def charge(self, cost: Cost) -> None:
        self.usd += cost.usd
        self.tokens += cost.tokens
        self.model_calls += cost.model_calls
        self.agent_turns += cost.agent_turns


class MemoryRunAccounts:
    """Runs' accounts in this process: each run's lives with its budget, nothing is kept here."""

    def open(self, run_id: RunId, limits: Limits) -> MemoryAccount:
        return MemoryAccount("run", limits)


class MemoryBudgetStore:
    """Daily budget accounts in this process."""

    def __init__(self) -> None:
        self._accounts: dict[str, MemoryAccount] = {}

    def open(self, key: str, scope: str, limits: Limits) -> None:
        if key not in self._accounts:
            self._accounts[key] = MemoryAccount(scope, limits)

    def set_limits(self, key: str, limits: Limits) -> None:
        self._accounts[key].limits = limits

    def account(self, key: str) -> MemoryAccount:
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
            account.hold(usd, tokens)
        return None

    def settle(
        self, keys: Sequence[str], held_usd: Decimal, held_tokens: int, usd: Decimal, tokens: int
    ) -> None:
        for k in keys:
            self._accounts[k].settle(held_usd, held_tokens, usd, tokens)

    def release(self, keys: Sequence[str], held_usd: Decimal, held_tokens: int) -> None:
        for k in keys:
            self._accounts[k].release(held_usd, held_tokens)

    def charge(self, key: str, cost: Cost) -> None:
        self._accounts[key].charge(cost)


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
