"""Time as a dependency: every wait and timestamp in Corral goes through a `Clock`.

Injecting the clock is what lets tests skip time (`corral.testing.FakeClock`) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "SystemClock", "Timer"]


class Timer(Protocol):
    """A scheduled callback (`Clock.call_at`) that has not run yet."""

    def cancel(self) -> None:
        """Do not run it."""
        ...


class Clock(Protocol):
    """Where Corral reads time and waits."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for durations)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` in the running event loop once `monotonic()` reaches `when`."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    # `time.monotonic` itself, not a method wrapping it: read several times per model call.
    monotonic = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        # Relative to `time.monotonic`, not `loop.time()`: another loop (uvloop) may keep its
        # own time base.
        return asyncio.get_running_loop().call_later(max(0.0, when - time.monotonic()), callback)
