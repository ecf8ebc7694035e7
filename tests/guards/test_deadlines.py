"""Shared deadlines and call timeouts on the injected clock (FakeClock: no real sleeps)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral.errors import KilledError
from corral.guards.deadlines import Deadlines
from corral.guards.kill import KillSwitch
from corral.testing import FakeClock


async def _bounded(deadlines: Deadlines, seconds: float | None, work: Any) -> str:
    deadline = deadlines.start(seconds)
    try:
        result: str = await work
        return result
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if deadline.expired and task is not None and task.uncancel() == 0:
            raise TimeoutError from None
        raise
    finally:
        deadlines.end(deadline)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_deadlines_share_one_timer_and_expire_in_order():
    clock = FakeClock()
    deadlines = Deadlines(clock)
    loop = asyncio.get_running_loop()
    never = [loop.create_future() for _ in range(3)]
    late = asyncio.ensure_future(_bounded(deadlines, 30, never[0]))
    early = asyncio.ensure_future(_bounded(deadlines, 5, never[1]))
    unbounded = asyncio.ensure_future(_bounded(deadlines, None, never[2]))
    await _settle()  # all three started
    assert len(clock._timers) == 2  # one timer re-armed for the earlier deadline, not one each
    clock.advance(5)
    with pytest.raises(TimeoutError):
        await early
    assert not late.done()  # the timer moved on to the next deadline
    clock.advance(25)
    with pytest.raises(TimeoutError):
        await late
    assert not unbounded.done()
    never[2].set_result("done")
    assert await unbounded == "done"
    assert deadlines.live() == []


async def test_a_held_deadline_does_not_expire_until_it_is_set_again():
    clock = FakeClock()
    deadlines = Deadlines(clock)
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    seen: list[float | None] = []

    async def work() -> str:
        deadline = deadlines.live()[0]
        seen.append(deadline.remaining())
        deadline.reschedule(None)  # a human wait holds the run's deadline
        seen.append(deadline.remaining())
        clock.advance(100)  # far past the deadline: nothing happens while held
        await asyncio.sleep(0)
        deadline.reschedule_in(5)
        return await gate

    task = asyncio.ensure_future(_bounded(deadlines, 3, work()))
    await _settle()
    assert seen == [3, None]
    assert not task.done()
    clock.advance(5)
    with pytest.raises(TimeoutError):
        await task


async def test_an_ended_deadline_cancels_nothing_when_the_timer_fires():
    clock = FakeClock()
    deadlines = Deadlines(clock)

    async def answer_then_keep_working() -> str:
        first = await _bounded(deadlines, 2, asyncio.sleep(0, "answered"))
        await clock.sleep(5)  # the same task, past the ended deadline: the timer fires
        return first

    assert await answer_then_keep_working() == "answered"


async def test_call_timeouts_expire_only_the_calls_past_their_deadline():
    clock = FakeClock()
    kill = KillSwitch(clock)
    loop = asyncio.get_running_loop()
    quick: asyncio.Future[str] = loop.create_future()
    never = [loop.create_future() for _ in range(3)]

    async def guarded(call: Any, timeout_s: float) -> str:
        return await kill.guard("r", "a", call, timeout_s=timeout_s)

    tasks = [
        asyncio.ensure_future(guarded(never[0], 20)),
        asyncio.ensure_future(guarded(quick, 20)),
        asyncio.ensure_future(guarded(never[1], 5)),
        asyncio.ensure_future(guarded(never[2], 300)),
    ]
    await _settle()
    quick.set_result("answered")
    await _settle()  # answered before its timeout
    clock.advance(20)
    await _settle()
    assert tasks[1].result() == "answered"
    for expired in (tasks[0], tasks[2]):
        with pytest.raises(TimeoutError):
            expired.result()
    assert not tasks[3].done()  # 280 s left: still waiting
    kill.halt(run_id="r")
    with pytest.raises(KilledError):
        await tasks[3]
