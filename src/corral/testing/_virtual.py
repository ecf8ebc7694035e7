"""Virtual time for concurrent tests and simulations."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from corral.testing._clock import _Timer


class VirtualClock:
    """A clock whose time jumps to the next sleeper's deadline whenever nothing else can run.

    Unlike `FakeClock` (where every `sleep` advances time at once, fine for one task), many tasks
    can sleep concurrently and each wakes at its own virtual deadline, in deadline order: a
    limiter, a breaker's open wait or a 60-second load test runs in milliseconds with the same
    interleavings as real time. Work in other threads is not waited for: use it with in-loop code.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._driver: asyncio.Task[None] | None = None
        self._timers: list[tuple[float, int, _Timer]] = []

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._seq), future))
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive(), name="virtual-clock")
        try:
            await future
        finally:
            if not future.done():
                future.cancel()

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        """Run `callback` once time reaches `when`. A timer does not make time jump by itself
        (sleepers and `advance` move time): a deadline stays in the future while the work it
        bounds waits for something outside the clock (a thread, a socket)."""
        timer = _Timer(callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward by hand, waking every sleeper that is due."""
        self._elapsed += max(0.0, seconds)
        self._wake_due()

    def _wake_due(self) -> None:
        while self._timers and self._timers[0][0] <= self._elapsed:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()
        while self._sleepers and self._sleepers[0][0] <= self._elapsed:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        while self._sleepers:
            # Let every runnable task run until the loop has nothing ready but timers.
            for _ in range(10_000):
                await asyncio.sleep(0)
                if not loop._ready:  # type: ignore[attr-defined]  # CPython's ready queue
                    break
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                break
            self._elapsed = max(self._elapsed, self._sleepers[0][0])
            self._wake_due()
