"""Running a workflow: validating a start, executing its body, and turning how it ended into a
`RunOutcome` and a `RunResult`.

The body itself runs in `corral._finish.finish`, shared with sub-workflows. `Runner.prepare` is
the one place that decides whether a run is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from pydantic import BaseModel

from corral._finish import ended_by, finish
from corral._human_steps import sample_for_review
from corral._log import enter_run, leave_run
from corral._result import RunResult
from corral._services import Auditor, RunServices, RunStats
from corral.clock import Clock
from corral.config import AppConfig
from corral.contracts import JsonValue, RunId, dump_payload, validate_payload
from corral.durable import (
    Effects,
    Engine,
    EphemeralEngine,
    EphemeralJournal,
    Journal,
    RunOutcome,
    RunStart,
)
from corral.errors import (
    AgentError,
    CorralError,
    DeadlineExceededError,
    PayloadError,
    UnknownNameError,
    UsageError,
)
from corral.guards.budget import Cost
from corral.guards.chain import Guards
from corral.guards.deadlines import DeadlineHold
from corral.guards.policy import PRIORITIES, Priority
from corral.humans import HumanDesk, HumanStore
from corral.model import Model, Usage
from corral.trace import (
    BatchingRecorder,
    NullRecorder,
    Recorder,
    RunRecord,
    RunStatus,
    Tap,
    keeps_spans,
)
from corral.workflow import RunContext, Workflow

__all__ = ["LiveRun", "RunLedger", "Runner", "run_record"]

log = logging.getLogger(__name__)


class RunLedger(HumanStore, Auditor, Protocol):
    """What a run needs of the app's operations store (`corral.store.ops.Ops`)."""

    async def human_wait_s(self, run_id: RunId, now: datetime) -> float:
        """How long the run has waited for humans so far (a resumed run's deadline excludes it)."""
        ...


@dataclass(slots=True, eq=False)
class LiveRun:
    """A run this process started and has not finished."""

    start: RunStart
    workflow: Workflow
    given: BaseModel | None = None
    """The validated input of an ephemeral run: used instead of validating its JSON again."""
    fresh: bool = False
    """Started under a new id: it has no earlier human waits to look up."""
    abandoned: bool = False
    """`close()` is ending this ephemeral run while it waits for a human."""
    task: asyncio.Task[RunResult[Any]] | None = None
    """The task of a run started with `App.start` (the app owns it until `close`)."""


def run_record(
    ctx: RunContext,
    start: RunStart,
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
        durable=start.durable,
        user=ctx.user,
        tenant=ctx.tenant,
        tags=ctx.tags,
        input=start.payload,
        output=output,
        error=error,
        tokens_in=usage.input_tokens if usage else 0,
        tokens_out=usage.output_tokens if usage else 0,
        cost_usd=usage.cost_usd if usage else Decimal(0),
        calls=usage.calls if usage else 0,
        started_at=started,
        finished_at=finished_at,
    )


_ABANDONED = {
    "code": "abandoned",
    "message": "the app closed while this ephemeral run waited for a human; only durable runs "
    "survive a restart",
}


