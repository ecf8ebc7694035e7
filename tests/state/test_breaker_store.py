"""The `BreakerStore` contract (compare-and-set on a generation), against every backend."""

from __future__ import annotations

import pytest

from corral.errors import CircuitOpenError
from corral.guards.breaker import BreakerRecord, BreakerRegistry, BreakerStore
from corral.guards.policy import BreakerPolicy
from corral.state.memory import MemoryBreakerStore
from corral.testing import FakeClock


@pytest.fixture(params=["memory"])
def store(request: pytest.FixtureRequest) -> BreakerStore:
    return MemoryBreakerStore()


def record(state: str, generation: int) -> BreakerRecord:
    return BreakerRecord(state=state, generation=generation, opened_at=1.0, wait_s=30)  # type: ignore[arg-type]


def test_only_the_first_of_two_racing_transitions_wins(store: BreakerStore):
    assert store.get("model:m") is None
    opened = record("OPEN", 1)
    assert store.compare_and_set("model:m", 0, opened) is opened
    late = record("FORCED_OPEN", 1)  # another process, from the same generation 0
    assert store.compare_and_set("model:m", 0, late) == opened
    assert store.get("model:m") == opened
    closed = record("CLOSED", 2)
    assert store.compare_and_set("model:m", 1, closed) is closed


def test_a_breaker_opened_by_one_process_is_open_for_another_after_refresh(store: BreakerStore):
    clock = FakeClock()
    policy = BreakerPolicy(window_size=2, minimum_calls=2)
    here = BreakerRegistry(policy, clock, store=store).get("model:m")
    there = BreakerRegistry(policy, clock, store=store).get("model:m")
    there.force_open()
    here.acquire().success(0.1)  # not caught up yet
    here.refresh()
    assert here.state == "FORCED_OPEN"
    with pytest.raises(CircuitOpenError):
        here.acquire()
    # A transition `here` then makes from its stale generation loses to the one that won.
    there.reset()
    here.disable()  # `here` is at the FORCED_OPEN generation: its CAS fails, it adopts CLOSED
    assert here.state == "CLOSED" and there.state == "CLOSED"
