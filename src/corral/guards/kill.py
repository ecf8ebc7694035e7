"""The kill switch: halt a run, an agent or the whole app; pause agents, workflows or all
non-critical work.

A halt is seen at the next step boundary (every agent, model, tool and human-wait step checks
first) and cancels the calls in flight that it covers, so a halted run stops spending at once. A
pause holds runs at their next step boundary until it is lifted; calls already in flight finish.
The operator surfaces (CLI, HTTP, dashboard) reach this through `App.control`, which also writes
the action to the controls log so other processes apply it too.

The kill switch's whole reach: `KillSwitchStep` (the guard chain, at each attempt: raise if
halted, wait while paused), `ProviderStep` in `corral.guards.chain` (just before the provider is
called: `check`; during the call: `watch`, so a halt cancels it), the run context's step
boundaries (`gate` before tool and human-wait steps), and the app (`track`/`untrack` a run's
workflow and priority for pauses, `apply` operator actions).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from typing import Any, Literal, Protocol, TypeVar

from corral.clock import Clock
from corral.contracts import RunId
from corral.errors import KilledError
from corral.guards.deadlines import Deadline, Deadlines
from corral.guards.step import ModelCall, Next
from corral.model import ModelResponse

__all__ = ["Flag", "FlagStore", "KillSwitch", "KillSwitchStep"]

log = logging.getLogger(__name__)
T = TypeVar("T")

Flag = tuple[
    Literal["halt", "pause"], Literal["all", "run", "agent", "workflow", "noncritical"], str
]
"""(what, scope, name): `("halt", "run", "run-7")`, `("pause", "noncritical", "")`."""


class FlagStore(Protocol):
    """The kill switch's halts and pauses: a versioned set of flags, each with its reason.

    Contract: every `set` and `clear` is atomic and moves `version` forward (also when it
    changes nothing is fine); `flags()` returns one consistent snapshot with the version it
    reflects. A shared backend (many processes) keeps the set and a counter together (a Redis
    hash and `INCR` in one `MULTI`, or a table row per flag and a sequence); each process
    re-reads the snapshot when the version it last saw is behind, so a halt set anywhere is
    seen at the next step boundary everywhere. `tests/state/test_flags.py` is the contract,
    parametrized over backends.
    """

    @property
    def version(self) -> int:
        """Moves forward on every change."""
        ...

    def set(self, flag: Flag, reason: str) -> int:
        """Raise `flag` (or change its reason); the new version."""
        ...

    def clear(self, flag: Flag) -> int:
        """Lower `flag` (absent: nothing changes); the new version."""
        ...

    def flags(self) -> tuple[int, dict[Flag, str]]:
        """(version, every raised flag with its reason): a copy."""
        ...


class Watch(Deadline):
    """A model call in flight (`KillSwitch.watch`): its timeout, and what a halt must match to
    cancel it. A deadline itself, so a call registers one object in one place."""

    __slots__ = ("agent", "halted", "run_id")

    def __init__(
        self, owner: Deadlines, task: asyncio.Task[Any], run_id: RunId, agent: str
    ) -> None:
        # `Deadline.__init__`'s fields set here: one call per model call fewer.
        self._owner = owner
        self.task = task
        self.at = math.inf
        self.expired = False
        self.run_id = run_id
        self.agent = agent
        self.halted = False
        """A halt cancelled the call."""


class KillSwitch:
    """Halted scopes and the in-flight calls they cover.

    Args:
        clock: Call timeouts and run deadlines (`Deadlines`).
        flags: Where halts and pauses live (default: this process,
            `corral.state.memory.MemoryFlags`).
    """

    def __init__(self, clock: Clock | None = None, flags: FlagStore | None = None) -> None:
        if flags is None:
            # The in-process default: stdlib only, so the core may build it.
            from corral.state.memory import MemoryFlags

            flags = MemoryFlags()
        self.flags = flags
        self._seen = -1
        """The flag version the views below reflect."""
        self._all: str | None = None
        self._runs: dict[str, str] = {}
        self._agents: dict[str, str] = {}
        self._paused_agents: dict[str, str] = {}
        self._paused_workflows: dict[str, str] = {}
        self._paused_noncritical: str | None = None
        self._runs_meta: dict[str, tuple[str, str]] = {}  # run -> (workflow, priority)
        self._changed = asyncio.Event()
        self.held: dict[str, str] = {}
        """Runs waiting at a step boundary now, and the pause that holds each."""
        self._held_changed = asyncio.Event()
        self.deadlines = Deadlines(clock)
        """Call timeouts (and, through the app, run deadlines) on one loop timer."""
        self.engaged = False
        """Something is halted or paused now. False (the common case): every step boundary
        passes without looking further, so callers test this before calling `gate`/`check`."""

    def refresh(self) -> None:
        """Catch up with the flag store if it moved on (a halt from another process): rebuild
        the views step boundaries read (`engaged`, `_runs`, ...). Changes made here refresh
        at once; a shared store's are picked up when the app's controls poller calls this."""
        if self.flags.version == self._seen:
            return
        self._seen, raised = self.flags.flags()
        self._all = raised.get(("halt", "all", ""))
        self._paused_noncritical = raised.get(("pause", "noncritical", ""))
        views: dict[tuple[str, str], dict[str, str]] = {
            ("halt", "run"): self._runs,
            ("halt", "agent"): self._agents,
            ("pause", "agent"): self._paused_agents,
            ("pause", "workflow"): self._paused_workflows,
        }
        for view in views.values():
            view.clear()
        for (what, scope, name), reason in raised.items():
            found = views.get((what, scope))
            if found is not None:
                found[name] = reason
        self.engaged = bool(raised)

    async def until_held(self, run_id: RunId) -> str:
        """Wait until `run_id` is held by a pause; returns the pause's scope."""
        while run_id not in self.held:
            changed = self._held_changed
            await changed.wait()
        return self.held[run_id]

    def track(self, run_id: RunId, workflow: str, priority: str) -> None:
        """Know which workflow and priority a run has (pauses by workflow and class)."""
        self._runs_meta[run_id] = (workflow, priority)

    def untrack(self, run_id: RunId) -> None:
        """The run ended: forget it (and a halt that named it)."""
        self._runs_meta.pop(run_id, None)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def pause(
        self,
        *,
        agent: str | None = None,
        workflow: str | None = None,
        noncritical: bool = False,
        reason: str = "",
        quiet: bool = False,
    ) -> None:
        """Hold runs at their next step boundary: calls of `agent`, runs of `workflow`, or every
        run whose priority is not `critical` (`quiet`: log at DEBUG, for controls replayed when
        an app opens)."""
        if agent is not None:
            self.flags.set(("pause", "agent", agent), reason or "paused")
        if workflow is not None:
            self.flags.set(("pause", "workflow", workflow), reason or "paused")
        if noncritical:
            self.flags.set(("pause", "noncritical", ""), reason or "paused")
        self.refresh()
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "pause: agent=%s workflow=%s noncritical=%s (%s)",
            agent,
            workflow,
            noncritical,
            reason,
        )

    def resume(
        self, *, agent: str | None = None, workflow: str | None = None, noncritical: bool = False
    ) -> None:
        """Lift a pause; held runs continue at once."""
        if agent is not None:
            self.flags.clear(("pause", "agent", agent))
        if workflow is not None:
            self.flags.clear(("pause", "workflow", workflow))
        if noncritical:
            self.flags.clear(("pause", "noncritical", ""))
        self.refresh()
        self._wake()

    def apply(
        self, action: str, scope: str, name: str | None, reason: str = "", *, quiet: bool = False
    ) -> None:
        """Apply one operator action from the controls log (`corral.store.controls`); `quiet`
        logs it at DEBUG (the history replayed when an app opens)."""
        run = name if scope == "run" else None
        agent = name if scope == "agent" else None
        workflow = name if scope == "workflow" else None
        if action == "halt":
            self.halt(
                run_id=run, agent=agent, everything=scope == "all", reason=reason, quiet=quiet
            )
        elif action == "release":
            self.release(run_id=run, agent=agent, everything=scope == "all")
        elif action == "pause":
            self.pause(
                agent=agent,
                workflow=workflow,
                noncritical=scope == "noncritical",
                reason=reason,
                quiet=quiet,
            )
        elif action == "resume":
            self.resume(agent=agent, workflow=workflow, noncritical=scope == "noncritical")

    @property
    def state(self) -> dict[str, Any]:
        """What is halted and paused now (for the API and the dashboard)."""
        self.refresh()
        return {
            "halted_all": self._all,
            "halted_runs": dict(self._runs),
            "halted_agents": dict(self._agents),
            "paused_agents": dict(self._paused_agents),
            "paused_workflows": dict(self._paused_workflows),
            "paused_noncritical": self._paused_noncritical,
            "held_runs": dict(self.held),
        }

    def _pause_scope(self, run_id: RunId, agent: str) -> str | None:
        if agent in self._paused_agents:
            return f"agent {agent}"
        meta = self._runs_meta.get(run_id)
        if meta is not None:
            workflow, priority = meta
            if workflow in self._paused_workflows:
                return f"workflow {workflow}"
            if self._paused_noncritical is not None and priority != "critical":
                return "non-critical work"
        return None

    async def gate(self, run_id: RunId, agent: str) -> None:
        """The step boundary: raise if halted, wait while paused (a halt ends the wait).

        Raises:
            KilledError: this run, agent or everything is halted.
        """
        self.check(run_id, agent)
        if not (self._paused_agents or self._paused_workflows or self._paused_noncritical):
            return
        try:
            while (scope := self._pause_scope(run_id, agent)) is not None:
                log.info("run %s held at %s: %s is paused", run_id, agent, scope)
                self.held[run_id] = scope
                held, self._held_changed = self._held_changed, asyncio.Event()
                held.set()
                await self._changed.wait()
                self.check(run_id, agent)
        finally:
            self.held.pop(run_id, None)

    def halt(
        self,
        *,
        run_id: str | None = None,
        agent: str | None = None,
        everything: bool = False,
        reason: str = "",
        quiet: bool = False,
    ) -> int:
        """Halt a run, an agent (in every run) or everything; returns in-flight calls cancelled
        (`quiet`: log at DEBUG when none was, for controls replayed when an app opens)."""
        if everything:
            self.flags.set(("halt", "all", ""), reason or "halted")
        if run_id is not None:
            self.flags.set(("halt", "run", run_id), reason or "halted")
        if agent is not None:
            self.flags.set(("halt", "agent", agent), reason or "halted")
        self.refresh()
        cancelled = 0
        for watch in self.deadlines.live():
            if not isinstance(watch, Watch) or watch.expired or watch.halted:
                continue  # a run's deadline, or a call its timeout or a halt cancelled already
            if self._scope(watch.run_id, watch.agent) is not None and not watch.task.done():
                watch.halted = True
                watch.reschedule(None)  # the halt, not the timeout, ends this call
                watch.task.cancel()
                cancelled += 1
        self._wake()
        log.log(
            logging.DEBUG if quiet and not cancelled else logging.WARNING,
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
            self.flags.clear(("halt", "all", ""))
        if run_id is not None:
            self.flags.clear(("halt", "run", run_id))
        if agent is not None:
            self.flags.clear(("halt", "agent", agent))
        self.refresh()

    def _scope(self, run_id: RunId, agent: str) -> str | None:
        if self._all is not None:
            return f"all: {self._all}"
        if run_id in self._runs:
            return f"run {run_id}: {self._runs[run_id]}"
        if agent in self._agents:
            return f"agent {agent}: {self._agents[agent]}"
        return None

    def check(self, run_id: RunId, agent: str) -> None:
        """Raises:
        KilledError: this run or agent (or everything) is halted."""
        scope = self._scope(run_id, agent)
        if scope is not None:
            raise KilledError(scope)

    async def guard(
        self, run_id: RunId, agent: str, call: Awaitable[T], *, timeout_s: float | None = None
    ) -> T:
        """Await `call` so that a halt covering it cancels it, within `timeout_s`.

        The call runs in the caller's own task (no extra task per model call); a halt or the
        timeout cancels that task, and the cancellation is turned into `KilledError` or
        `TimeoutError` here and taken back with `Task.uncancel()`, so it does not leak into the
        caller's other waits. Timeouts share one loop timer (`corral.guards.deadlines`).
        The model call's hot path uses `watch` / `stopped` / `unwatch` directly (the same
        thing without a coroutine of its own).

        Raises:
            KilledError: a halt cancelled the call.
            TimeoutError: the call took longer than `timeout_s`.
        """
        watch = self.watch(run_id, agent, timeout_s)
        try:
            return await call
        except asyncio.CancelledError:
            self.stopped(watch)
            raise
        finally:
            self.unwatch(watch)

    def watch(self, run_id: RunId, agent: str, timeout_s: float | None) -> Watch:
        """Cover the current task's next wait: a halt of `run_id` or `agent`, or `timeout_s`
        passing, cancels it. Pair with `unwatch` in a `finally`; on `CancelledError` call
        `stopped` first."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task in asyncio
            raise RuntimeError("a kill-switch watch needs a running task")
        watch = Watch(self.deadlines, task, run_id, agent)
        self.deadlines.add(watch, timeout_s)
        return watch

    def stopped(self, watch: Watch) -> None:
        """The watched wait was cancelled: if by us, take the cancellation back and say why.

        Raises:
            TimeoutError: its timeout passed.
            KilledError: a halt cancelled it.
        """
        if (watch.halted or watch.expired) and watch.task.uncancel() == 0:
            if watch.expired:
                raise TimeoutError from None
            scope = self._scope(watch.run_id, watch.agent)
            raise KilledError(scope or "halted") from None

    def unwatch(self, watch: Watch) -> None:
        """The watched wait is over."""
        self.deadlines.end(watch)


class KillSwitchStep:
    """The guard chain's kill switch: each attempt passes the step boundary (raise if halted,
    wait while paused)."""

    def __init__(self, kill: KillSwitch) -> None:
        self.kill = kill

    def __call__(self, call: ModelCall, next: Next) -> Awaitable[ModelResponse]:
        # Not a coroutine: with nothing halted or paused (the common case) the step adds no
        # coroutine level to the call.
        if self.kill.engaged:
            return self._gated(call, next)
        return next(call)

    async def _gated(self, call: ModelCall, next: Next) -> ModelResponse:
        await self.kill.gate(call.run.run_id, call.agent)
        return await next(call)
