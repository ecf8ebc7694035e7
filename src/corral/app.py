"""The application object: registered workflows, models, storage and the entry points.

This module wires adapters together (the store, the DBOS engine, the providers). It imports them
lazily, inside `open()`, so `import corral` stays light; the logic of a run lives in
`corral.workflow` and `corral._agent_call`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from corral import _gc
from corral._dataclass import quick_init
from corral.clock import Clock, SystemClock
from corral.config import AppConfig
from corral.contracts import JsonValue, RunId, dump_payload, validate_payload
from corral.durable import Engine, EphemeralEngine, EphemeralJournal
from corral.errors import (
    AgentError,
    BudgetExhaustedError,
    CorralError,
    KilledError,
    PayloadError,
    RejectedError,
    TakenOverError,
    UnknownNameError,
    UsageError,
)
from corral.guards.chain import Guards
from corral.guards.policy import PRIORITIES, Priority
from corral.humans import HumanDesk, HumanRequest
from corral.model import Model, Usage
from corral.trace import BatchingRecorder, NullRecorder, Recorder, RunRecord, RunStatus, Tap, Taps
from corral.workflow import RunContext, Workflow, WorkflowFn

if TYPE_CHECKING:
    from corral.observe.alerts import AlertMonitor
    from corral.observe.otlp import OtlpExporter
    from corral.store.ops import Control, Ops

__all__ = ["App", "RunHandle", "RunResult"]

log = logging.getLogger(__name__)

Out = TypeVar("Out", bound=BaseModel)


class _RunIds:
    """Run ids: a keyed BLAKE2b of a counter, the key drawn from the OS once per process (and
    again in a forked child, which would otherwise repeat its parent's ids).

    Why not `os.urandom(16)` per id: the call releases the GIL, and while another thread is busy
    (the store's writer, DBOS's executors) taking it back cost 20-50 us per run. Ids stay as
    unguessable as random ones (a PRF of a counter under a secret 256-bit key) and as unique
    (a fresh key per process). Not `uuid.uuid4()`: it calls `os.urandom` too, and builds a
    `UUID` object."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._key = os.urandom(32)
        self._count = itertools.count()

    def __call__(self) -> str:
        data = next(self._count).to_bytes(8, "little")
        h = hashlib.blake2b(data, key=self._key, digest_size=16).hexdigest()
        # Shaped as a random (version 4) UUID's 32 hex digits, the form `uuid4().hex` gives.
        return f"{h[:12]}4{h[13:16]}{'89ab'[int(h[16], 16) & 3]}{h[17:]}"


new_run_id = _RunIds()
"""A fresh run id: 32 hex digits shaped as a random (version 4) UUID (see `_RunIds`)."""


def _run_record(
    ctx: RunContext,
    durable: bool,
    payload: JsonValue,
    started: datetime,
    status: RunStatus,
    *,
    output: JsonValue = None,
    error: dict[str, Any] | None = None,
    usage: Usage | None = None,
    finished_at: datetime | None = None,
) -> RunRecord:
    """The record of a run in state `status` (what the store and the taps see)."""
    return RunRecord._new(
        run_id=ctx.run_id,
        workflow=ctx.workflow,
        status=status,
        durable=durable,
        user=ctx.user,
        tenant=ctx.tenant,
        tags=ctx.tags,
        input=payload,
        output=output,
        error=error,
        tokens_in=usage.input_tokens if usage else 0,
        tokens_out=usage.output_tokens if usage else 0,
        cost_usd=usage.cost_usd if usage else Decimal(0),
        calls=usage.calls if usage else 0,
        started_at=started,
        finished_at=finished_at,
    )


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult(Generic[Out]):
    """How a run ended.

    `output` is the workflow's validated output when `status` is `succeeded`; otherwise `error`
    describes what stopped it (`code`, `message`, and the error's typed attributes: a guard's
    limit, spent, cycle, ...). When a budget stops a run (`budget_exhausted`), `partial` is the
    best result produced so far and `error["not_completed"]` says what was not done.
    """

    _new: ClassVar[Callable[..., RunResult[Any]]]
    """`RunResult(...)` without the class call's keyword dict (see `corral._dataclass`)."""

    run_id: RunId
    workflow: str
    status: RunStatus
    output: Out | None
    error: dict[str, Any] | None
    usage: Usage
    duration_s: float
    partial: JsonValue = None

    @property
    def cost_usd(self) -> Decimal:
        """What the run's model calls cost."""
        return self.usage.cost_usd

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.status == "succeeded"


class RunHandle(Generic[Out]):
    """A run started with `App.start`; await `result()` for its `RunResult`."""

    def __init__(self, run_id: RunId, task: asyncio.Task[RunResult[Out]]) -> None:
        self.run_id = run_id
        self._task = task

    async def result(self) -> RunResult[Out]:
        """Wait for the run to end."""
        return await asyncio.shield(self._task)

    def done(self) -> bool:
        """Whether the run has ended."""
        return self._task.done()


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
        self._extra_models = dict(models or {})
        self._models: dict[str, Model] = {}
        self._chains: dict[str, list[Model]] = {}
        # Bound once: every run's context holds these (a bound method is a new object per read).
        self._resolvers = (self.model, self.model_chain, self._workflow_named)
        self._gc_held: int | None = None
        self._no_journal = EphemeralJournal()
        self._workflows: dict[str, Workflow] = {}
        self._recorder: Recorder | None = recorder
        self._taps = tuple(taps)
        self._tap: Tap | None = None
        self.exporter: OtlpExporter | None = None
        """The OpenTelemetry exporter, when `config.otlp.endpoint` is set (open app only)."""
        self.alerts: AlertMonitor | None = None
        """Anomaly and threshold alerts, when `config.alerts.enabled` (open app only)."""
        self._store: Any = None
        self.ops: Ops | None = None
        """Human requests, operator controls, API tokens and the audit log (open app only)."""
        self.humans: HumanDesk | None = None
        """Waits for human decisions on behalf of this app's runs (open app only)."""
        self._control_seq = 0
        self._watcher: asyncio.Task[None] | None = None
        self._notifier: asyncio.Task[None] | None = None
        self.notify_failures = 0
        """Human-request notifications the webhook did not accept."""
        self._durable: Engine | None = None
        self._ephemeral = EphemeralEngine()
        self._id_factory = id_factory or new_run_id
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._tasks: dict[asyncio.Task[Any], tuple[str, bool]] = {}
        """Runs started with `start`: task -> (run id, durable)."""
        self._abandoned: set[str] = set()
        """Ephemeral runs `close()` is ending while they wait for a human."""
        self._fresh: set[str] = set()
        """Runs this process just started under a new id (no earlier human waits to count)."""
        self._given: dict[str, BaseModel] = {}
        """Validated inputs of ephemeral runs started here and not yet executing, by run id: the
        run uses the object instead of validating its JSON form again."""
        from corral.models.pricing import PriceTable  # adapter, wired here

        self._prices = PriceTable(self.config.prices)
        self.guards = Guards(
            self.config.guards,
            self.clock,
            seed=self.config.sim.seed,
            tiers=self.config.tiers,
            pricer=self._prices,
        )
        """Breakers, rate limiter, retry budget, daily limits and the kill switch of this app."""

    # -- registration ---------------------------------------------------------------------------

    def workflow(self, fn: WorkflowFn | None = None, /, *, name: str | None = None) -> Any:
        """Register `async def wf(ctx, payload: In) -> Out` under its name (or `name`).

        Raises:
            UsageError: a workflow with that name is already registered.
        """

        def register(func: WorkflowFn) -> WorkflowFn:
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

    async def open(self) -> None:
        """Open the store and launch the durable engine; unfinished runs resume from here.

        Raises:
            StateError: the database is locked, corrupt or from a newer Corral.
            ConfigError: the database URL is unusable.
        """
        if self._started:
            return  # every run calls this: no lock once open
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            from corral.observe.redact import Redactor
            from corral.store.sql import SqlStore  # adapter, imported on use

            if self.config.gc_threshold:
                _gc.hold(self.config.gc_threshold)
                self._gc_held = self.config.gc_threshold
            self._store = await SqlStore.open(
                self.config.database, redactor=Redactor(self.config.trace)
            )
            await self._open_ops()
            self._open_taps()
            if self.alerts is not None:
                await self.alerts.restore(self._store)
            if self._recorder is None:
                self._recorder = self._store
            if self.guards.cache is None and self.guards.semantic is None:
                from corral.state.cache import open_caches

                self.guards.cache, self.guards.semantic = open_caches(
                    self.config.guards.cache, self._store
                )
            self._warn_unpriced()
            await self._ephemeral.launch(self._execute)
            if self.config.durable:
                from corral.engine.dbos import DbosEngine

                self._durable = DbosEngine(
                    self._store,
                    application_version=self.config.application_version,
                    executor_id=self.config.executor_id,
                )
                await self._durable.launch(self._execute)
            self._started = True

    async def _open_ops(self) -> None:
        from corral.store.ops import Ops  # adapter, imported on use

        self.ops = Ops(
            self._store,
            key_file=self.config.audit.key_file,
            checkpoint_every=self.config.audit.checkpoint_every,
        )
        self.humans = HumanDesk(self.ops, self.clock, poll_s=self.config.humans.poll_s)
        await self._sync_controls()
        await self._audit_config()
        self._watcher = asyncio.create_task(self._watch(), name="corral-watch")
        if self.config.humans.webhook_url:
            queue = self.humans.subscribe()
            self._notifier = asyncio.create_task(self._notify(queue), name="corral-notify")

    async def _notify(self, queue: asyncio.Queue[HumanRequest]) -> None:
        """POST every new approval and escalation to `humans.webhook_url` (secrets redacted)."""
        from corral.observe.webhook import post_json

        policy = self.config.humans
        assert policy.webhook_url is not None
        while True:
            request = await queue.get()
            body = {
                "event": "human_request",
                "id": request.id,
                "kind": request.kind,
                "run_id": request.run_id,
                "workflow": request.workflow,
                "subject": request.subject,
                "title": request.title,
                "payload": json.loads(self._store.redactor.text(json.dumps(request.payload))),
                "deadline_at": request.deadline_at.isoformat() if request.deadline_at else None,
                "default": request.default,
                "inbox": f"{policy.dashboard_url.rstrip('/')}/inbox"
                if policy.dashboard_url
                else None,
            }
            try:
                await asyncio.to_thread(
                    post_json, policy.webhook_url, body, user_agent="corral-humans"
                )
            except Exception as exc:  # boundary: a down webhook is logged, never raised
                self.notify_failures += 1
                log.warning("human-request webhook %s failed: %s", policy.webhook_url, exc)

    async def _audit_config(self) -> None:
        assert self.ops is not None
        settings = self.config.public(self._store._safe_url())
        text = json.dumps(settings, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()
        last = await self.ops.audit_entries(action="config.change", limit=1)
        if last and last[0]["details"].get("hash") == digest:
            return
        await self.ops.audit(
            at=self.clock.now(),
            actor=f"process:{self.config.executor_id}",
            action="config.change",
            subject="config",
            details={"hash": digest, "config": json.loads(text)},
        )

    async def _watch(self) -> None:
        """Every `humans.poll_s`: apply operator controls and wake waiters decided elsewhere."""
        assert self.humans is not None
        while True:
            await asyncio.sleep(self.config.humans.poll_s)
            try:
                await self._sync_controls()
                await self.humans.poll()
            except CorralError as exc:  # a locked database: try again next round
                log.warning("operator controls not synced: %s", exc)

    async def _sync_controls(self) -> None:
        assert self.ops is not None
        for control in await self.ops.controls_since(self._control_seq):
            self._apply(control)
            self._control_seq = control.seq

    def _apply(self, control: Control) -> None:
        by = f"by {control.by}"
        reason = f"{control.reason} ({by})" if control.reason else by
        self.guards.kill.apply(control.action, control.scope, control.name, reason)

    # -- operators --------------------------------------------------------------------------------

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
        assert self.ops is not None
        control = await self.ops.add_control(
            action, scope, name, by=by, at=self.clock.now(), reason=reason
        )
        await self._sync_controls()
        return control

    async def cancel(self, run_id: str, *, by: str, reason: str = "") -> Control:
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
        assert self.ops is not None
        assert self.humans is not None
        row = await self.ops.decide(
            request_id, action, by=by, at=self.clock.now(), value=value, comment=comment
        )
        self.humans.notify(request_id)
        return row

    def _open_taps(self) -> None:
        taps: list[Tap] = list(self._taps)
        if self.config.otlp.endpoint and self.exporter is None:
            from corral.observe.otlp import OtlpExporter

            # The store's redactor: a span's redacted fields are then computed once for both.
            self.exporter = OtlpExporter(self.config.otlp, self._store.redactor)
        if self.exporter is not None:
            taps.append(self.exporter)
        if self.config.alerts.enabled:
            from corral.observe.alerts import AlertMonitor

            self.alerts = AlertMonitor(self.config.alerts, self._store, self.clock)
            taps.append(self.alerts)
        self._tap = (taps[0] if len(taps) == 1 else Taps(taps)) if taps else None

    async def close(self) -> None:
        """Wait for started runs, then stop the engine and close the store.

        Runs waiting for a human are not waited for (that can take a day): a durable one stays
        pending, its request stays in the inbox, and it resumes when the app opens again; an
        ephemeral one cannot resume, so it ends `killed` with the reason.
        """
        waiting = self.humans.waiting_runs if self.humans is not None else set()
        held = {t: v for t, v in self._tasks.items() if v[0] in waiting}
        others = [t for t in self._tasks if t not in held]
        if others:
            await asyncio.gather(*others, return_exceptions=True)
        for run_task, (run_id, durable) in held.items():
            if durable:
                log.warning("run %s waits for a human; it resumes when the app opens again", run_id)
                continue
            self._abandoned.add(run_id)
            run_task.cancel()
            await asyncio.gather(run_task, return_exceptions=True)
        for task in (self._watcher, self._notifier):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watcher = self._notifier = None
        if self.ops is not None:
            # Sign the chain's head, so the entries since the last checkpoint are covered too.
            try:
                await self.ops.checkpoint(self.clock.now())
            except CorralError as exc:
                log.warning("audit checkpoint at close failed: %s", exc)
        self.ops = None
        self.humans = None
        if self.alerts is not None:
            await self.alerts.drain()
            self.alerts = None
        if self.exporter is not None:
            await asyncio.to_thread(self.exporter.close)
            self.exporter = None
        await self.guards.close()
        if self.guards.cache is not None and self.guards.cache is not self._store:
            close = getattr(self.guards.cache, "aclose", None)
            if close is not None:
                await close()
        self.guards.cache = None
        self.guards.semantic = None
        for model in self._models.values():
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()
        self._models.clear()
        self._chains.clear()
        if self._durable is not None:
            await self._durable.close()
            self._durable = None
        if self._store is not None:
            await self._store.close()
            self._store = None
        self._started = False
        if self._gc_held is not None:
            _gc.release(self._gc_held)
            self._gc_held = None

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
        run_id: str | None = None,
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
        rid, wf, data, meta, engine = await self._prepare(
            workflow, payload, user, tenant, tags, durable, run_id, deadline_s, priority
        )
        t0 = self.clock.monotonic()
        try:
            if engine is self._ephemeral:  # what `EphemeralEngine.run` does, one coroutine less
                record = await self._execute(wf.name, rid, data, meta)
            else:
                record = await engine.run(rid, wf.name, data, meta)
        finally:
            self._given.pop(rid, None)  # normally taken by the run already
        return self._result(wf, record, self.clock.monotonic() - t0)

    async def start(
        self,
        workflow: str,
        payload: BaseModel | dict[str, Any] | str,
        **options: Any,
    ) -> RunHandle[Any]:
        """Like `run`, but return a `RunHandle` at once; the app owns the task until `close`."""
        rid, wf, data, meta, engine = await self._prepare(
            workflow,
            payload,
            options.get("user"),
            options.get("tenant"),
            options.get("tags", ()),
            options.get("durable"),
            options.get("run_id"),
            options.get("deadline_s"),
            options.get("priority", "interactive"),
        )

        async def go() -> RunResult[Any]:
            t0 = self.clock.monotonic()
            try:
                record = await engine.run(rid, wf.name, data, meta)
            finally:
                self._given.pop(rid, None)  # normally taken by the run already
            return self._result(wf, record, self.clock.monotonic() - t0)

        task = asyncio.create_task(go(), name=f"corral-run-{rid}")
        self._tasks[task] = (rid, bool(meta.get("durable")))
        task.add_done_callback(lambda t: self._tasks.pop(t, None))
        return RunHandle(rid, task)

    async def resume(self) -> list[RunResult[Any]]:
        """Wait for every unfinished durable run of this executor to finish and return them.

        Runs interrupted by a crash are resumed by `open()`; this collects their results.
        """
        await self.open()
        if self._durable is None:
            return []
        results = []
        for rid in await self._durable.pending():
            t0 = self.clock.monotonic()
            record = await self._durable.wait(rid)
            wf = self._workflows.get(record.get("workflow", ""))
            if wf is None:
                raise UnknownNameError(
                    "workflow", record.get("workflow", "?"), list(self._workflows)
                )
            results.append(self._result(wf, record, self.clock.monotonic() - t0))
        return results

    async def _prepare(
        self,
        workflow: str,
        payload: Any,
        user: str | None,
        tenant: str | None,
        tags: list[str] | tuple[str, ...],
        durable: bool | None,
        run_id: str | None,
        deadline_s: float | None = None,
        priority: str = "interactive",
    ) -> tuple[RunId, Workflow, JsonValue, dict[str, Any], Engine]:
        wf = self._workflows.get(workflow)
        if wf is None:
            raise UnknownNameError("workflow", workflow, list(self._workflows))
        try:
            checked = validate_payload(
                wf.input, payload, agent=wf.name, code="invalid_input", role="input of workflow"
            )
        except AgentError as exc:
            raise PayloadError(exc.reason, errors=exc.details.get("errors")) from exc
        data = dump_payload(checked)
        await self.open()
        want_durable = self.config.durable if durable is None else durable
        if want_durable and self._durable is None:
            raise UsageError("durable runs need AppConfig(durable=True) when the app starts")
        engine: Engine = self._durable if want_durable and self._durable else self._ephemeral
        if priority not in PRIORITIES:
            raise UsageError(f"unknown priority {priority!r}; use one of {list(PRIORITIES)}")
        if deadline_s is not None and not deadline_s > 0:
            raise UsageError(f"deadline_s must be a positive number of seconds, got {deadline_s!r}")
        limit = self.config.deadline_s if deadline_s is None else deadline_s
        meta = {
            "user": user,
            "tenant": tenant,
            "tags": list(tags),
            "durable": want_durable,
            # Absolute, so a run resumed in another process keeps its original deadline.
            "deadline_s": limit,
            "deadline_at": self.clock.now().timestamp() + limit,
            "priority": priority,
        }
        rid = RunId(run_id or self._id_factory())
        if run_id is None:
            self._fresh.add(rid)  # a new id: it has no past to look up when it starts
        if not want_durable:
            self._given[rid] = checked
        return rid, wf, data, meta, engine

    def _result(self, wf: Workflow, record: dict[str, Any], duration_s: float) -> RunResult[Any]:
        raw = record.get("output")
        output, partial = None, None
        if record["status"] == "succeeded":
            # An ephemeral run hands over its validated output; a durable one's is stored JSON.
            output = record.pop("value", None)
            if output is None:
                output = wf.output.model_validate(raw) if raw is not None and wf.output else raw
        else:
            partial = raw
        return RunResult._new(
            run_id=RunId(record["run_id"]),
            workflow=wf.name,
            status=record["status"],
            output=output,
            partial=partial,
            error=record.get("error"),
            usage=record.pop("usage_obj", None) or Usage.from_dict(record.get("usage") or {}),
            duration_s=duration_s,
        )

    async def _execute(
        self, workflow: str, run_id: RunId, payload: JsonValue, meta: dict[str, Any]
    ) -> dict[str, Any]:
        """The body of every run, durable or not: build the context, run, record the outcome."""
        wf = self._workflows.get(workflow)
        if wf is None:
            raise UnknownNameError("workflow", workflow, list(self._workflows))
        recorder = BatchingRecorder(self._recorder or NullRecorder(), tap=self._tap)
        durable = bool(meta.get("durable"))
        user, tenant = meta.get("user"), meta.get("tenant")
        priority = str(meta.get("priority", "interactive"))
        ctx = RunContext(
            run_id=run_id,
            workflow=wf.name,
            # An ephemeral run's journal remembers nothing: no coroutine to fetch it.
            journal=await self._durable.journal(run_id, recorder)
            if durable and self._durable is not None
            else self._no_journal,
            recorder=recorder,
            resolve_model=self._resolvers[0],
            resolve_chain=self._resolvers[1],
            resolve_workflow=self._resolvers[2],
            humans=self.humans,
            human_policy=self.config.humans,
            auditor=self.ops,
            clock=self.clock,
            user=user,
            tenant=tenant,
            tags=tuple(meta.get("tags") or ()),
            call_timeout_s=self.config.call_timeout_s,
            guards=self.guards.run(run_id, priority=priority, tenant=tenant, user=user),
        )
        started = self.clock.now()
        self.guards.kill.track(run_id, wf.name, priority)
        # Without a store or a tap (spans off, alerts off) nobody sees run records: skip them.
        # Corral's own taps (alerts, OTLP) skip the `running` record too: only the store and
        # the app's `taps` see it.
        stored = not isinstance(recorder.inner, NullRecorder)
        keeps_records = self._tap is not None or stored
        if stored or self._taps:
            await recorder.record_run(_run_record(ctx, durable, payload, started, "running"))
        status: RunStatus = "succeeded"
        output: JsonValue = None
        error: dict[str, Any] | None = None
        limit = float(meta.get("deadline_s", self.config.deadline_s))
        started_ts = started.timestamp()  # `started` is now: reading the clock again costs
        deadline_at = float(meta.get("deadline_at", started_ts + limit))
        try:
            # Time spent waiting for humans does not count against the deadline (a run may wait
            # a day for an approval); the store knows how long a resumed run has waited so far.
            waited = 0.0
            if run_id in self._fresh:
                self._fresh.discard(run_id)
            elif durable and self.ops is not None:
                waited = await self.ops.human_wait_s(run_id, started)
            remaining = deadline_at + waited - started_ts
            if remaining <= 0:
                raise TimeoutError
            # The deadline shares the loop timer of the call timeouts (asyncio.timeout would add
            # a timer per run); a human wait holds it (`ctx._hold`).
            deadlines = self.guards.kill.deadlines
            deadline = ctx._hold.timer = deadlines.start(remaining)
            try:
                given = self._given.pop(run_id, None)
                if given is None:
                    given = wf.input.model_validate(payload)
                value = await wf.fn(ctx, given)
            except asyncio.CancelledError:
                if deadline.expired and deadline.task.uncancel() == 0:
                    raise TimeoutError from None
                raise
            finally:
                deadlines.end(deadline)
            if wf.output is not None:
                value = validate_payload(
                    wf.output,
                    value,
                    agent=wf.name,
                    code="invalid_output",
                    role="output of workflow",
                )
            output = dump_payload(value) if value is not None else None
        except BudgetExhaustedError as exc:
            # Stop with the best result so far and say what was not done.
            status, error = "budget_exhausted", exc.to_dict()
            best_agent, output = ctx.best if ctx.best is not None else (None, None)
            error["best_result_from"] = best_agent
            error["not_completed"] = (
                f"workflow {wf.name!r} stopped before finishing: the call that needed "
                f"{exc.details.get('needed')} {exc.dimension} and everything after it"
            )
        except KilledError as exc:
            status, error = "killed", exc.to_dict()
        except RejectedError as exc:
            status, error = "rejected", exc.to_dict()
        except TakenOverError as exc:
            status, error = "taken_over", exc.to_dict()
        except CorralError as exc:
            status, error = "failed", exc.to_dict()
        except TimeoutError:
            status = "deadline_exceeded"
            error = {
                "code": "deadline_exceeded",
                "message": f"run exceeded its deadline of {limit:g}s",
                "deadline_s": limit,
            }
        except Exception as exc:  # boundary: a bug in user code fails the run, not the app
            log.exception("workflow %s raised", wf.name, extra={"run_id": run_id})
            status = "failed"
            error = {"code": "workflow_error", "message": f"{type(exc).__name__}: {exc}"}
        except asyncio.CancelledError:
            if run_id not in self._abandoned:
                raise
            self._abandoned.discard(run_id)
            # `close()` ended an ephemeral run that waited for a human: say so, then stop.
            await recorder.record_run(
                _run_record(
                    ctx,
                    durable,
                    payload,
                    started,
                    "killed",
                    error={
                        "code": "abandoned",
                        "message": "the app closed while this ephemeral run waited for a "
                        "human; only durable runs survive a restart",
                    },
                    finished_at=self.clock.now(),
                )
            )
            raise
        finally:
            self.guards.kill.untrack(run_id)
        usage = ctx.usage
        reviewed = self.ops is not None and self.config.humans.review_share(wf.name) > 0
        if status == "succeeded" and reviewed:
            await self._maybe_review(wf.name, run_id, payload, output)
        if keeps_records:
            finished = _run_record(
                ctx,
                durable,
                payload,
                started,
                status,
                output=output,
                error=error,
                usage=usage,
                finished_at=self.clock.now(),
            )
            await recorder.record_run(finished)
        record = {
            "run_id": run_id,
            "workflow": wf.name,
            "status": status,
            "output": output,
            "error": error,
        }
        if durable:  # stored as JSON
            record["usage"] = usage.to_dict()
        else:  # handed over in this process: the objects themselves
            record["usage_obj"] = usage
            if status == "succeeded" and wf.output is not None:
                record["value"] = value
        return record

    async def _maybe_review(
        self, workflow: str, run_id: str, payload: JsonValue, output: JsonValue
    ) -> None:
        """Queue a sampled share of succeeded runs for review (never waits for the review).

        The sample is a hash of the run id, so a resumed run makes the same choice."""
        share = self.config.humans.review_share(workflow)
        if share <= 0 or self.ops is None:
            return
        digest = hashlib.sha256(f"review:{run_id}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 >= share:
            return
        await self.ops.open_request(
            HumanRequest(
                id=f"{run_id}:review",
                run_id=run_id,
                step_id="review",
                kind="review",
                workflow=workflow,
                subject=workflow,
                title=f"review a run of {workflow}",
                payload={"input": payload, "output": output},
                created_at=self.clock.now(),
            )
        )

    def _warn_unpriced(self) -> None:
        from corral.models.pricing import UNKNOWN_PRICE, known_price

        chains = [(t, m) for t, m in self.config.tiers.items()]
        chains += [(n, m) for n, ms in self.config.fallbacks.items() for m in ms]
        for where, model in chains:
            if not known_price(model, self.config.prices):
                log.warning(
                    "model %s (%s) has no known price: budgets will charge it $%s / $%s per "
                    "million input / output tokens until you set prices.%s",
                    model,
                    where,
                    UNKNOWN_PRICE.input_per_mtok,
                    UNKNOWN_PRICE.output_per_mtok,
                    model.split(":", 1)[0],
                )

    def _workflow_named(self, name: str) -> Workflow:
        wf = self._workflows.get(name)
        if wf is None:
            raise UnknownNameError("workflow", name, list(self._workflows))
        return wf

    async def spans(self, run_id: str) -> list[dict[str, Any]]:
        """The recorded spans of a run, in step order (from the app's database)."""
        await self.open()
        spans: list[dict[str, Any]] = await self._store.list_spans(run_id)
        return spans

    # -- models ---------------------------------------------------------------------------------

    def model_chain(self, name: str) -> list[Model]:
        """The models a tier or model name resolves to: the primary, then its fallbacks (the
        providers themselves: the guard chain prices their calls).

        The list is shared between calls (resolved once per name): do not change it.

        Raises:
            UnknownNameError: a tier or provider nobody knows.
        """
        found = self._chains.get(name)
        if found is not None:
            return found
        chain = [self._provider(name)]
        concrete = self.config.tiers.get(name, name)
        for fallback in (
            *self.config.fallbacks.get(name, ()),
            *self.config.fallbacks.get(concrete, ()),
        ):
            if all(m.name != fallback for m in chain):
                chain.append(self._provider(fallback))
        self._chains[name] = chain
        return chain

    def model(self, name: str) -> Model:
        """Resolve a tier (`small`) or concrete model (`sim:small`) to a priced `Model`.

        Raises:
            UnknownNameError: neither a tier nor a known provider.
        """
        from corral.models.pricing import Priced

        return Priced(self._provider(name), self._prices)

    def _provider(self, name: str) -> Model:
        """The provider's own model for a tier or concrete model name (unpriced: the guard
        chain prices its calls)."""
        concrete = self.config.tiers.get(name, name)
        found = self._models.get(concrete)
        if found is not None:
            return found
        if concrete in self._extra_models:
            model = self._extra_models[concrete]
        elif ":" in concrete:
            from corral.models import build_model  # adapter, imported on use

            model = build_model(concrete, self.config, self.clock)
        else:
            raise UnknownNameError("model or tier", name, list(self.config.tiers))
        self._models[concrete] = model
        return model
