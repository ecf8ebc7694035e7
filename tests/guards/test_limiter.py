"""The rate limiter: RPM + TPM reserve-then-reconcile, priorities with aging, provider feedback."""

from __future__ import annotations

import asyncio

import pytest

from corral.errors import RateLimitedError
from corral.guards import LimiterPolicy, RateLimit, RateLimiter
from corral.guards.policy import PRIORITIES
from corral.testing import VirtualClock

INTERACTIVE, BATCH = PRIORITIES["interactive"], PRIORITIES["batch"]


def limiter(clock: VirtualClock, **limits: RateLimit) -> RateLimiter:
    return RateLimiter(
        {k.replace("_", ":"): v for k, v in limits.items()}, LimiterPolicy(max_wait_s=600), clock
    )


async def test_tpm_example_refunds_admit_the_fourth_call():
    """TPM 10,000, each call estimated 3,000: 3 admitted, the 4th waits until reconciliation."""
    clock = VirtualClock()
    lim = limiter(clock, model_m=RateLimit(tpm=10_000, burst_s=60))
    tickets = [
        await lim.acquire(["model:m"], 3000, priority=INTERACTIVE, input_estimate=500)
        for _ in range(3)
    ]
    fourth = asyncio.ensure_future(
        lim.acquire(["model:m"], 3000, priority=INTERACTIVE, input_estimate=500)
    )
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not fourth.done() and lim.queue_depth == 1
    for t in tickets:
        t.settle(2300)
        t.settle(2300)  # twice: no effect
    await fourth
    assert clock.monotonic() == 0, "admitted by the refunds, not by waiting for refill"


async def test_callers_queue_by_priority_fifo_within_a_class():
    clock = VirtualClock()
    lim = limiter(clock, model_m=RateLimit(rpm=60, burst_s=1))  # one request per second
    order: list[str] = []

    async def call(name: str, priority: int) -> None:
        await lim.acquire(["model:m"], 0, priority=priority, input_estimate=0)
        order.append(name)

    await lim.acquire(["model:m"], 0, priority=INTERACTIVE, input_estimate=0)  # empty the bucket
    tasks = [
        asyncio.ensure_future(call("b1", BATCH)),
        asyncio.ensure_future(call("b2", BATCH)),
        asyncio.ensure_future(call("i1", INTERACTIVE)),
        asyncio.ensure_future(call("i2", INTERACTIVE)),
    ]
    await asyncio.gather(*tasks)
    assert order == ["i1", "i2", "b1", "b2"]
    assert clock.monotonic() == pytest.approx(4.0)


async def test_aging_lets_low_priority_through_a_flood():
    """Interactive callers arrive twice as fast as the limit admits; batch still gets through."""
    clock = VirtualClock()
    lim = RateLimiter(
        {"model:m": RateLimit(rpm=60, burst_s=1)},
        LimiterPolicy(max_wait_s=600, aging_s=5),
        clock,
    )
    await lim.acquire(["model:m"], 0, priority=INTERACTIVE, input_estimate=0)
    admitted_at: dict[str, float] = {}

    async def call(name: str, priority: int) -> None:
        await lim.acquire(["model:m"], 0, priority=priority, input_estimate=0)
        admitted_at[name] = clock.monotonic()

    async def flood() -> list[asyncio.Task[None]]:
        tasks = []
        for n in range(60):  # 2 per second for 30 s
            tasks.append(asyncio.ensure_future(call(f"i{n}", INTERACTIVE)))
            await clock.sleep(0.5)
        return tasks

    batch = asyncio.ensure_future(call("batch", BATCH))
    flooders = await flood()
    await asyncio.gather(batch, *flooders)
    # Only the interactive callers that arrived within one aging step of it go first.
    assert admitted_at["batch"] <= 12
    assert max(admitted_at.values()) > 30  # the flood was still queued when batch got through


async def test_all_keys_or_none():
    clock = VirtualClock()
    lim = limiter(
        clock, model_m=RateLimit(rpm=600, burst_s=6), tenant_acme=RateLimit(rpm=60, burst_s=1)
    )
    await lim.acquire(["model:m", "tenant:acme"], 0, priority=INTERACTIVE, input_estimate=0)
    blocked = asyncio.ensure_future(
        lim.acquire(["model:m", "tenant:acme"], 0, priority=INTERACTIVE, input_estimate=0)
    )
    await asyncio.sleep(0)
    # Another tenant on the same model is not held up by acme's limit.
    await lim.acquire(["model:m"], 0, priority=INTERACTIVE, input_estimate=0)
    assert clock.monotonic() == 0
    await blocked
    assert clock.monotonic() == pytest.approx(1.0)


def test_keys_without_a_limit_are_not_tracked_and_wildcards_apply_per_tenant():
    lim = RateLimiter({"tenant:*": RateLimit(rpm=10)}, LimiterPolicy(), VirtualClock())
    assert lim.keys_for("model:m", "provider:p", "tenant:acme", None) == ["tenant:acme"]