class Runner:
    """Executes the runs of one open app: the executor its engines call back.

    Built by `App.open()` once the adapters are wired, dropped by `close()`.
    """

    def __init__(
        self,
        *,
        config: AppConfig,
        clock: Clock,
        workflows: dict[str, Workflow],
        guards: Guards,
        recorder: Recorder | None,
        tap: Tap | None,
        has_taps: bool,
        durable: Engine | None,
        ledger: RunLedger | None,
        effects: Effects | None,
        humans: HumanDesk | None,
        resolvers: tuple[
            Callable[[str], Model], Callable[[str], list[Model]], Callable[[str], Workflow]
        ],
        id_factory: Callable[[], str],
    ) -> None:
        self._config = config
        self._clock = clock
        self._workflows = workflows  # the app's registry itself: registration stays visible
        self._guards = guards
        self._recorder: Recorder = recorder or NullRecorder()
        self._tap = tap
        self._has_taps = has_taps
        self.durable = durable
        self.ephemeral = EphemeralEngine()
        self._ledger = ledger
        self._humans = humans
        self._resolvers = resolvers
        self._id_factory = id_factory
        # One for every ephemeral run (it keeps no steps); side effects go to the database.
        self._no_journal = EphemeralJournal(effects)
        self.live: dict[RunId, LiveRun] = {}
        """Runs of this process between `prepare` and their end, by id."""

    def workflow(self, name: str) -> Workflow:
        """The registered workflow `name`.

        Raises:
            UnknownNameError: no workflow with that name.
        """
        wf = self._workflows.get(name)
        if wf is None:
            raise UnknownNameError("workflow", name, list(self._workflows))
        return wf

    def prepare(
        self,
        workflow: str,
        payload: BaseModel | dict[str, Any] | str,
        *,
        user: str | None,
        tenant: str | None,
        tags: Sequence[str],
        durable: bool | None,
        run_id: RunId | str | None,
        deadline_s: float | None,
        priority: Priority,
    ) -> tuple[LiveRun, Engine]:
        """Validate a run's input and options (nothing is written yet) and pick its engine: the
        one place that decides whether a run is durable.

        Raises:
            UnknownNameError: no workflow with that name.
            PayloadError: the payload does not fit the workflow's input.
            UsageError: a durable run on an app opened without durability, an unknown priority,
                a deadline that is not positive.
        """
        wf = self.workflow(workflow)
        try:
            checked = validate_payload(
                wf.input, payload, agent=wf.name, code="invalid_input", role="input of workflow"
            )
        except AgentError as exc:
            raise PayloadError(exc.reason, errors=exc.details.get("errors")) from exc
        want_durable = self._config.durable if durable is None else durable
        if want_durable and self.durable is None:
            raise UsageError("durable runs need AppConfig(durable=True) when the app starts")
        if priority not in PRIORITIES:
            raise UsageError(f"unknown priority {priority!r}; use one of {list(PRIORITIES)}")
        if deadline_s is not None and not deadline_s > 0:
            raise UsageError(f"deadline_s must be a positive number of seconds, got {deadline_s!r}")
        limit = self._config.deadline_s if deadline_s is None else deadline_s
        start = RunStart._new(
            run_id=RunId(run_id or self._id_factory()),
            workflow=wf.name,
            payload=dump_payload(checked),
            user=user,
            tenant=tenant,
            tags=tuple(tags),
            durable=want_durable,
            deadline_s=limit,
            deadline_at=self._clock.now().timestamp() + limit,
            priority=priority,
        )
        live = LiveRun(
            start=start,
            workflow=wf,
            given=None if want_durable else checked,
            fresh=run_id is None,
        )
        engine = self.durable if want_durable and self.durable is not None else self.ephemeral
        return live, engine

    def result(self, wf: Workflow, outcome: RunOutcome, duration_s: float) -> RunResult[Any]:
        """The caller's view of `outcome`: the output validated (unless handed over as is)."""
        raw = outcome.output
        output: Any = None
        partial: JsonValue = None
        if outcome.status == "succeeded":
            output = outcome.value
            if output is None:
                output = wf.output.model_validate(raw) if raw is not None and wf.output else raw
        else:
            partial = raw
        return RunResult._new(
            run_id=outcome.run_id,
            workflow=wf.name,
            status=outcome.status,
            output=output,
            partial=partial,
            error=outcome.error,
            usage=outcome.usage,
            duration_s=duration_s,
        )

    async def execute_start(self, start: RunStart) -> RunOutcome:
        """The engines' executor: run `start` (a run of this process, or one recovered)."""
        live = self.live.get(start.run_id)
        if live is None:  # recovered after a crash, or started by another handle
            live = LiveRun(start=start, workflow=self.workflow(start.workflow))
        return await self.execute(live)

    async def execute(self, live: LiveRun) -> RunOutcome:
        """The body of every run, durable or not: build the context, run, record the outcome.

        Log lines written meanwhile (here and in every task the run starts) carry its id
        (`corral._log`).
        """
        token = enter_run(live.start.run_id)
        try:
            return await self._execute(live)
        finally:
            leave_run(token)

    async def _execute(self, live: LiveRun) -> RunOutcome:
        start, wf = live.start, live.workflow
        run_id, durable, clock = start.run_id, start.durable, self._clock
        recorder = BatchingRecorder(self._recorder, tap=self._tap)
        guards = self._guards
        hold = DeadlineHold()
        run_guards = guards.run(
            run_id, priority=start.priority, tenant=start.tenant, user=start.user
        )
        if durable and self.durable is not None:
            journal: Journal = await self.durable.journal(run_id, recorder)
            run_guards.attempts = journal  # model calls are recorded before they are sent
        else:
            journal = self._no_journal  # remembers nothing: no coroutine to fetch it
        ctx = RunContext(
            RunServices._new(
                run_id=run_id,
                journal=journal,
                recorder=recorder,
                recording=keeps_spans(recorder),
                clock=clock,
                guards=run_guards,
                resolve_model=self._resolvers[0],
                resolve_chain=self._resolvers[1],
                resolve_workflow=self._resolvers[2],
                humans=self._humans,
                human_policy=self._config.humans,
                auditor=self._ledger,
                call_timeout_s=self._config.call_timeout_s,
                stats=RunStats(),
                hold=hold,
            ),
            workflow=wf.name,
            user=start.user,
            tenant=start.tenant,
            tags=start.tags,
        )
        started = clock.now()
        guards.kill.track(run_id, wf.name, start.priority)
        # Without a store or a tap (spans off, alerts off) nobody sees run records: skip them.
        # Corral's own taps (alerts, OTLP) skip the `running` record too: only the store and
        # the app's `taps` see it.
        stored = not isinstance(recorder.inner, NullRecorder)
        if stored or self._has_taps:
            await recorder.record_run(run_record(ctx, start, started, "running"))
        try:
            # Time spent waiting for humans does not count against the deadline (a run may wait
            # a day for an approval); the store knows how long a resumed run has waited so far.
            waited = 0.0
            if live.fresh:
                live.fresh = False
            elif durable:
                await _count_lost_calls(journal, ctx, started)
                if self._ledger is not None:
                    waited = await self._ledger.human_wait_s(run_id, started)
            # `started` is now: reading the clock again costs.
            remaining = start.deadline_at + waited - started.timestamp()
            if remaining <= 0:
                end = ended_by(DeadlineExceededError(start.deadline_s))
            else:
                # The deadline shares the loop timer of the call timeouts (asyncio.timeout would
                # add a timer per run); a human wait holds it (`hold`). Awaited here, not in a
                # helper: every coroutine level costs on each resume of the run.
                deadlines = guards.kill.deadlines
                deadline = hold.timer = deadlines.start(remaining)
                try:
                    given, live.given = live.given, None
                    if given is None:
                        given = wf.input.model_validate(start.payload)
                    end = await finish(wf, ctx, given, deadline, start.deadline_s)
                finally:
                    deadlines.end(deadline)
        except asyncio.CancelledError:
            if not live.abandoned:
                raise
            # `close()` ended an ephemeral run that waited for a human: say so, then stop.
            await recorder.record_run(
                run_record(ctx, start, started, "killed", error=_ABANDONED, finished_at=clock.now())
            )
            raise
        finally:
            guards.kill.untrack(run_id)
        if end.raised is not None and not isinstance(end.raised, CorralError):
            log.error("workflow %s raised", wf.name, exc_info=end.raised, extra={"run_id": run_id})
        usage = ctx.usage
        ledger = self._ledger
        if end.status == "succeeded" and ledger is not None:
            share = self._config.humans.review_share(wf.name)
            if share > 0:  # most apps sample nothing: no coroutine then
                await sample_for_review(
                    ledger, clock, share, wf.name, run_id, start.payload, end.output
                )
        if self._tap is not None or stored:
            await recorder.record_run(
                run_record(
                    ctx,
                    start,
                    started,
                    end.status,
                    output=end.output,
                    error=end.error,
                    usage=usage,
                    finished_at=clock.now(),
                )
            )
        return RunOutcome._new(
            run_id=run_id,
            workflow=wf.name,
            status=end.status,
            output=end.output,
            error=end.error,
            usage=usage,
            # Handed over in this process (never stored): the caller need not validate again.
            value=end.value if wf.output is not None else None,
        )


async def _count_lost_calls(journal: Journal, ctx: RunContext, at: datetime) -> None:
    """A resumed run counts the model calls it sent before the crash whose answers never
    reached the journal: the provider may have answered and billed them, so each one's
    reservation is spent (in the run's budget and cost; the store wrote them to the ledger)."""
    for lost in await journal.take_lost(at):
        ctx.guards.budget.charge(Cost(usd=lost.usd, tokens=lost.tokens, model_calls=1))
        ctx.stats.add(lost.tokens, 0, lost.usd)
        log.warning(
            "run %s: a call to %s (step %s) was sent before a crash and never journaled; its "
            "reservation ($%s) is counted as spent",
            ctx.run_id,
            lost.model,
            lost.step_id,
            lost.usd,
        )
