"""The `RunAccount` contract (one run's budget), against every implementation (today: memory)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from corral.errors import BudgetExhaustedError
from corral.guards.budget import Cost, DailyAccounts, Limits, RunAccount, RunBudget
from corral.guards.policy import BudgetPolicy
from corral.state.memory import MemoryAccount, MemoryBudgetStore

D = Decimal


@pytest.fixture(params=["memory"])
def make(request: pytest.FixtureRequest):
    def build(limits: Limits) -> RunAccount:
        return MemoryAccount("run", limits)

    return build


def test_a_hold_counts_against_the_limit_until_settled_or_released(make):
    account = make(Limits(usd=D("1"), tokens=1000))
    assert account.reserve(D("0.7"), 100) is None
    refusal = account.reserve(D("0.4"), 100)
    assert refusal is not None and refusal.dimension == "usd" and refusal.scope == "run"
    assert refusal.details["spent"] == "0.7"  # what is held counts as used in the refusal
    account.settle(D("0.7"), 100, D("0.1"), 30)  # the call cost less than its worst case
    assert account.spent["usd"] == D("0.1") and account.reserved["usd"] == 0
    assert account.reserve(D("0.9"), 100) is None  # 0.1 spent + 0.9 held = the limit
    account.release(D("0.9"), 100)
    assert account.used() == (D("0.1"), 30)


def test_a_refused_reservation_holds_nothing(make):
    account = make(Limits(tokens=100, model_calls=1))
    assert account.reserve(D("0"), 200) is not None  # tokens
    assert account.reserved == {"usd": 0, "tokens": 0, "model_calls": 0, "agent_turns": 0}
    assert account.reserve(D("0"), 50) is None
    refusal = account.reserve(D("0"), 10)
    assert refusal is not None and refusal.dimension == "model_calls"


def test_turns_and_charges_count_without_a_hold(make):
    account = make(Limits(agent_turns=2, usd=D("1")))
    assert account.take_turn() is None and account.take_turn() is None
    refusal = account.take_turn()
    assert refusal is not None and refusal.dimension == "agent_turns" and refusal.details["limit"] == "2"
    account.charge(Cost(usd=D("0.95"), tokens=10, model_calls=1))
    assert account.spent == {"usd": D("0.95"), "tokens": 10, "model_calls": 1, "agent_turns": 2}
    assert account.reserve(D("0.1"), 0) is not None


class _Recording(MemoryAccount):
    """A run account that records what the budget asked of it (a stand-in for a shared one)."""

    def __init__(self, limits: Limits) -> None:
        super().__init__("run", limits)
        self.calls: list[str] = []

    def reserve(self, usd: Decimal, tokens: int):
        self.calls.append("reserve")
        return super().reserve(usd, tokens)

    def release(self, held_usd: Decimal, held_tokens: int) -> None:
        self.calls.append("release")
        super().release(held_usd, held_tokens)


def test_the_run_budget_reaches_its_state_only_through_the_account():
    policy = BudgetPolicy(usd=D("1"), tokens=None, model_calls=None, degrade_at=0.5)
    account = _Recording(Limits(usd=D("1")))
    budget = RunBudget(policy, account=account)
    hold = budget.reserve(D("0.6"), 10, floor_usd=D("0.1"), floor_tokens=5)
    assert budget.should_degrade and budget.fraction() == pytest.approx(0.6)
    hold.settle_failed()
    hold.settle_failed()  # a second settle changes nothing
    assert account.spent["usd"] == D("0.1") and not budget.should_degrade
    assert budget.remaining()["usd"] == "0.9"
    assert account.calls == ["reserve"]


def test_a_daily_refusal_gives_the_runs_hold_back():
    store = MemoryBudgetStore()
    store.open("tenant:a@d", "tenant:a", Limits(usd=D("0.5")))
    account = _Recording(Limits(usd=D("10")))
    budget = RunBudget(BudgetPolicy(usd=D("10"), tokens=None, model_calls=None), account=account)
    with pytest.raises(BudgetExhaustedError) as refused:
        budget.reserve(D("0.6"), 10, daily=DailyAccounts(store=store, keys=("tenant:a@d",)))
    assert refused.value.scope == "tenant:a"
    assert account.calls == ["reserve", "release"] and account.reserved["usd"] == 0
