"""Budgets: reserve the worst case, reconcile, never overspend (governance.md examples)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from corral.errors import BudgetExhaustedError
from corral.guards import BudgetPolicy, Cost, DailyLedger, DailyLimit, RunBudget
from corral.testing import VirtualClock

D = Decimal


def reserve(budget: RunBudget, usd: str, floor: str = "0", daily=None):
    """One model call's reservation of `usd` (no tokens)."""
    return budget.reserve(D(usd), 0, floor_usd=D(floor), daily=daily)


def test_reserve_then_reconcile_admits_the_fourth_call():
    budget = RunBudget(BudgetPolicy(usd=D("1.00"), tokens=None, model_calls=None))
    held = [reserve(budget, "0.30", "0.01") for _ in range(3)]
    with pytest.raises(BudgetExhaustedError) as refused:
        reserve(budget, "0.30", "0.01")
    assert refused.value.to_dict() == {
        "code": "budget_exhausted",
        "message": refused.value.message,
        "dimension": "usd",
        "scope": "run",
        "limit": "1.00",
        "spent": "0.90",
        "needed": "0.30",
    }
    for r in held:
        r.settle(D("0.20"), 0)
    assert budget.account.spent["usd"] == D("0.60")
    reserve(budget, "0.30", "0.01")  # 0.60 + 0.30 = 0.90 fits


def test_settling_twice_changes_nothing_and_failures_keep_the_input_estimate():
    budget = RunBudget(BudgetPolicy(usd=D("1"), tokens=None, model_calls=None))
    r = reserve(budget, "0.50", "0.05")
    r.settle_failed()
    r.settle(D("0.50"), 0)
    assert budget.account.spent["usd"] == D("0.05")
    assert budget.account.reserved["usd"] == 0


def test_fifty_parallel_calls_racing_for_the_last_dollar_never_overspend():
    budget = RunBudget(BudgetPolicy(usd=D("1.00"), tokens=None, model_calls=None))
    budget.charge(Cost(usd=D("0.00")))

    async def call(i: int) -> bool:
        await asyncio.sleep(0)
        try:
            r = reserve(budget, "0.07", "0.01")
        except BudgetExhaustedError:
            return False
        await asyncio.sleep(0.001 * (i % 3))  # in flight together, finishing out of order
        r.settle(D("0.07"), 0)
        return True

    async def main() -> list[bool]:
        return list(await asyncio.gather(*(call(i) for i in range(50))))

    admitted = asyncio.run(main())
    assert sum(admitted) == 14  # 14 * 0.07 = 0.98; a 15th would be 1.05
    assert budget.account.spent["usd"] == D("0.98") <= D("1.00")


def test_every_dimension_is_a_limit():
    budget = RunBudget(BudgetPolicy(usd=None, tokens=100, model_calls=2, agent_turns=1))
    budget.reserve(D(0), 60).settle(D(0), 60)
    with pytest.raises(BudgetExhaustedError, match="tokens"):
        budget.reserve(D(0), 60)
    budget.reserve(D(0), 10)
    with pytest.raises(BudgetExhaustedError, match="model_calls"):
        budget.reserve(D(0), 1)
    budget.take_turn()
    with pytest.raises(BudgetExhaustedError, match="agent_turns"):
        budget.take_turn()


def test_degrade_past_the_fraction():
    budget = RunBudget(BudgetPolicy(usd=D("1"), tokens=None, degrade_at=0.8))
    budget.charge(Cost(usd=D("0.79"), model_calls=1))
    assert not budget.should_degrade
    budget.charge(Cost(usd=D("0.01"), model_calls=1))
    assert budget.should_degrade


def test_daily_limits_apply_per_scope_and_reset_at_midnight():
    clock = VirtualClock(start=datetime(2026, 3, 1, 23, 0, tzinfo=UTC))
    ledger = DailyLedger(
        {"tenant:*": DailyLimit(usd=D("1")), "user:bob": DailyLimit(usd=D("0.5"))}, clock
    )
    run = RunBudget(BudgetPolicy(usd=None, tokens=None, model_calls=None))
    acme = ledger.accounts(tenant="acme", user="bob")
    reserve(run, "0.4", daily=acme).settle(D("0.4"), 0)
    with pytest.raises(BudgetExhaustedError) as refused:
        reserve(run, "0.2", daily=acme)
    assert refused.value.scope == "user:bob"
    other = ledger.accounts(tenant="globex", user=None)
    reserve(run, "0.9", daily=other)  # another tenant has its own day
    assert ledger.seconds_to_reset() == pytest.approx(3600)
    clock.advance(3601)
    reserve(run, "0.2", daily=ledger.accounts(tenant="acme", user="bob"))


async def test_a_paused_run_wakes_when_an_operator_raises_the_limit():
    clock = VirtualClock(start=datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    ledger = DailyLedger({"project": DailyLimit(usd=D("1"))}, clock)
    waiting = asyncio.ensure_future(ledger.wait_for_room())
    await asyncio.sleep(0)
    assert not waiting.done()
    ledger.raise_limit("project", DailyLimit(usd=D("5")))
    await waiting
    assert clock.monotonic() < 1  # woke on the raise, not at midnight
    run = RunBudget(BudgetPolicy(usd=None, tokens=None, model_calls=None))
    reserve(run, "2", daily=ledger.accounts(tenant=None, user=None))  # over the old limit of 1


async def test_a_paused_run_wakes_at_midnight():
    clock = VirtualClock(start=datetime(2026, 3, 1, 22, 0, tzinfo=UTC))
    ledger = DailyLedger({"project": DailyLimit(usd=D("1"))}, clock)
    await ledger.wait_for_room()
    assert clock.now() >= datetime(2026, 3, 2, tzinfo=UTC)
