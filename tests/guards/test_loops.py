"""Loop guards, the retry budget and backoff, and the kill switch."""

from __future__ import annotations

import asyncio
import random

import pytest

from corral.errors import (
    KilledError,
    LoopDetectedError,
    ProviderError,
    ProviderRateLimitError,
)
from corral.guards import KillSwitch, LoopGuard, LoopPolicy, RetryBudget, RetryPolicy
from corral.guards.loops import fingerprint
from corral.guards.retry import backoff_s, is_retryable
from corral.testing import FakeClock


def test_ping_pong_with_no_new_information_is_stopped_and_named():
    guard = LoopGuard(LoopPolicy(ping_pong_cycles=2))
    guard.on_output("writer", "h1")
    guard.on_output("critic", "h2")
    guard.on_output("writer", "h1")
    with pytest.raises(LoopDetectedError) as stopped:
        guard.on_output("critic", "h2")
    assert stopped.value.to_dict()["cycle"] == ["writer", "critic"]
    assert stopped.value.kind == "ping_pong"


def test_a_cycle_that_makes_progress_is_not_ping_pong():
    guard = LoopGuard(LoopPolicy())
    for n in range(10):
        guard.on_output("writer", f"draft{n}")
        guard.on_output("critic", "needs work")


def test_three_agent_cycles_are_found_too():
    guard = LoopGuard(LoopPolicy(ping_pong_cycles=2, max_cycle=4))
    for agent, h in [("a", "1"), ("b", "2"), ("c", "3"), ("a", "1"), ("b", "2")]:
        guard.on_output(agent, h)
    with pytest.raises(LoopDetectedError, match="a -> b -> c -> a"):
        guard.on_output("c", "3")


def test_repeat_limit_allows_exactly_that_many_identical_calls():
    """The docstring said "this many times stops the run" while 3 allowed 3 calls: the limit is
    the number of identical calls allowed, as the docstring and the error now say."""
    guard = LoopGuard(LoopPolicy(repeat_limit=3))
    for _ in range(3):
        guard.on_call("a", "x", depth=1)
    with pytest.raises(LoopDetectedError) as stopped:
        guard.on_call("a", "x", depth=1)
    assert str(stopped.value).startswith(
        "agent 'a' was already called 3 times with this input, the most "
        "guards.loops.repeat_limit allows"
    )


@pytest.mark.parametrize(
    ("policy", "calls", "kind"),
    [
        pytest.param(
            LoopPolicy(max_turns=3),
            [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")],
            "turns",
            id="run-turns",
        ),
        pytest.param(
            LoopPolicy(max_agent_turns=2),
            [("a", "1"), ("a", "2"), ("a", "3")],
            "agent_turns",
            id="agent-turns",
        ),
        pytest.param(
            LoopPolicy(repeat_limit=2),
            [("a", "x"), ("a", "x"), ("a", "x")],
            "repeated_call",
            id="repeat",
        ),
    ],
)
def test_turn_and_repeat_limits(policy, calls, kind):
    guard = LoopGuard(policy)
    *allowed, (last_agent, last_hash) = calls
    for agent, h in allowed:
        guard.on_call(agent, h, depth=1)
    with pytest.raises(LoopDetectedError) as stopped:
        guard.on_call(last_agent, last_hash, depth=1)
    assert stopped.value.kind == kind
    assert guard.turns == len(calls) - 1


def test_recursion_depth():
    guard = LoopGuard(LoopPolicy(max_depth=2))
    guard.on_call("a", "1", depth=2)
    with pytest.raises(LoopDetectedError, match="depth 3"):
        guard.on_call("b", "1", depth=3)


def test_the_same_error_n_times_in_a_row_stops_the_agent_for_the_run():
    guard = LoopGuard(LoopPolicy(error_streak=3))
    assert not guard.on_error("a", "sim:small", "500")
    assert not guard.on_error("a", "sim:small", "429")  # a different error resets the streak
    assert not guard.on_error("a", "sim:small", "500")
    assert not guard.on_error("a", "sim:small", "500")
    assert guard.on_error("a", "sim:small", "500")
    with pytest.raises(LoopDetectedError, match="stopped in this run"):
        guard.on_call("a", "new input", depth=1)
    guard.on_call("b", "x", depth=1)  # other agents go on


def test_fingerprint_is_stable_across_key_order():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})


# -- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        pytest.param(ProviderError("500", retryable=True, status=500), True, id="5xx"),
        pytest.param(ProviderRateLimitError("429", retry_after_s=2), True, id="429"),
        pytest.param(ProviderError("bad request", retryable=False, status=400), False, id="400"),
        pytest.param(KilledError("all"), False, id="own-refusal"),
        pytest.param(ValueError("bug"), False, id="bug"),
    ],
)
def test_only_retryable_errors_are_retried(error, retry):
    assert is_retryable(error) is retry


