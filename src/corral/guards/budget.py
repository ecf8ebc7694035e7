"""Budgets: reserve the worst case before a call, reconcile with what it really cost after.

A run's budget (USD, tokens, model calls, agent turns) and the daily hard limits of its tenant,
user and project are `Account`s. A call reserves its worst case (counted input tokens plus the
maximum output tokens, at the model's price) in every account that applies, all or none, before it
is made; a call that does not fit is refused before it costs anything. Afterwards the reservation
is settled with the actual usage (refund or charge the difference; settling twice changes
nothing). A failed call with no usage keeps only its input estimate (providers often bill input on
errors).

Reservation is synchronous: between checking and deducting there is no `await`, so any number of
parallel calls in one event loop racing for the last dollar never overspend.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType

from corral.clock import Clock
from corral.errors import BudgetExhaustedError
from corral.guards.policy import BudgetPolicy, DailyLimit

__all__ = ["Account", "CallReservation", "Cost", "DailyLedger", "Reservation", "RunBudget"]

log = logging.getLogger(__name__)

_DIMENSIONS = ("usd", "tokens", "model_calls", "agent_turns")
_ZERO = Decimal(0)


class Cost:
    """An amount in every dimension a budget tracks (immutable).

    A plain slotted class rather than a frozen dataclass: several are built per model call, and
    the dataclass's frozen `__init__` costs three times as much.
    """

    __slots__ = ("_items", "agent_turns", "model_calls", "tokens", "usd")

    usd: Decimal
    tokens: int
    model_calls: int
    agent_turns: int

    def __init__(
        self,
        *,
        usd: Decimal = _ZERO,
        tokens: int = 0,
        model_calls: int = 0,
        agent_turns: int = 0,
    ) -> None:
        self.usd = usd
        self.tokens = tokens
        self.model_calls = model_calls
        self.agent_turns = agent_turns
        # Budgets walk a cost's non-zero dimensions several times per call: list them once.
        items: list[tuple[str, Decimal | int]] = []
        if usd:
            items.append(("usd", usd))
        if tokens:
            items.append(("tokens", tokens))
        if model_calls:
            items.append(("model_calls", model_calls))
        if agent_turns:
            items.append(("agent_turns", agent_turns))
        self._items = tuple(items)

    def get(self, dimension: str) -> Decimal | int:
        value: Decimal | int = getattr(self, dimension)
        return value

    def items(self) -> tuple[tuple[str, Decimal | int], ...]:
        """The non-zero dimensions."""
        return self._items

    def __repr__(self) -> str:
        return f"Cost({', '.join(f'{d}={v}' for d, v in self._items)})"


_ONE_TURN = Cost(agent_turns=1)


_Plan = tuple[
    Mapping[str, Decimal | int | None],
    tuple[tuple[str, Decimal | int], ...],
    tuple[str, ...],
]


@functools.lru_cache(maxsize=256)
def _plan(limits: tuple[tuple[str, Decimal | int | None], ...]) -> _Plan:
    """An account's limits (read-only, shared by the accounts with the same limits), the ones a
    model call checks, and the ones `fraction` reads. Every run builds its account from the same
    policy: worked out once."""
    table = dict(limits)
    call_limits = tuple(
        (d, limit) for d, limit in limits if limit is not None and d != "agent_turns"
    )
    return MappingProxyType(table), call_limits, tuple(d for d in ("usd", "tokens") if table[d])


class Account:
    """Limits, committed spend and open reservations for one scope.

    Spend and reservations are attributes per dimension (`usd`, `tokens`, `model_calls`,
    `agent_turns`; reserved: `r_usd`, ...) rather than dicts: every model call checks, reserves
    and settles three of them in each account it touches. `spent` and `reserved` give them as
    dicts for reading."""

    __slots__ = (
        "_call_cap",
        "_call_limits",
        "_shared",
        "_token_cap",
        "_usd_cap",
        "agent_turns",
        "limits",
        "model_calls",
        "r_agent_turns",
        "r_model_calls",
        "r_tokens",
        "r_usd",
        "scope",
        "tokens",
        "usd",
    )

    def __init__(
        self, scope: str, limits: Mapping[str, Decimal | int | None], *, plan: _Plan | None = None
    ) -> None:
        self.scope = scope
        if plan is not None:  # worked out already (`_plan`) for these limits
            self._use(plan)
        else:
            self.limits: Mapping[str, Decimal | int | None] = {}
            self.set_limits(limits)
        self.usd: Decimal = _ZERO
        self.tokens = self.model_calls = self.agent_turns = 0
        self.r_usd: Decimal = _ZERO
        self.r_tokens = self.r_model_calls = self.r_agent_turns = 0

    @property
    def spent(self) -> dict[str, Decimal | int]:
        """Committed spend per dimension (a copy)."""
        return {d: getattr(self, d) for d in _DIMENSIONS}

    @property
    def reserved(self) -> dict[str, Decimal | int]:
        """Open reservations per dimension (a copy)."""
        return {d: getattr(self, f"r_{d}") for d in _DIMENSIONS}

    def _used(self, d: str) -> Decimal | int:
        used: Decimal | int = getattr(self, d) + getattr(self, f"r_{d}")
        return used

    def set_limits(self, limits: Mapping[str, Decimal | int | None]) -> None:
        """Replace the limits of the dimensions named in `limits`."""
        merged = {**self.limits, **limits}
        self._use(_plan(tuple((d, merged.get(d)) for d in _DIMENSIONS)))

    def _use(self, plan: _Plan) -> None:
        self.limits, self._call_limits, self._shared = plan
        # What `call_shortfall` compares, as attributes: it runs before every model call.
        self._usd_cap = plan[0]["usd"]
        self._token_cap = plan[0]["tokens"]
        self._call_cap = plan[0]["model_calls"]

    def call_shortfall(self, usd: Decimal, tokens: int) -> BudgetExhaustedError | None:
        """Like `shortfall` for one model call costing `usd` and `tokens` (the hot path: the
        three dimensions spelled out rather than looped over)."""
        cap = self._usd_cap
        if cap is not None and self.usd + self.r_usd + usd > cap:
            return self._refusal("usd", usd)
        cap = self._token_cap
        if cap is not None and self.tokens + self.r_tokens + tokens > cap:
            return self._refusal("tokens", tokens)
        cap = self._call_cap
        if cap is not None and self.model_calls + self.r_model_calls + 1 > cap:
            return self._refusal("model_calls", 1)
        return None

    def _refusal(self, d: str, need: Decimal | int) -> BudgetExhaustedError:
        limit = self.limits[d]
        assert limit is not None
        return BudgetExhaustedError(
            dimension=d, scope=self.scope, limit=limit, spent=self._used(d), needed=need
        )

    def shortfall(self, cost: Cost) -> BudgetExhaustedError | None:
        """The refusal this cost would get, or None if it fits."""
        for d, need in cost.items():
            limit = self.limits[d]
            if limit is None:
                continue
            used = self._used(d)
            if used + need > limit:
                return BudgetExhaustedError(
                    dimension=d, scope=self.scope, limit=limit, spent=used, needed=need
                )
        return None

    def fraction(self) -> float:
        """The largest used share (committed + reserved) of the USD and token limits."""
        share = 0.0
        for d in self._shared:
            limit = self.limits[d]
            assert limit  # _shared lists only the dimensions with a limit
            share = max(share, float(self._used(d) / limit))
        return share

    def _add(self, prefix: str, cost: Cost, sign: int) -> None:
        """Add `cost` (times `sign`) to the spend (`prefix` "") or the reservations ("r_")."""
        for d, amount in cost.items():
            name = prefix + d
            setattr(self, name, getattr(self, name) + sign * amount)

    def remaining(self) -> dict[str, str | None]:
        """What is left per dimension (None: no limit)."""
        return {
            d: None if limit is None else str(limit - self._used(d))
            for d, limit in self.limits.items()
        }


class Reservation:
    """A reserved worst case in one or more accounts; settle it exactly once."""

    def __init__(self, accounts: list[Account], cost: Cost, input_estimate: Cost) -> None:
        self.accounts = accounts
        self.cost = cost
        self.input_estimate = input_estimate
        self.settled = False
        for account in accounts:
            account._add("r_", cost, +1)

    def settle(self, actual: Cost) -> None:
        """Replace the reservation by the actual cost. A second call changes nothing."""
        if self.settled:
            return
        self.settled = True
        for account in self.accounts:
            account._add("r_", self.cost, -1)
            account._add("", actual, +1)

    def settle_failed(self) -> None:
        """The call failed without reporting usage: keep the input estimate, refund the rest."""
        self.settle(self.input_estimate)


class CallReservation:
    """One model call's reservation (USD, tokens, one call) in one or more accounts.

    `Reservation` for the hot path: a model call's cost always has the same three dimensions,
    so it keeps plain numbers instead of building `Cost` objects to reserve, settle and refund.
    """

    __slots__ = ("accounts", "floor_tokens", "floor_usd", "settled", "tokens", "usd")

    def __init__(
        self,
        accounts: Sequence[Account],
        usd: Decimal,
        tokens: int,
        floor_usd: Decimal,
        floor_tokens: int,
    ) -> None:
        self.accounts = accounts
        self.usd, self.tokens = usd, tokens
        self.floor_usd, self.floor_tokens = floor_usd, floor_tokens
        self.settled = False
        for account in accounts:
            account.r_usd += usd
            account.r_tokens += tokens
            account.r_model_calls += 1

    def _refund(self) -> bool:
        if self.settled:
            return False
        self.settled = True
        for account in self.accounts:
            account.r_usd -= self.usd
            account.r_tokens -= self.tokens
            account.r_model_calls -= 1
        return True

    def settle_usage(self, usd: Decimal, tokens: int) -> None:
        """Replace the reservation by what the call cost. A second call changes nothing."""
        if self.settled:
            return
        self.settled = True
        for account in self.accounts:  # `_refund` and the spend in one pass
            account.r_usd -= self.usd
            account.r_tokens -= self.tokens
            account.r_model_calls -= 1
            account.usd += usd
            account.tokens += tokens
            account.model_calls += 1

    def settle(self, actual: Cost) -> None:
        """Replace the reservation by `actual` (`Cost()` for a call that was never sent)."""
        if self._refund():
            for account in self.accounts:
                account._add("", actual, +1)

    def settle_failed(self) -> None:
        """The call failed without reporting usage: keep the input estimate, refund the rest."""
        self.settle_usage(self.floor_usd, self.floor_tokens)


_RunPlan = tuple[_Plan, Decimal | None, Decimal | None]


@functools.lru_cache(maxsize=64)
def _run_plan(policy: BudgetPolicy) -> _RunPlan:
    """A run account's limits (planned), and the USD and token spend at which calls degrade
    (None: that dimension has no limit). `should_degrade` runs before every model call, so it
    compares against these instead of dividing: the same test as `fraction() >= degrade_at`.
    Every run has the same policy: worked out once."""
    limits = {
        "usd": policy.usd,
        "tokens": policy.tokens,
        "model_calls": policy.model_calls,
        "agent_turns": policy.agent_turns,
    }
    at = Decimal(str(policy.degrade_at))
    return (
        _plan(tuple(limits.items())),
        policy.usd * at if policy.usd else None,
        policy.tokens * at if policy.tokens else None,
    )


_last_plan: tuple[BudgetPolicy, _RunPlan] | None = None


def _plan_of(policy: BudgetPolicy) -> _RunPlan:
    """`_run_plan(policy)`, remembered for the last policy object: an app's runs share one, and
    the lru_cache hashes every field of the policy (Decimals too) on each lookup."""
    global _last_plan
    last = _last_plan
    if last is not None and last[0] is policy:
        return last[1]
    plan = _run_plan(policy)
    _last_plan = (policy, plan)
    return plan


class RunBudget:
    """One run's budget; parallel calls and children share it."""

    def __init__(self, policy: BudgetPolicy, run_id: str = "run") -> None:
        self.policy = policy
        # What `should_degrade` compares (before every model call), as attributes.
        plan, self._degrade_usd, self._degrade_tokens = _plan_of(policy)
        self.account = Account("run", plan[0], plan=plan)
        self._own = [self.account]  # a call's accounts without daily limits (read-only)
        self.run_id = run_id

    def reserve(
        self, cost: Cost, input_estimate: Cost, extra: list[Account] | None = None
    ) -> Reservation:
        """Reserve `cost` here and in `extra` accounts (daily limits), all or none.

        Raises:
            BudgetExhaustedError: some account has no room; nothing was reserved.
        """
        accounts = [self.account, *(extra or [])]
        for account in accounts:
            refusal = account.shortfall(cost)
            if refusal is not None:
                raise refusal
        return Reservation(accounts, cost, input_estimate)

    def reserve_call(
        self,
        usd: Decimal,
        tokens: int,
        floor_usd: Decimal,
        floor_tokens: int,
        extra: Sequence[Account],
    ) -> CallReservation:
        """Reserve one model call's worst case (`usd`, `tokens`) here and in `extra`; the floor
        is what a failed call is charged (its input). All or none.

        Raises:
            BudgetExhaustedError: some account has no room; nothing was reserved.
        """
        accounts = [self.account, *extra] if extra else self._own
        for account in accounts:
            if account._call_limits:
                refusal = account.call_shortfall(usd, tokens)
                if refusal is not None:
                    raise refusal
        return CallReservation(accounts, usd, tokens, floor_usd, floor_tokens)

    def charge(self, actual: Cost) -> None:
        """Count spend without a reservation (a step replayed from the journal after a crash)."""
        self.account._add("", actual, +1)

    def take_turn(self) -> None:
        """One agent call.

        Raises:
            BudgetExhaustedError: the run's agent-turn budget is used up.
        """
        account = self.account
        if account.limits["agent_turns"] is not None:
            refusal = account.shortfall(_ONE_TURN)
            if refusal is not None:
                raise refusal
        account.agent_turns += 1

    @property
    def should_degrade(self) -> bool:
        """Past the degrade fraction: calls should use a cheaper tier."""
        account = self.account
        at = self._degrade_usd
        if at is not None and account.usd + account.r_usd >= at:
            return True
        at = self._degrade_tokens
        return at is not None and account.tokens + account.r_tokens >= at

    @property
    def spent_usd(self) -> Decimal:
        return Decimal(self.account.usd)


