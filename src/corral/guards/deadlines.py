"""Many deadlines on one timer: run deadlines and model-call timeouts, in the `Clock`'s time.

Why not `asyncio.timeout`: it creates, heaps and cancels a loop timer per use, about 8 us on our
2-core machine, and Corral needs one per run and one per model call (a tenth of an agent step in
bench W1). Here every deadline of an event loop shares one timer (`Clock.call_at`), set for the
earliest deadline; when it fires, the tasks past their deadline are cancelled and the timer is
set for the next one. Deadlines normally end before they expire (the call answered), so the
timer rarely fires. Time is the injected clock's `monotonic()`, so tests expire deadlines by
advancing a `FakeClock` instead of sleeping.

Usage, in the task the deadline bounds:

    deadline = deadlines.start(seconds)
    try:
        return await work()
    except asyncio.CancelledError:
        if deadline.expired and asyncio.current_task().uncancel() == 0:
            raise TimeoutError from None
        raise
    finally:
        deadlines.end(deadline)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

from corral.clock import Clock, SystemClock, Timer

__all__ = ["Deadline", "DeadlineHold", "Deadlines"]


class Deadline:
    """One task's deadline (the clock's monotonic time). `when()` / `reschedule()` as on
    `asyncio.Timeout`."""

    __slots__ = ("_owner", "at", "expired", "task")

    def __init__(self, owner: Deadlines, task: asyncio.Task[Any], at: float) -> None:
        self._owner = owner
        self.task = task
        self.at = at
        self.expired = False
        """The deadline passed and the task was cancelled for it."""

    def when(self) -> float | None:
        """The deadline in the clock's monotonic time, or None when it is held."""
        return None if self.at == math.inf else self.at

    def remaining(self) -> float | None:
        """Seconds left, or None when it is held."""
        return None if self.at == math.inf else self.at - self._owner.clock.monotonic()

    def reschedule(self, when: float | None) -> None:
        """Move the deadline (None: hold it; nothing expires until it is set again)."""
        self.at = math.inf if when is None else when
        if when is not None:
            self._owner._arm(self.task.get_loop(), when)

    def reschedule_in(self, seconds: float) -> None:
        """Move the deadline to `seconds` from now."""
        self.reschedule(self._owner.clock.monotonic() + seconds)


class Deadlines:
    """The deadlines in flight (on one event loop at a time).

    The kill switch's watches of model calls are deadlines too (`KillSwitch.watch`): one
    registry, one object per call, for both the timeout and a halt.

    Args:
        clock: Where time is read and the shared timer is set.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._live: dict[Deadline, None] = {}
        self._timer: Timer | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, seconds: float | None, task: asyncio.Task[Any] | None = None) -> Deadline:
        """A deadline `seconds` from now (None: none) for `task` (default: the current one)."""
        if task is None:
            task = asyncio.current_task()
            if task is None:  # pragma: no cover - always inside a task in asyncio
                raise RuntimeError("a deadline needs a running task")
        deadline = Deadline(self, task, math.inf)
        self.add(deadline, seconds)
        return deadline

    def add(self, deadline: Deadline, seconds: float | None) -> None:
        """Start `deadline` (built for this registry, held), due `seconds` from now (None:
        none)."""
        if seconds is not None:
            loop = deadline.task.get_loop()
            deadline.at = at = self.clock.monotonic() + seconds
            if at < self._timer_at or loop is not self._loop:
                self._arm(loop, at)
        self._live[deadline] = None

    def live(self) -> list[Deadline]:
        """The deadlines in flight now (a copy)."""
        return list(self._live)

    def end(self, deadline: Deadline) -> None:
        """The bounded work is over (the timer stays; it finds nothing to do if it fires)."""
        self._live.pop(deadline, None)

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if at >= self._timer_at and loop is self._loop:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.clock.call_at(at, lambda: self._fire(loop))
        self._timer_at, self._loop = at, loop

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._timer_at, self._loop = None, math.inf, None
        now = self.clock.monotonic()
        earliest = math.inf
        for deadline in self._live:
            if deadline.expired or deadline.task.get_loop() is not loop:
                continue
            if deadline.at <= now:
                deadline.expired = True
                deadline.task.cancel()
            elif deadline.at < earliest:
                earliest = deadline.at
        if earliest < math.inf:
            self._arm(loop, earliest)


class DeadlineHold:
    """Stops the run's deadline timer while any human wait of the run is open.

    One per run, shared by its context and its sub-workflow contexts (in `RunServices`).
    """

    def __init__(self) -> None:
        self.timer: Deadline | None = None
        self._open = 0
        self._remaining: float | None = None

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        timer = self.timer
        if timer is None:
            yield
            return
        if self._open == 0:
            self._remaining = timer.remaining()
            timer.reschedule(None)
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1
            if self._open == 0 and self._remaining is not None:
                timer.reschedule_in(max(self._remaining, 0.0))
