"""Budgets: reserve the worst case before a call, reconcile with what it really cost after.

A run's budget (USD, tokens, model calls, agent turns) lives in a `RunAccount`; the daily hard
limits of its tenant, user and project are accounts in a `BudgetStore`. A call reserves its worst
case (counted input tokens plus the maximum output tokens, at the model's price) in every account
that applies, all or none, before it is made; a call that does not fit is refused before it
costs anything. Afterwards the reservation is settled with the actual usage (refund or charge the
difference; settling twice changes nothing). A failed call with no usage keeps only its input
estimate (providers often bill input on errors).

Reservation is synchronous: between checking and deducting there is no `await`, so any number of
parallel calls in one event loop racing for the last dollar never overspend.

The budget's whole reach: `BudgetStep` (the guard chain: reserve, settle, pause on a daily
limit), `RunBudget.take_turn` and `should_degrade` (the agent call: one turn per agent call, a
cheaper tier past the degrade fraction), `RunBudget.charge` (a replayed step's recorded spend)
and `DailyLedger.raise_limit` (operators, through `App.control`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from corral.clock import Clock
from corral.contracts import RunId
from corral.errors import BudgetExhaustedError
from corral.guards.policy import BudgetPolicy, DailyLimit
from corral.guards.step import GuardEvent, ModelCall, Next
from corral.model import ModelResponse, Pricer

__all__ = [
    "BudgetStep",
    "BudgetStore",
    "Cost",
    "DailyAccounts",
    "DailyLedger",
    "InputRatios",
    "Limits",
    "Reservation",
    "RunAccount",
    "RunAccounts",
    "RunBudget",
]

log = logging.getLogger(__name__)

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cost:
    """An amount in every dimension a budget tracks (spend recorded without a reservation)."""

    usd: Decimal = _ZERO
    tokens: int = 0
    model_calls: int = 0
    agent_turns: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """An account's limits per dimension (None: no limit)."""

    usd: Decimal | None = None
    tokens: int | None = None
    model_calls: int | None = None
    agent_turns: int | None = None

    def of(self, dimension: str) -> Decimal | int | None:
        """The limit of `dimension` by name (errors and reports only)."""
        return {
            "usd": self.usd,
            "tokens": self.tokens,
            "model_calls": self.model_calls,
            "agent_turns": self.agent_turns,
        }[dimension]


class RunAccount(Protocol):
    """One run's budget state: limits, committed spend and open reservations (USD, tokens, model
    calls, agent turns). Parallel calls and child workflows of the run share it.

    Contract (what a shared implementation must keep across processes): `reserve` checks the
    room for one more model call of `usd` and `tokens` and holds it in one atomic step, returning
    the refusal instead when it does not fit (nothing held); `settle` replaces a hold by what the
    call cost and `release` gives it back, each exactly as the hold was made (the caller settles
    once); `take_turn` counts one agent turn or returns the refusal, atomically; `charge` adds
    spend that had no hold. Reads (`used`, `spent`, `reserved`) may be a moment stale.
    Synchronous for the reason `BudgetStore` gives. `corral.state.memory.MemoryAccount` is the
    in-process implementation; `tests/state/test_run_account.py` is the contract.
    """

    limits: Limits

    def reserve(self, usd: Decimal, tokens: int) -> BudgetExhaustedError | None:
        """Hold one call's worst case: the refusal, or None."""
        ...

    def settle(self, held_usd: Decimal, held_tokens: int, usd: Decimal, tokens: int) -> None:
        """Replace a hold by what the call cost."""
        ...

    def release(self, held_usd: Decimal, held_tokens: int) -> None:
        """Give a hold back."""
        ...

    def take_turn(self) -> BudgetExhaustedError | None:
        """Count one agent turn: the refusal, or None."""
        ...

    def charge(self, cost: Cost) -> None:
        """Add spend that had no reservation."""
        ...

    def used(self) -> tuple[Decimal, int]:
        """USD and tokens committed plus reserved (the degrade test, on every agent call)."""
        ...

    @property
    def spent(self) -> dict[str, Decimal | int]:
        """Committed spend per dimension (a copy)."""
        ...

    @property
    def reserved(self) -> dict[str, Decimal | int]:
        """Open reservations per dimension (a copy)."""
        ...


