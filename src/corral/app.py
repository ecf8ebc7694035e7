"""The application object: registered workflows, the lifecycle and the entry points.

`App` registers workflows, opens and closes the app, and delegates: the adapters are wired in
`corral._wiring` (the composition root), runs execute in `corral._run`, models resolve in
`corral._models`, operator controls and human decisions go through `corral._operators`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel

from corral import _wiring
from corral._models import Models
from corral._result import RunHandle, RunResult
from corral._run import LiveRun, Runner
from corral._run_ids import new_run_id
from corral.clock import Clock, SystemClock
from corral.config import AppConfig
from corral.contracts import JsonValue, RunId
from corral.durable import Engine
from corral.errors import UnknownNameError, UsageError
from corral.guards.chain import Guards
from corral.guards.policy import Priority
from corral.humans import HumanDesk
from corral.model import Model
from corral.trace import Recorder, Tap
from corral.workflow import Workflow, WorkflowFn

if TYPE_CHECKING:
    from corral._wiring import Wiring
    from corral.observe.alerts import AlertMonitor
    from corral.observe.otlp import OtlpExporter
    from corral.store.ops import Control, Ops
    from corral.store.sql import SqlStore

__all__ = ["App", "RunHandle", "RunResult", "new_run_id"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=WorkflowFn)


class App:
    """A Corral application.

    Args:
        config: Database, tiers, prices, simulator and run defaults; `AppConfig()` is safe.
        models: Extra concrete models by name (`"mine:fast": MyModel()`), used before providers.
        clock: Time source (inject `corral.testing.FakeClock` in tests).
        recorder: Where spans go. Default: the SQL store of `config.database`.
        id_factory: Makes run ids (inject for deterministic tests).
        taps: Extra observers of every span and run record (see `corral.trace.Tap`).

    Example:
        ```python
        app = App()

        @app.workflow
        async def answer(ctx: RunContext, q: Question) -> Answer:
            return await ctx.call(answerer, q)

        async with app:
            result = await app.run("answer", {"text": "hi"})
        ```
    """

    def __init__(
        self,
        config: AppConfig | None = None,
        *,
        models: dict[str, Model] | None = None,
        clock: Clock | None = None,
        recorder: Recorder | None = None,
        id_factory: Callable[[], str] | None = None,
        taps: Sequence[Tap] = (),
    ) -> None:
        self.config = config or AppConfig()
        self.clock: Clock = clock or SystemClock()
        self._prices = _wiring.price_table(self.config)
        self._models = Models(
            lambda: self.config,
            dict(models or {}),
            lambda name, config: _wiring.build_model(name, config, self.clock),
            lambda model: _wiring.price_model(model, self._prices),
        )
        self._workflows: dict[str, Workflow] = {}
        self._recorder: Recorder | None = recorder
        self._taps = tuple(taps)
        self._id_factory = id_factory or new_run_id
        self._wiring: Wiring | None = None
        self._runner: Runner | None = None
        self._start_lock: asyncio.Lock | None = None
        self.exporter: OtlpExporter | None = None
        """The OpenTelemetry exporter, when `config.otlp.endpoint` is set (open app only)."""
        self.alerts: AlertMonitor | None = None
        """Anomaly and threshold alerts, when `config.alerts.enabled` (open app only)."""
        self.ops: Ops | None = None
        """Human requests, operator controls, API tokens and the audit log (open app only)."""
        self.humans: HumanDesk | None = None
        """Waits for human decisions on behalf of this app's runs (open app only)."""
        self.guards = Guards(
            self.config.guards,
            self.clock,
            seed=self.config.sim.seed,
            tiers=self.config.tiers,
            pricer=self._prices,
        )
        """Breakers, rate limiter, retry budget, daily limits and the kill switch of this app."""

    # -- registration ---------------------------------------------------------------------------

    @overload
    def workflow(self, fn: F, /) -> F: ...

    @overload
    def workflow(self, fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...

    def workflow(self, fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
        """Register `async def wf(ctx, payload: In) -> Out` under its name (or `name`); as
        `@app.workflow` or `@app.workflow(name="...")`. The function is returned unchanged.

        Raises:
            UsageError: a workflow with that name is already registered.
            TypeError: the function is not `async def (ctx, payload: SomeModel)`.
        """

        def register(func: F) -> F:
            wf = Workflow.from_function(func, name)
            if wf.name in self._workflows:
                raise UsageError(f"workflow {wf.name!r} is registered twice")
            self._workflows[wf.name] = wf
            return func

        if fn is not None:
            return register(fn)
        return register

    @property
    def workflows(self) -> dict[str, Workflow]:
        """Registered workflows by name."""
        return dict(self._workflows)

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        """Whether the app is open (between `open()` and `close()`)."""
        return self._runner is not None

    async def open(self) -> None:
        """Open the store and launch the durable engine; unfinished runs resume from here.

        Raises:
            StateError: the database is locked, corrupt or from a newer Corral.
            ConfigError: the database URL is unusable, a tier or fallback names a provider
                Corral does not know, or a hosted provider's API key is missing.
        """
        await self._opened()

    async def _opened(self) -> Runner:
        """The runner of the open app (opening it first): what `run` and `start` delegate to."""
        if self._runner is not None:
            return self._runner  # every run calls this: no lock once open
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._runner is not None:
                return self._runner
            # In a thread: a secrets file may be read.
            await asyncio.to_thread(_wiring.check_models, self.config, self._models.given)
            wiring = await _wiring.open_adapters(
                self.config, self.clock, self.guards, self._taps, self.exporter
            )
            self._wiring = wiring
            self.ops, self.humans = wiring.ops, wiring.humans
            self.exporter, self.alerts = wiring.exporter, wiring.alerts
            if self._recorder is None:
                self._recorder = wiring.store
            runner = Runner(
                config=self.config,
                clock=self.clock,
                workflows=self._workflows,
                guards=self.guards,
                recorder=self._recorder,
                tap=wiring.tap,
                has_taps=bool(self._taps),
                durable=None,
                ledger=wiring.ops,
                effects=wiring.store,
                humans=wiring.humans,
                # Bound once: every run's context holds these (a bound method is a new object
                # per read).
                resolvers=(self._models.model, self._models.chain, self._workflow_named),
                id_factory=self._id_factory,
            )
            await runner.ephemeral.launch(runner.execute_start)
            if self.config.durable:
                runner.durable = await _wiring.launch_durable(
                    wiring, self.config, runner.execute_start
                )
            self._runner = runner
            return runner

    async def close(self) -> None:
        """Wait for started runs, then stop the engine and close the store.

        Runs waiting for a human are not waited for (that can take a day): a durable one stays
        pending, its request stays in the inbox, and it resumes when the app opens again; an
        ephemeral one cannot resume, so it ends `killed` with the reason.
        """
        runner, wiring = self._runner, self._wiring
        if runner is not None:
            waiting = self.humans.waiting_runs if self.humans is not None else set()
            started = [r for r in runner.live.values() if r.task is not None]
            held = [r for r in started if r.start.run_id in waiting]
            others = [r.task for r in started if r not in held and r.task is not None]
            if others:
                await asyncio.gather(*others, return_exceptions=True)
            for live in held:
                assert live.task is not None
                if live.start.durable:
                    log.warning(
                        "run %s waits for a human; it resumes when the app opens again",
                        live.start.run_id,
                    )
                    continue
                live.abandoned = True
                live.task.cancel()
                await asyncio.gather(live.task, return_exceptions=True)
        self._runner = None
        self.ops = self.humans = None
        self.alerts = self.exporter = None
        await self._models.close()
        if wiring is not None:
            await wiring.close(self.guards, self.clock)
        self._wiring = None

    # -- running --------------------------------------------------------------------------------

    async def run(
        self,
        workflow: str,
        payload: BaseModel | dict[str, Any] | str,
        *,
        user: str | None = None,
        tenant: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
        durable: bool | None = None,
        run_id: RunId | str | None = None,
        deadline_s: float | None = None,
        priority: Priority = "interactive",
    ) -> RunResult[Any]:
        """Run `workflow` to the end and return its `RunResult`.

        The payload is validated before anything is written, so a bad call leaves no trace.
        Failures inside the run (an agent error, the deadline) come back in the result.

        Args:
            workflow: A registered workflow name.
            payload: Its input (model instance, dict or JSON text).
            user: Who the run is for (cost attribution).
            tenant: Who is billed.
            tags: Labels shown by `corral runs`.
            durable: Journal every step (default from config); `False` for latency-critical work.
            run_id: Give the run a known id; starting an id twice executes it once.
            deadline_s: Wall-clock limit for the whole run (default `config.deadline_s`). It is
                stored with the run: a run resumed after a crash keeps its original deadline.
            priority: `critical`, `interactive` (default) or `batch`: the rate limiter serves
                higher classes first (with aging), and daily hard limits pause runs below
                `critical` instead of failing them.

        Raises:
            UnknownNameError: no workflow with that name.
            PayloadError: the payload does not fit the workflow's input or is not JSON.
        """
        runner = await self._opened()
        live, engine = runner.prepare(
            workflow,
            payload,
            user=user,
            tenant=tenant,
            tags=tags,
            durable=durable,
            run_id=run_id,
            deadline_s=deadline_s,
            priority=priority,
        )
        t0 = self.clock.monotonic()
        if engine is runner.ephemeral:  # what `EphemeralEngine.run` does, one coroutine less
            outcome = await runner.execute(live)
        else:
            rid = live.start.run_id
            runner.live[rid] = live
            try:
                outcome = await engine.run(live.start)
            finally:
                runner.live.pop(rid, None)
        return runner.result(live.workflow, outcome, self.clock.monotonic() - t0)

    async def start(
        self,
        workflow: str,
        payload: BaseModel | dict[str, Any] | str,
        *,
        user: str | None = None,
        tenant: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
        durable: bool | None = None,
        run_id: RunId | str | None = None,
        deadline_s: float | None = None,
        priority: Priority = "interactive",
    ) -> RunHandle[Any]:
        """Start `workflow` and return a `RunHandle` at once; the app owns the run's task until
        `close`. Takes the same arguments as `run`, checked before it returns.

        The payload is validated before anything is written, so a bad call leaves no trace.
        Failures inside the run (an agent error, the deadline) come back in the result.

        Args:
            workflow: A registered workflow name.
            payload: Its input (model instance, dict or JSON text).
            user: Who the run is for (cost attribution).
            tenant: Who is billed.
            tags: Labels shown by `corral runs`.
            durable: Journal every step (default from config); `False` for latency-critical work.
            run_id: Give the run a known id; starting an id twice executes it once.
            deadline_s: Wall-clock limit for the whole run (default `config.deadline_s`). It is
                stored with the run: a run resumed after a crash keeps its original deadline.
            priority: `critical`, `interactive` (default) or `batch`: the rate limiter serves
                higher classes first (with aging), and daily hard limits pause runs below
                `critical` instead of failing them.

        Raises:
            UnknownNameError: no workflow with that name.
            PayloadError: the payload does not fit the workflow's input or is not JSON.
        """
        runner = await self._opened()
        live, engine = runner.prepare(
            workflow,
            payload,
            user=user,
            tenant=tenant,
            tags=tags,
            durable=durable,
            run_id=run_id,
            deadline_s=deadline_s,
            priority=priority,
        )
        rid = live.start.run_id
        task = asyncio.create_task(
            self._finish_started(runner, live, engine), name=f"corral-run-{rid}"
        )
        live.task = task
        runner.live[rid] = live
        return RunHandle(rid, task)

    async def _finish_started(
        self, runner: Runner, live: LiveRun, engine: Engine
    ) -> RunResult[Any]:
        t0 = self.clock.monotonic()
        try:
            outcome = await engine.run(live.start)
        finally:
            runner.live.pop(live.start.run_id, None)
        return runner.result(live.workflow, outcome, self.clock.monotonic() - t0)

    async def resume(self) -> list[RunResult[Any]]:
        """Wait for every unfinished durable run of this executor to finish and return them.

        Runs interrupted by a crash are resumed by `open()`; this collects their results.

        Raises:
            StateError: the engine's record of a run is corrupt (or was tampered with).
        """
        runner = await self._opened()
        if runner.durable is None:
            return []
        results = []
        for rid in await runner.durable.pending():
            t0 = self.clock.monotonic()
            outcome = await runner.durable.wait(rid)
            wf = runner.workflow(outcome.workflow)
            results.append(runner.result(wf, outcome, self.clock.monotonic() - t0))
        return results

    @property
    def store(self) -> SqlStore:
        """The open app's run database: runs, spans, costs, alerts (the dashboard reads it).

        Raises:
            UsageError: the app is not open.
        """
        if self._wiring is None:
            raise UsageError("the app is not open: use `async with app` or `await app.open()`")
        return self._wiring.store

    def _workflow_named(self, name: str) -> Workflow:
        wf = self._workflows.get(name)
        if wf is None:
            raise UnknownNameError("workflow", name, list(self._workflows))
        return wf

    async def spans(self, run_id: RunId | str) -> list[dict[str, Any]]:
        """The recorded spans of a run, in step order (from the app's database)."""
        await self.open()
        spans: list[dict[str, Any]] = await self.store.list_spans(RunId(run_id))
        return spans

    # -- operators ------------------------------------------------------------------------------

    @property
    def notify_failures(self) -> int:
        """Human-request notifications the webhook did not accept."""
        return self._wiring.operators.notify_failures if self._wiring is not None else 0

    async def control(
        self, action: str, scope: str, name: str | None = None, *, by: str, reason: str = ""
    ) -> Control:
        """An operator action, effective in this process at once and in every other process on
        the same database within `humans.poll_s`; written to the audit log.

        Args:
            action: `halt` / `release` (scopes `run`, `agent`, `all`) or `pause` / `resume`
                (scopes `agent`, `workflow`, `noncritical`).
            scope: What it applies to.
            name: The run id, agent or workflow name (not for `all` / `noncritical`).
            by: Who did it (a token's name, a user).

        Raises:
            UsageError: an unknown action, scope, or a scope that needs a name.
        """
        await self.open()
        assert self._wiring is not None
        return await self._wiring.operators.control(action, scope, name, by=by, reason=reason)

    async def cancel(self, run_id: RunId | str, *, by: str, reason: str = "") -> Control:
        """Halt one run: its in-flight model call is cancelled and it ends `killed` at once."""
        return await self.control("halt", "run", run_id, by=by, reason=reason)

    async def decide(
        self,
        request_id: str,
        action: str,
        *,
        by: str,
        value: JsonValue = None,
        comment: str = "",
    ) -> dict[str, Any]:
        """Decide a human request (approve, reject, edit, answer, take_over, review); the
        waiting run continues at once in this process, within `humans.poll_s` elsewhere.

        Raises:
            NotFoundError, ConflictError, PayloadError, UsageError: see `Ops.decide`.
        """
        await self.open()
        assert self._wiring is not None
        return await self._wiring.operators.decide(
            request_id, action, by=by, value=value, comment=comment
        )

    # -- models ---------------------------------------------------------------------------------

    def model_chain(self, name: str) -> list[Model]:
        """The models a tier or model name resolves to: the primary, then its fallbacks (the
        providers themselves: the guard chain prices their calls).

        The list is shared between calls (resolved once per name): do not change it.

        Raises:
            UnknownNameError: a tier or provider nobody knows.
        """
        return self._models.chain(name)

    def model(self, name: str) -> Model:
        """Resolve a tier (`small`) or concrete model (`sim:small`) to a priced `Model`.

        Raises:
            UnknownNameError: neither a tier nor a known provider.
        """
        return self._models.model(name)