def test_full_jitter_backoff_with_retry_after_as_a_floor():
    policy = RetryPolicy(base_delay_s=1, max_delay_s=5)
    rng = random.Random(1)
    plain = ProviderError("500", retryable=True)
    delays = [backoff_s(policy, 3, rng, plain) for _ in range(200)]
    assert min(delays) >= 0 and max(delays) <= 5  # min(cap, 1 * 2**3) = 5
    assert max(delays) > 4  # uniform over the whole range
    assert backoff_s(policy, 1, rng, ProviderRateLimitError("429", retry_after_s=9)) >= 9


def test_retry_budget_keeps_retries_under_ten_percent_of_requests():
    clock = FakeClock()
    budget = RetryBudget(RetryPolicy(budget_ratio=0.1, budget_min_retries=0), clock)
    granted = 0
    for _ in range(500):
        budget.record_request()
        granted += budget.try_retry()
    assert granted == 50 and budget.denied == 450
    clock.advance(61)  # the window slides
    assert budget.counts == (0, 0)


def test_retry_budget_memory_stays_bounded_in_a_process_that_never_retries():
    clock = FakeClock()
    budget = RetryBudget(RetryPolicy(budget_window_s=60), clock)
    for _ in range(5_000):  # 10 requests a second for 500 s
        budget.record_request()
        clock.advance(0.1)
    assert len(budget._buckets) <= 61
    requests, retries = budget.counts
    assert 590 <= requests <= 600 and retries == 0


def test_retry_budget_floor_lets_a_quiet_process_retry_a_blip():
    budget = RetryBudget(RetryPolicy(budget_min_retries=2), FakeClock())
    budget.record_request()
    assert budget.try_retry() and budget.try_retry() and not budget.try_retry()


# -- kill switch ----------------------------------------------------------------------------------


async def test_halting_a_run_cancels_its_call_in_flight_and_refuses_the_next():
    kill = KillSwitch()
    started = asyncio.Event()

    async def slow_model_call() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    call = asyncio.ensure_future(kill.guard("run-1", "writer", slow_model_call()))
    other = asyncio.ensure_future(kill.guard("run-2", "writer", asyncio.sleep(0, "done")))
    await started.wait()
    assert kill.halt(run_id="run-1", reason="operator") == 1
    with pytest.raises(KilledError, match="run run-1: operator"):
        await call
    assert await other == "done"
    with pytest.raises(KilledError):
        kill.check("run-1", "writer")
    kill.check("run-2", "writer")
    kill.halt(agent="writer")
    with pytest.raises(KilledError, match="agent writer"):
        kill.check("run-2", "writer")
    kill.release(agent="writer", run_id="run-1")
    kill.check("run-1", "writer")
    kill.halt(everything=True)
    with pytest.raises(KilledError, match="all"):
        kill.check("run-9", "reader")


async def test_an_outer_cancellation_is_not_reported_as_a_kill():
    kill = KillSwitch()

    async def hang() -> None:
        await asyncio.Event().wait()

    outer = asyncio.ensure_future(kill.guard("r", "a", hang()))
    await asyncio.sleep(0)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer


def test_deadlock_cycle_and_waits_on_nothing():
    from corral.guards.deadlock import find_deadlock

    err = find_deadlock({"a": ["x"], "b": ["y"], "c": ["z"]}, {"x": ["b"], "y": ["c"], "z": ["a"]})
    assert err.cycle == ["a", "b", "c"] and "a -> b -> c -> a" in err.message
    orphan = find_deadlock({"a": ["nobody-writes-this"]}, {})
    assert orphan.cycle == [] and orphan.to_dict()["waiting"] == {"a": "nobody-writes-this"}


# Call timeouts and shared deadlines: tests/guards/test_deadlines.py (on a FakeClock).


def test_retry_budget_counts_requests_per_second_and_slides_them_out_second_by_second():
    clock = FakeClock()
    budget = RetryBudget(RetryPolicy(budget_window_s=10), clock)
    start = clock.monotonic()
    clock.advance(0.5 - start % 1)  # mid-second
    budget.record_request()
    budget.record_request()
    clock.advance(1.0)  # the next second
    budget.record_request()
    assert budget.counts == (3, 0)
    clock.advance(9.0)  # the first second is 10 s old: out of the window; the second is not
    assert budget.counts == (1, 0)
    clock.advance(1.0)
    assert budget.counts == (0, 0)
    budget.record_request()  # a new second opens after a quiet spell
    assert budget.counts == (1, 0)
