"""The `BudgetStore` contract (shared daily accounts), against every backend (today: memory)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from corral.errors import BudgetExhaustedError
from corral.guards.budget import BudgetStore, Cost, Limits
from corral.state.memory import MemoryBudgetStore

D = Decimal


@pytest.fixture(params=["memory"])
def store(request: pytest.FixtureRequest) -> BudgetStore:
    return MemoryBudgetStore()


def test_a_reservation_holds_on_every_key_or_on_none(store: BudgetStore):
    store.open("tenant:a@d", "tenant:a", Limits(usd=D("1")))
    store.open("project@d", "project", Limits(usd=D("10")))
    assert store.reserve(["tenant:a@d", "project@d"], D("0.6"), 10) is None
    refusal = store.reserve(["project@d", "tenant:a@d"], D("0.6"), 10)
    assert isinstance(refusal, BudgetExhaustedError) and refusal.scope == "tenant:a"
    # The refused hold took nothing from the project: 0.6 + 9.4 fits exactly.
    assert store.reserve(["project@d"], D("9.4"), 0) is None
    assert store.reserve(["project@d"], D("0.01"), 0) is not None


def test_settle_replaces_a_hold_by_the_cost_and_release_gives_it_back(store: BudgetStore):
    store.open("user:b@d", "user:b", Limits(usd=D("1"), tokens=100))
    assert store.reserve(["user:b@d"], D("0.9"), 90) is None
    store.settle(["user:b@d"], D("0.9"), 90, D("0.2"), 20)
    assert store.reserve(["user:b@d"], D("0.8"), 80) is None  # 0.2 spent + 0.8 held = 1
    store.release(["user:b@d"], D("0.8"), 80)
    assert store.reserve(["user:b@d"], D("0.8"), 80) is None
    refusal = store.reserve(["user:b@d"], D("0"), 1)
    assert refusal is not None and refusal.dimension == "tokens"


def test_open_is_idempotent_and_limits_can_be_raised(store: BudgetStore):
    store.open("project@d", "project", Limits(usd=D("1")))
    assert store.reserve(["project@d"], D("1"), 0) is None
    store.open("project@d", "project", Limits(usd=D("100")))  # exists: unchanged
    assert store.reserve(["project@d"], D("1"), 0) is not None
    store.set_limits("project@d", Limits(usd=D("2")))
    assert store.reserve(["project@d"], D("1"), 0) is None


def test_a_charge_counts_without_a_hold(store: BudgetStore):
    store.open("tenant:a@d", "tenant:a", Limits(usd=D("1")))
    store.charge("tenant:a@d", Cost(usd=D("0.9"), tokens=5, model_calls=1))
    refusal = store.reserve(["tenant:a@d"], D("0.2"), 0)
    assert refusal is not None and refusal.details["spent"] == "0.9"
    assert store.reserve(["tenant:a@d"], D("0.1"), 0) is None