class RunAccounts(Protocol):
    """Where runs' accounts live. `open` gives a run its account; a shared implementation keys
    it by run id, so a run resumed by another process finds the spend it already made.
    `corral.state.memory.MemoryRunAccounts` is the in-process implementation."""

    def open(self, run_id: RunId, limits: Limits) -> RunAccount:
        """The account of `run_id` with `limits` (created if absent)."""
        ...


class BudgetStore(Protocol):
    """Shared budget accounts (the daily limits of tenants, users and the project): limits,
    spend and open reservations, by key (`<scope>@<day>`).

    Contract: `reserve` checks every key's room for one more model call of `usd` and `tokens`
    and holds it on all of them, or on none, returning the refusal (atomic across processes:
    one Lua script in Redis, one transaction with row locks in SQL). `settle` replaces a hold by
    what the call cost and `release` gives it back, each exactly as the hold was made (the
    caller settles once). `open` creates an account if it is absent (idempotent); `set_limits`
    replaces an account's limits. Synchronous: the in-memory store costs no coroutine per call;
    a shared store is reached in its own round trip per call with daily limits (a store that
    must await gets an async variant of the budget step; the contract is the same).
    `tests/state/test_budget_store.py` is the contract, parametrized over backends.
    """

    def open(self, key: str, scope: str, limits: Limits) -> None:
        """Create the account `key` of `scope` with `limits`, unless it exists."""
        ...

    def set_limits(self, key: str, limits: Limits) -> None:
        """New limits for an existing account."""
        ...

    def reserve(
        self, keys: Sequence[str], usd: Decimal, tokens: int
    ) -> BudgetExhaustedError | None:
        """Hold one call's worst case on every key, or on none: the refusal, or None."""
        ...

    def settle(
        self, keys: Sequence[str], held_usd: Decimal, held_tokens: int, usd: Decimal, tokens: int
    ) -> None:
        """Replace a hold by what the call cost."""
        ...

    def release(self, keys: Sequence[str], held_usd: Decimal, held_tokens: int) -> None:
        """Give a hold back."""
        ...

    def charge(self, key: str, cost: Cost) -> None:
        """Add spend that had no hold (today's spend found in the run database at start-up)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DailyAccounts:
    """Today's shared accounts that apply to one run (`DailyLedger.accounts`)."""

    store: BudgetStore
    keys: tuple[str, ...]


class Reservation:
    """One model call's worst case (USD, tokens, one call) held in the run's account and in
    today's shared accounts until the call is settled; settle it once (a second settle
    changes nothing). Settling wakes calls of the run waiting for room (`RunBudget.settled`).

    Args:
        budget: The run's budget (the hold is already made in its account).
        usd: The worst case in USD.
        tokens: The worst case in tokens (input plus the maximum output).
        floor_usd: What a call that failed after it was sent is charged (its input).
        floor_tokens: The same in tokens.
        daily: The shared accounts the store holds it on too (None: no daily limit applies).
    """

    __slots__ = ("budget", "daily", "floor_tokens", "floor_usd", "settled", "tokens", "usd")

    def __init__(
        self,
        budget: RunBudget,
        usd: Decimal,
        tokens: int,
        floor_usd: Decimal,
        floor_tokens: int,
        daily: DailyAccounts | None,
    ) -> None:
        self.budget = budget
        self.usd, self.tokens = usd, tokens
        self.floor_usd, self.floor_tokens = floor_usd, floor_tokens
        self.daily = daily
        self.settled = False

    def settle(self, usd: Decimal, tokens: int) -> None:
        """The call was made and cost `usd` and `tokens`: replace the reservation by that."""
        if self.settled:
            return
        self.settled = True
        budget = self.budget
        budget.account.settle(self.usd, self.tokens, usd, tokens)
        if self.daily is not None:
            self.daily.store.settle(self.daily.keys, self.usd, self.tokens, usd, tokens)
        if budget.waiting:
            budget.wake()

    def settle_failed(self) -> None:
        """The call failed after it was sent, without usage: keep the input, refund the rest."""
        self.settle(self.floor_usd, self.floor_tokens)

    def release(self) -> None:
        """The call was never sent: give the whole reservation back."""
        if self.settled:
            return
        self.settled = True
        budget = self.budget
        budget.account.release(self.usd, self.tokens)
        if self.daily is not None:
            self.daily.store.release(self.daily.keys, self.usd, self.tokens)
        if budget.waiting:
            budget.wake()