async def test_a_429_holds_the_key_for_its_retry_after():
    clock = VirtualClock()
    lim = limiter(clock, model_m=RateLimit(rpm=6000))
    lim.penalize(["model:m"], 7.0)
    await lim.acquire(["model:m"], 0, priority=INTERACTIVE, input_estimate=0)
    assert clock.monotonic() >= 7.0


async def test_remaining_headers_shrink_the_local_allowance():
    clock = VirtualClock()
    lim = limiter(clock, model_m=RateLimit(tpm=60_000, burst_s=60))
    lim.observe("model:m", remaining_tokens=100)
    await lim.acquire(["model:m"], 1000, priority=INTERACTIVE, input_estimate=0)
    assert clock.monotonic() == pytest.approx(0.9)  # waited for 900 tokens at 1,000/s


async def test_a_caller_not_admitted_in_time_gets_a_structured_refusal():
    clock = VirtualClock()
    lim = RateLimiter({"model:m": RateLimit(rpm=1, burst_s=1)}, LimiterPolicy(max_wait_s=5), clock)
    await lim.acquire(["model:m"], 0, priority=INTERACTIVE, input_estimate=0)
    with pytest.raises(RateLimitedError) as refused:
        await lim.acquire(["model:m"], 0, priority=INTERACTIVE, input_estimate=0)
    assert refused.value.to_dict()["waited_s"] == pytest.approx(5)
    assert lim.queue_depth == 0


def test_adaptive_throttling_probability():
    clock = VirtualClock()
    lim = limiter(clock, model_m=RateLimit(rpm=100))
    for _ in range(10):
        lim.record_outcome(["model:m"], accepted=True)
    assert lim.reject_probability("model:m") == 0
    for _ in range(90):
        lim.record_outcome(["model:m"], accepted=False)
    # (100 - 2 * 10) / 101
    assert lim.reject_probability("model:m") == pytest.approx(80 / 101)
    clock.advance(121)
    assert lim.reject_probability("model:m") == 0


async def test_steady_load_gets_the_full_rate():
    clock = VirtualClock()
    lim = limiter(clock, model_m=RateLimit(rpm=600, burst_s=1))
    admitted = 0

    async def caller() -> None:
        nonlocal admitted
        while clock.monotonic() < 60:
            await lim.acquire(["model:m"], 0, priority=BATCH, input_estimate=0)
            if clock.monotonic() <= 60:
                admitted += 1

    await asyncio.gather(*(caller() for _ in range(30)))
    assert 600 <= admitted <= 620  # 10/s for 60 s, plus the one-second burst


async def test_an_interactive_trickle_is_not_stuck_behind_a_batch_backlog():
    clock = VirtualClock()
    lim = limiter(clock, model_m=RateLimit(rpm=600, burst_s=1))  # 10 a second
    waits: list[float] = []

    async def call(priority: int) -> None:
        t0 = clock.monotonic()
        await lim.acquire(["model:m"], 0, priority=priority, input_estimate=0)
        if priority == INTERACTIVE:
            waits.append(clock.monotonic() - t0)

    tasks = []
    for tick in range(300):  # 30 s: batch offers 50/s, interactive 2/s
        tasks += [asyncio.ensure_future(call(BATCH)) for _ in range(5)]
        if tick % 5 == 0:
            tasks.append(asyncio.ensure_future(call(INTERACTIVE)))
        await clock.sleep(0.1)
    assert max(waits) <= 0.5, "interactive waits for the next slot or two, not the backlog"
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await lim.close()


async def test_two_limiters_on_one_backend_keep_priority_between_them():
    """Two processes' limiters share one backend: a batch call of one does not take the room an
    interactive call of the other is waiting for."""
    from corral.state.memory import MemoryLimiterBackend

    clock = VirtualClock()
    shared = MemoryLimiterBackend({"model:m": RateLimit(rpm=60, burst_s=1)})  # 1 per second
    policy = LimiterPolicy(max_wait_s=600)
    first = RateLimiter({}, policy, clock, backend=shared)
    second = RateLimiter({}, policy, clock, backend=shared)
    await first.acquire(["model:m"], 0, priority=BATCH, input_estimate=0)  # empties the bucket
    order: list[str] = []

    async def call(lim: RateLimiter, name: str, priority: int) -> None:
        await lim.acquire(["model:m"], 0, priority=priority, input_estimate=0)
        order.append(name)

    batch = asyncio.ensure_future(call(first, "batch", BATCH))
    await asyncio.sleep(0)
    interactive = asyncio.ensure_future(call(second, "interactive", INTERACTIVE))
    await asyncio.gather(batch, interactive)
    assert order == ["interactive", "batch"]
    await first.close()
    await second.close()