class DailyLedger:
    """Hard limits per UTC day for tenants, users and the project; shared by the app's runs.

    A refused reservation pauses a run below `critical` priority until the day rolls over or an
    operator raises the limit (`raise_limit`); a critical run is refused at once.
    """

    def __init__(self, limits: dict[str, DailyLimit], clock: Clock) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._accounts: dict[tuple[str, str], Account] = {}
        self._changed: asyncio.Event | None = None
        self._day_cache: tuple[float, str] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._limits)

    def _day(self) -> str:
        # Re-read the wall clock at most once a second of monotonic time (this runs on every
        # model call; a day boundary is noticed within a second).
        tick = self._clock.monotonic()
        if self._day_cache is not None and 0 <= tick - self._day_cache[0] < 1.0:
            return self._day_cache[1]
        day = self._read_day()
        self._day_cache = (tick, day)
        return day

    def _read_day(self) -> str:
        now = self._clock.now()
        if now.utcoffset():
            now = now.astimezone(UTC)
        return f"{now.year:04d}-{now.month:02d}-{now.day:02d}"

    def _limit_for(self, scope: str) -> DailyLimit | None:
        if scope in self._limits:
            return self._limits[scope]
        kind = scope.split(":", 1)[0]
        return self._limits.get(f"{kind}:*")

    def accounts(self, *, tenant: str | None, user: str | None) -> Sequence[Account]:
        """Today's accounts that apply to a run of `tenant` / `user`."""
        if not self._limits:
            return ()  # no daily limits (the usual case): nothing to build
        scopes = ["project"]
        if tenant:
            scopes.append(f"tenant:{tenant}")
        if user:
            scopes.append(f"user:{user}")
        day = self._day()
        found = []
        for scope in scopes:
            limit = self._limit_for(scope)
            if limit is None:
                continue
            account = self._accounts.get((scope, day))
            if account is None:
                account = Account(scope, {"usd": limit.usd, "tokens": limit.tokens})
                self._accounts[(scope, day)] = account
            found.append(account)
        return found

    def raise_limit(self, scope: str, limit: DailyLimit) -> None:
        """Operator action: a new limit for `scope` today and after; paused runs re-check."""
        self._limits[scope] = limit
        for (s, _day), account in self._accounts.items():
            if s == scope:
                account.set_limits({"usd": limit.usd, "tokens": limit.tokens})
        log.warning("daily limit for %s raised to %s", scope, limit)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def seconds_to_reset(self) -> float:
        """Seconds until the next UTC midnight."""
        now = self._clock.now().astimezone(UTC)
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
        return max(0.0, (midnight - now).total_seconds())

    async def wait_for_room(self) -> None:
        """Wait until the day rolls over or a limit is raised, whichever comes first."""
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        sleeper = asyncio.ensure_future(self._clock.sleep(self.seconds_to_reset() + 0.001))
        waiter = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()