@functools.lru_cache(maxsize=64)
def _run_limits(policy: BudgetPolicy) -> tuple[Limits, Decimal | None, Decimal | None]:
    """A run account's limits and the USD and token spend at which calls degrade (None: that
    dimension has no limit). Every run of an app has the same policy: worked out once.
    `should_degrade` compares against these instead of dividing (the same test as
    `fraction() >= degrade_at`)."""
    at = Decimal(str(policy.degrade_at))
    limits = Limits(
        usd=policy.usd,
        tokens=policy.tokens,
        model_calls=policy.model_calls,
        agent_turns=policy.agent_turns,
    )
    return (
        limits,
        policy.usd * at if policy.usd else None,
        policy.tokens * at if policy.tokens else None,
    )


def memory_run_accounts() -> RunAccounts:
    """The in-process default for runs' accounts (`corral.state.memory`: stdlib only, so the
    core may build it)."""
    from corral.state.memory import MemoryRunAccounts

    return MemoryRunAccounts()


_NO_RUN = RunId("run")
"""The run id of a budget made outside a run (tests, benchmarks)."""


class RunBudget:
    """One run's budget; parallel calls and children share it.

    Args:
        policy: The run's limits and degrade fraction.
        run_id: The run the budget belongs to.
        accounts: Where the run's account lives (default: in this process).
    """

    def __init__(
        self, policy: BudgetPolicy, run_id: RunId = _NO_RUN, accounts: RunAccounts | None = None
    ) -> None:
        self.policy = policy
        limits, self._degrade_usd, self._degrade_tokens = _run_limits(policy)
        if accounts is None:
            accounts = memory_run_accounts()
        self.account: RunAccount = accounts.open(run_id, limits)
        self.run_id = run_id
        self.waiting: list[asyncio.Future[None]] = []
        """Calls waiting for one of the run's reservations to settle (`settled`)."""

    def reserve(
        self,
        usd: Decimal,
        tokens: int,
        *,
        floor_usd: Decimal = _ZERO,
        floor_tokens: int = 0,
        daily: DailyAccounts | None = None,
    ) -> Reservation:
        """Reserve one model call's worst case (`usd`, `tokens`) here and in the `daily`
        accounts, all or none; the floor is what a failed call is charged (its input).

        Raises:
            BudgetExhaustedError: some account has no room; nothing was reserved.
        """
        account = self.account
        refusal = account.reserve(usd, tokens)
        if refusal is not None:
            raise refusal
        if daily is not None:
            refusal = daily.store.reserve(daily.keys, usd, tokens)
            if refusal is not None:
                account.release(usd, tokens)
                raise refusal
        return Reservation(self, usd, tokens, floor_usd, floor_tokens, daily)

    @property
    def in_flight(self) -> int:
        """The run's calls holding a reservation now."""
        return int(self.account.reserved["model_calls"])

    async def settled(self) -> None:
        """Wait until one of the run's reservations settles or is released (a call that did
        not fit may fit once a call in flight costs less than its worst case). Each call in
        flight is bounded by its timeout, so the wait is too."""
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self.waiting:
                self.waiting.remove(waiter)

    def wake(self) -> None:
        """A reservation settled: every waiting call tries again."""
        waiting, self.waiting = self.waiting, []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)

    def charge(self, actual: Cost) -> None:
        """Count spend without a reservation (a step replayed from the journal after a crash)."""
        self.account.charge(actual)

    def take_turn(self) -> None:
        """One agent call.

        Raises:
            BudgetExhaustedError: the run's agent-turn budget is used up.
        """
        refusal = self.account.take_turn()
        if refusal is not None:
            raise refusal

    @property
    def should_degrade(self) -> bool:
        """Past the degrade fraction: calls should use a cheaper tier."""
        at_usd, at_tokens = self._degrade_usd, self._degrade_tokens
        if at_usd is None and at_tokens is None:
            return False  # no USD or token limit: nothing to degrade against
        usd, tokens = self.account.used()
        return (at_usd is not None and usd >= at_usd) or (
            at_tokens is not None and tokens >= at_tokens
        )

    def fraction(self) -> float:
        """The largest used share (committed + reserved) of the USD and token limits."""
        limits = self.account.limits
        usd, tokens = self.account.used()
        share = float(usd / limits.usd) if limits.usd else 0.0
        if limits.tokens:
            share = max(share, tokens / limits.tokens)
        return share

    def remaining(self) -> dict[str, str | None]:
        """What is left per dimension, committed and reserved spend counted (None: no limit)."""
        limits, spent, reserved = self.account.limits, self.account.spent, self.account.reserved
        return {
            d: None if (limit := limits.of(d)) is None else str(limit - spent[d] - reserved[d])
            for d in spent
        }


