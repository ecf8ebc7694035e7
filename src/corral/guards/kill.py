"""The kill switch: halt a run, an agent or the whole app.

A halt is seen at the next step boundary (every model and tool call checks first) and cancels the
model calls in flight that it covers, so a halted run stops spending at once. The operator
surfaces (CLI, HTTP, dashboard) call these methods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from corral.errors import KilledError

__all__ = ["KillSwitch"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class KillSwitch:
    """Halted scopes and the in-flight calls they cover."""

    def __init__(self) -> None:
        self._all: str | None = None
        self._runs: dict[str, str] = {}
        self._agents: dict[str, str] = {}
        # The task running each guarded call -> [run_id, agent, cancelled_by_us].
        self._inflight: dict[asyncio.Task[Any], list[Any]] = {}

    def halt(
        self,
        *,
        run_id: str | None = None,
        agent: str | None = None,
        everything: bool = False,
        reason: str = "",
    ) -> int:
        """Halt a run, an agent (in every run) or everything; returns in-flight calls cancelled."""
        if everything:
            self._all = reason or "halted"
        if run_id is not None:
            self._runs[run_id] = reason or "halted"
        if agent is not None:
            self._agents[agent] = reason or "halted"
        cancelled = 0
        for task, entry in list(self._inflight.items()):
            if self._scope(entry[0], entry[1]) is not None and not task.done() and not entry[2]:
                entry[2] = True
                task.cancel()
                cancelled += 1
        log.warning(
            "kill switch: run=%s agent=%s all=%s (%s); %d calls cancelled",
            run_id,
            agent,
            everything,
            reason,
            cancelled,
        )
        return cancelled

    def release(
        self, *, run_id: str | None = None, agent: str | None = None, everything: bool = False
    ) -> None:
        """Lift a halt."""
        if everything:
            self._all = None
        if run_id is not None:
            self._runs.pop(run_id, None)
        if agent is not None:
            self._agents.pop(agent, None)

    def _scope(self, run_id: str, agent: str) -> str | None:
        if self._all is not None:
            return f"all: {self._all}"
        if run_id in self._runs:
            return f"run {run_id}: {self._runs[run_id]}"
        if agent in self._agents:
            return f"agent {agent}: {self._agents[agent]}"
        return None

    def check(self, run_id: str, agent: str) -> None:
        """Raises:
        KilledError: this run or agent (or everything) is halted."""
        scope = self._scope(run_id, agent)
        if scope is not None:
            raise KilledError(scope)

    async def guard(
        self, run_id: str, agent: str, call: Awaitable[T], *, timeout_s: float | None = None
    ) -> T:
        """Await `call` so that a halt covering it cancels it, within `timeout_s`.

        The call runs in the caller's own task (no extra task per model call); a halt or the
        timeout cancels that task, and the cancellation is turned into `KilledError` or
        `TimeoutError` here and taken back with `Task.uncancel()`, so it does not leak into the
        caller's other waits. (One timer handle instead of `asyncio.timeout`: this runs on every
        model call, and the context manager costs twice as much.)

        Raises:
            KilledError: a halt cancelled the call.
            TimeoutError: the call took longer than `timeout_s`.
        """
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task in asyncio
            return await call
        entry = [run_id, agent, False]
        self._inflight[task] = entry
        expired = False

        def expire() -> None:
            nonlocal expired
            if not entry[2]:
                expired = True
                task.cancel()

        timer = (
            asyncio.get_running_loop().call_later(timeout_s, expire)
            if timeout_s is not None
            else None
        )
        try:
            return await call
        except asyncio.CancelledError:
            if (entry[2] or expired) and task.uncancel() == 0:
                if expired:
                    raise TimeoutError from None
                scope = self._scope(run_id, agent)
                raise KilledError(scope or "halted") from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._inflight.pop(task, None)
