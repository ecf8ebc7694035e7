"""Circuit breakers: every example in docs/governance.md, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from corral.errors import CircuitOpenError
from corral.guards import BreakerPolicy, CircuitBreaker
from corral.testing import FakeClock, VirtualClock

COUNT_10 = BreakerPolicy(window_size=10, minimum_calls=5, failure_rate=0.5, wait_in_open_s=30)


def feed(breaker: CircuitBreaker, outcomes: str, duration_s: float = 0.1) -> list[str | None]:
    moves = []
    for o in outcomes:
        permit = breaker.acquire()
        moves.append(permit.failure(duration_s) if o == "F" else permit.success(duration_s))
    return moves


def test_no_rate_before_the_minimum_then_a_fifth_failure_opens():
    breaker = CircuitBreaker("provider:x", COUNT_10, FakeClock())
    feed(breaker, "FFFF")
    assert breaker.state == "CLOSED"
    assert feed(breaker, "F") == ["OPEN"]


def test_forty_percent_stays_closed_fifty_percent_opens():
    breaker = CircuitBreaker("provider:x", COUNT_10, FakeClock())
    feed(breaker, "SSFFS")
    assert breaker.state == "CLOSED"  # 2/5 = 40%
    feed(breaker, "F")
    assert breaker.state == "OPEN"  # 3/6 = 50%: greater-or-equal trips


def test_count_window_minimum_is_capped_by_the_window_size():
    policy = BreakerPolicy(window_size=3, minimum_calls=10, failure_rate=0.5)
    breaker = CircuitBreaker("k", policy, FakeClock())
    feed(breaker, "SFF")
    assert breaker.state == "OPEN"


def test_open_rejects_until_the_wait_passes_then_half_opens():
    clock = FakeClock()
    breaker = CircuitBreaker("k", COUNT_10, clock)
    feed(breaker, "FFFFF")
    with pytest.raises(CircuitOpenError) as refused:
        breaker.acquire()
    assert refused.value.to_dict()["retry_after_s"] == pytest.approx(30)
    assert breaker.rejected == 1
    clock.advance(29.9)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.advance(0.2)
    breaker.acquire()
    assert breaker.state == "HALF_OPEN"


def test_half_open_admits_exactly_its_probes_among_ten_concurrent_callers():
    clock = FakeClock()
    policy = BreakerPolicy(
        window_size=10, minimum_calls=5, permitted_in_half_open=3, wait_in_open_s=10
    )
    breaker = CircuitBreaker("k", policy, clock)
    feed(breaker, "FFFFF")
    clock.advance(10)

    reached = 0

    async def caller() -> str:
        nonlocal reached
        try:
            permit = breaker.acquire()
        except CircuitOpenError:
            return "rejected"
        reached += 1
        await asyncio.sleep(0)  # in flight together
        permit.success(0.1)
        return "ok"

    async def main() -> list[str]:
        return list(await asyncio.gather(*(caller() for _ in range(10))))

    results = asyncio.run(main())
    assert reached == 3 and results.count("rejected") == 7
    assert breaker.state == "CLOSED"


@pytest.mark.parametrize(
    ("probes", "state"),
    [pytest.param("SSS", "CLOSED", id="healthy"), pytest.param("SFF", "OPEN", id="still-bad")],
)
def test_half_open_decides_when_all_probes_reported(probes, state):
    clock = FakeClock()
    policy = BreakerPolicy(window_size=10, minimum_calls=5, permitted_in_half_open=3)
    breaker = CircuitBreaker("k", policy, clock)
    feed(breaker, "FFFFF")
    clock.advance(policy.wait_in_open_s)
    permits = [breaker.acquire() for _ in range(3)]
    for permit, o in zip(permits, probes, strict=True):
        permit.failure(0.1) if o == "F" else permit.success(0.1)
    assert breaker.state == state


def test_ignored_outcomes_release_half_open_permits_and_count_for_nothing():
    clock = FakeClock()
    policy = BreakerPolicy(window_size=10, minimum_calls=5, permitted_in_half_open=1)
    breaker = CircuitBreaker("k", policy, clock)
    feed(breaker, "FFFFF")
    clock.advance(policy.wait_in_open_s)
    permit = breaker.acquire()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()  # the one probe is out
    permit.ignore()  # cancelled / refused / client error
    assert breaker.state == "HALF_OPEN"
    breaker.acquire().success(0.1)
    assert breaker.state == "CLOSED"


def test_slow_calls_trip_on_their_own_rate():
    policy = BreakerPolicy(
        window_size=4, minimum_calls=4, slow_call_rate=0.5, slow_call_s=2.0, failure_rate=1.0
    )
    breaker = CircuitBreaker("k", policy, FakeClock())
    feed(breaker, "SS", duration_s=2.0)  # not slow: strictly greater is slow
    feed(breaker, "S", duration_s=2.01)
    assert breaker.state == "CLOSED"
    feed(breaker, "S", duration_s=5.0)
    assert breaker.state == "OPEN"  # 2/4 slow


def test_time_window_forgets_old_outcomes():
    clock = FakeClock()
    policy = BreakerPolicy(window="time", window_size=10, minimum_calls=4, failure_rate=0.5)
    breaker = CircuitBreaker("k", policy, clock)
    feed(breaker, "FFF")
    clock.advance(11)
    feed(breaker, "SFS")  # the old failures fell out: 1/3, and below the minimum
    assert breaker.state == "CLOSED"
    feed(breaker, "F")  # 2/4 = 50%
    assert breaker.state == "OPEN"


def test_the_open_wait_grows_per_reopening_and_resets_on_close():
    clock = FakeClock()
    policy = BreakerPolicy(
        window_size=2,
        minimum_calls=2,
        permitted_in_half_open=1,
        wait_in_open_s=10,
        wait_multiplier=1.5,
    )
    breaker = CircuitBreaker("k", policy, clock)
    feed(breaker, "FF")
    clock.advance(10)
    breaker.acquire().failure(0.1)  # probe fails: re-open with 15 s
    clock.advance(14)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.advance(1)
    breaker.acquire().success(0.1)
    assert breaker.state == "CLOSED"
    feed(breaker, "FF")
    clock.advance(10)
    breaker.acquire()  # back to the base wait after closing
    assert breaker.state == "HALF_OPEN"


def test_stuck_probes_send_half_open_back_to_open():
    clock = FakeClock()
    policy = BreakerPolicy(
        window_size=2, minimum_calls=2, permitted_in_half_open=1, max_wait_in_half_open_s=5
    )
    breaker = CircuitBreaker("k", policy, clock)
    feed(breaker, "FF")
    clock.advance(policy.wait_in_open_s)
    breaker.acquire()  # a probe that never reports
    clock.advance(6)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    assert breaker.state == "OPEN"


def test_an_outcome_from_before_a_state_change_is_not_counted():
    clock = FakeClock()
    breaker = CircuitBreaker("k", COUNT_10, clock)
    early = breaker.acquire()
    feed(breaker, "FFFFF")
    clock.advance(30)
    probes = [breaker.acquire() for _ in range(3)]
    early.failure(0.1)  # started while CLOSED; must not count as a probe
    for p in probes:
        p.success(0.1)
    assert breaker.state == "CLOSED"


def test_forced_open_and_disabled_for_operators():
    breaker = CircuitBreaker("k", COUNT_10, FakeClock())
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    breaker.disable()
    feed(breaker, "FFFFFFFFFF")
    assert breaker.state == "DISABLED"
    breaker.reset()
    assert breaker.state == "CLOSED"


async def test_virtual_clock_drives_an_open_wait_without_sleeping():
    clock = VirtualClock()
    breaker = CircuitBreaker("k", COUNT_10, clock)
    feed(breaker, "FFFFF")
    await clock.sleep(30)
    breaker.acquire()
    assert breaker.state == "HALF_OPEN" and clock.monotonic() == 30


def test_a_full_window_of_clean_calls_still_sees_slow_calls_failures_and_resets():
    # A clean success into a full window of clean calls takes a shortcut (nothing changes);
    # everything else must still count exactly as before.
    policy = BreakerPolicy(
        window_size=4, minimum_calls=4, failure_rate=0.5, slow_call_s=1.0, slow_call_rate=0.5
    )
    breaker = CircuitBreaker("k", policy, FakeClock())
    feed(breaker, "SSSSSSSS")
    assert breaker.state == "CLOSED" and breaker._steady
    feed(breaker, "S", duration_s=2.0)  # slow: counted, the window is no longer all clean
    assert not breaker._steady
    assert feed(breaker, "S", duration_s=2.0) == ["OPEN"]  # 2 of the last 4 slow = 50%
    breaker.reset()
    feed(breaker, "SSSS")
    assert breaker._steady
    late = breaker.acquire()  # taken before the breaker moves on
    feed(breaker, "FF")
    assert breaker.state == "OPEN" and not breaker._steady
    breaker.reset()
    feed(breaker, "SSSS")
    assert late.success(0.1) is None  # a permit from an earlier generation changes nothing
    assert feed(breaker, "FF") == [None, "OPEN"]  # the window still held four clean calls


def test_enter_shares_one_permit_per_closed_generation_and_counts_every_outcome():
    clock = FakeClock()
    breaker = CircuitBreaker("k", COUNT_10, clock)
    in_flight = [breaker.enter() for _ in range(5)]
    assert all(p is in_flight[0] for p in in_flight)  # nothing built per call while CLOSED
    moves = [p.failure(0.1) for p in in_flight]  # each call's outcome counts, shared or not
    assert moves == [None, None, None, None, "OPEN"]
    with pytest.raises(CircuitOpenError):
        breaker.enter()  # not CLOSED: what `acquire` does
    assert in_flight[0].success(0.1) is None  # a late answer from the old generation
    clock.advance(31)
    probe = breaker.enter()
    assert probe is not in_flight[0] and breaker.state == "HALF_OPEN"
    for p in [probe, *(breaker.enter() for _ in range(COUNT_10.permitted_in_half_open - 1))]:
        p.success(0.1)
    assert breaker.state == "CLOSED"
    fresh = breaker.enter()
    assert fresh is breaker.enter() and fresh is not in_flight[0]
    assert fresh.ignore() is None and breaker.state == "CLOSED"