class DailyLedger:
    """Hard limits per UTC day for tenants, users and the project; shared by the app's runs.

    A refused reservation pauses a run below `critical` priority until the day rolls over or an
    operator raises the limit (`raise_limit`); a critical run is refused at once.
    """

    def __init__(
        self, limits: dict[str, DailyLimit], clock: Clock, store: BudgetStore | None = None
    ) -> None:
        self._limits = dict(limits)
        self._clock = clock
        if store is None:
            # The in-process default: stdlib only, so the core may build it.
            from corral.state.memory import MemoryBudgetStore

            store = MemoryBudgetStore()
        self.store = store
        """Where the accounts live (shared by every process when the store is)."""
        self._opened: dict[str, str] = {}
        """Accounts this process has opened in the store: key -> scope."""
        self._carried: tuple[str, dict[str, Cost]] | None = None
        """(day, spend by scope) made before this process opened (`carry_over`)."""
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

    def accounts(self, *, tenant: str | None, user: str | None) -> DailyAccounts | None:
        """Today's accounts that apply to a run of `tenant` / `user` (None: no daily limit)."""
        if not self._limits:
            return None  # no daily limits (the usual case): nothing to build
        scopes = ["project"]
        if tenant:
            scopes.append(f"tenant:{tenant}")
        if user:
            scopes.append(f"user:{user}")
        day = self._day()
        keys = []
        for scope in scopes:
            limit = self._limit_for(scope)
            if limit is None:
                continue
            key = f"{scope}@{day}"
            if key not in self._opened:
                self.store.open(key, scope, Limits(usd=limit.usd, tokens=limit.tokens))
                self._opened[key] = scope
                if self._carried is not None and self._carried[0] == day:
                    earlier = self._carried[1].get(scope)
                    if earlier is not None:
                        self.store.charge(key, earlier)
            keys.append(key)
        return DailyAccounts(store=self.store, keys=tuple(keys)) if keys else None

    def today_start(self) -> datetime:
        """The start (UTC midnight) of the day the limits count now."""
        now = self._clock.now().astimezone(UTC)
        return datetime(now.year, now.month, now.day, tzinfo=UTC)

    def carry_over(self, spent: Mapping[str, Cost]) -> None:
        """Spend made today before this process opened, by scope (`project`, `tenant:<id>`,
        `user:<id>`; the app reads it from the run database when it opens): each scope's
        account starts from it, so a restart does not reset a daily limit. A store shared by
        every process already holds it; this is for the in-process one."""
        self._carried = (self._read_day(), dict(spent))

    def raise_limit(self, scope: str, limit: DailyLimit) -> None:
        """Operator action: a new limit for `scope` today and after; paused runs re-check."""
        self._limits[scope] = limit
        for key, opened in self._opened.items():
            # `tenant:*` governs every tenant without a limit of its own.
            found = self._limit_for(opened)
            if found is not None:
                self.store.set_limits(key, Limits(usd=found.usd, tokens=found.tokens))
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


class InputRatios:
    """Each model's ratio of the input tokens it counts to Corral's estimate
    (`estimate_input_tokens`), learned from its answers: tokenizers differ (a model that counts
    4x the estimate billed a $1 run $2.04 before this).

    Until a model has answered once, its calls go one at a time (the others wait for the first
    answer, which teaches the ratio): so at most one call per model is ever reserved on an
    unlearned estimate. The ratio follows a rise at once and a fall slowly, so reservations stay
    on the safe side of what the model counts.
    """

    def __init__(self) -> None:
        self._ratio: dict[str, float] = {}
        self._learning: dict[str, asyncio.Future[None]] = {}

    def of(self, model: str) -> float | None:
        """The learned ratio of `model` (None: it has not answered yet)."""
        return self._ratio.get(model)

    async def first_call(self, model: str) -> bool:
        """Wait while another call is teaching `model`'s ratio; True when this call is to
        teach it (the ratio is still unknown), False once it is known."""
        while model not in self._ratio:
            teacher = self._learning.get(model)
            if teacher is None:
                self._learning[model] = asyncio.get_running_loop().create_future()
                return True
            await asyncio.shield(teacher)
        return False

    def learned(self, model: str, estimate: int, counted: int | None) -> None:
        """An answer of `model` counted `counted` input tokens for an estimate of `estimate`
        (None or 0: it reported no usage, so the estimate stands)."""
        if counted and estimate > 0:
            seen = counted / estimate
            was = self._ratio.get(model)
            self._ratio[model] = seen if was is None or seen > was else 0.9 * was + 0.1 * seen
        elif model not in self._ratio and counted is not None:
            self._ratio[model] = 1.0
        self._done(model)

    def gave_up(self, model: str) -> None:
        """The teaching call ended without an answer: the next call teaches instead."""
        self._done(model)

    def _done(self, model: str) -> None:
        teacher = self._learning.pop(model, None)
        if teacher is not None and not teacher.done():
            teacher.set_result(None)


class BudgetStep:
    """The guard chain's budget step: reserve the call's worst case in the run's account and
    today's daily accounts before it, settle with what it cost after.

    A run's own limit refuses the call (`BudgetExhaustedError`); a daily limit pauses runs below
    `critical` priority until the day rolls over or an operator raises the limit (the run's
    deadline still bounds the wait).
    """

    def __init__(self, daily: DailyLedger, pricer: Pricer, ratios: InputRatios) -> None:
        self.daily = daily
        self.pricer = pricer
        self.ratios = ratios

    async def __call__(self, call: ModelCall, next: Next) -> ModelResponse:
        run, request, model = call.run, call.request, call.model.name
        ratio = self.ratios.of(model)
        teaching = False
        if ratio is None:  # the model has not answered yet: learn its tokenizer first
            teaching = await self.ratios.first_call(model)
            ratio = self.ratios.of(model) or 1.0
        estimate = call.input_tokens
        input_tokens = estimate if ratio <= 1.0 else math.ceil(estimate * ratio)
        usd, floor_usd = self.pricer.call_costs(model, input_tokens, request.max_output_tokens)
        tokens = input_tokens + request.max_output_tokens
        try:
            while True:
                try:
                    reservation = run.budget.reserve(
                        usd,
                        tokens,
                        floor_usd=floor_usd,
                        floor_tokens=input_tokens,
                        daily=self.daily.accounts(tenant=run.tenant, user=run.user),
                    )
                    break
                except BudgetExhaustedError as exc:
                    if exc.scope == "run" and run.budget.in_flight:
                        # Calls in flight hold their worst case and usually settle for less:
                        # wait for one before refusing (50 parallel calls on $1 stopped at
                        # $0.59 when this refused at once).
                        await run.budget.settled()
                        continue
                    await self._refused(call, exc)
        except BaseException:
            if teaching:
                self.ratios.gave_up(model)
            raise
        call.held = (usd, tokens)
        try:
            response = await next(call)
        except BaseException:
            if teaching:
                self.ratios.gave_up(model)
            # The provider may bill the input of a call it was sent; one never sent costs 0.
            if call.sent_at is None:
                reservation.release()
            else:
                reservation.settle_failed()
            raise
        reservation.settle(call.cost, response.input_tokens + response.output_tokens)
        self.ratios.learned(model, estimate, response.input_tokens)
        return response

    async def _refused(self, call: ModelCall, exc: BudgetExhaustedError) -> None:
        """Raise `exc`, or (a daily limit, a run below `critical`) wait for room."""
        await call.emit(GuardEvent(kind="refused", detail=exc.to_dict()))
        if exc.scope == "run" or call.run.priority == "critical":
            raise exc
        never = Decimal(exc.details["needed"]) > Decimal(exc.details["limit"])
        log.warning(
            "run %s paused: the daily limit of %s has no room for its next call (%s); it goes "
            "on when an operator raises the limit%s",
            call.run.run_id,
            exc.scope,
            exc.dimension,
            " (the call alone needs more than the whole limit, so a new day will not help)"
            if never
            else f" or at midnight UTC (in {self.daily.seconds_to_reset() / 60:.0f} min)",
        )
        await call.emit(
            GuardEvent(
                kind="paused",
                detail={
                    "scope": exc.scope,
                    "resets_in_s": round(self.daily.seconds_to_reset(), 1),
                },
            )
        )
        await self.daily.wait_for_room()
