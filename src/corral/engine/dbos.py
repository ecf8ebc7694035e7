"""Durable execution on DBOS Transact: the only module that imports `dbos`.

Shape (see docs/dbos.md for the measured sharp edges this follows):

- One generic workflow, `corral.run`, is registered at import time, before launch, and dispatches
  to the app's executor by workflow name. Workflows users write carry no DBOS decorators.
- DBOS owns the run's lifecycle: the run row, recovery of PENDING runs when a process with the same
  executor id and application version launches, exactly-once start of a run id, cancel.
- Steps are journaled in Corral's own `corral_steps` table, keyed by Corral's hierarchical step id
  (`3.2`), not by DBOS's start-order step counter. Parallel agents finish in a different order on
  every execution; keying by program position keeps replay exact where a start-order counter would
  hand one branch another branch's result.
- `DBOS.launch()` is called from inside the running event loop, so DBOS adopts it as its main
  loop and recovered runs execute on the same loop as everything else in the app.
- DBOS stores only JSON text: the generic workflow takes the run's `RunStart` as one JSON string
  and returns its `RunOutcome` as another, through the `JsonOnly` serializer, and DBOS's pickle
  is switched off (`corral.engine._json`). What it stores passes the store's redactor first:
  no loaded secret or key-shaped string reaches DBOS's tables (a run recovered from them sees
  `[REDACTED]` in its place). A row that holds a pickle is refused, never unpickled; that
  includes runs left pending by an earlier Corral, whose inputs DBOS pickled: finish those
  with the old version before upgrading (after it they end in DBOS's ERROR state and waiting for
  them raises a `StateError`).
- One DBOS instance per process (DBOS is a singleton); a second durable app in the same process
  must use the same database.
- One live process per executor id: before DBOS launches (and recovers that id's runs) the
  process takes the id's lease in `corral_executors` and renews it every few seconds
  (`corral.store.executors`); a second live process with the same id is refused before it can
  execute anything. Apps of one process share the lease; the last to close gives it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from dbos import DBOS, SetWorkflowID
from sqlalchemy.exc import OperationalError

from corral.contracts import JsonValue, RunId
from corral.durable import LostAttempt, RunExecutor, RunOutcome, RunStart, StepFn
from corral.engine._json import (
    JsonOnly,
    outcome_from_json,
    outcome_to_json,
    refuse_pickle,
    start_from_json,
    start_to_json,
)
from corral.errors import CorralError, StateError, UsageError
from corral.secrets import hide_url_password
from corral.store.executors import HEARTBEAT_S, ExecutorLeases
from corral.store.sql import SqlStore
from corral.trace import BatchingRecorder

__all__ = ["DbosEngine"]

log = logging.getLogger(__name__)

WORKFLOW_NAME = "corral.run"
_executor: RunExecutor | None = None
_database: str | None = None
_engines: list[Any] = []
"""The SQLAlchemy engines DBOS was launched on in this process (disposed by `shutdown`)."""
_HOLDER = uuid.uuid4().hex
"""This process in executor leases."""


refuse_pickle()


@DBOS.workflow(name=WORKFLOW_NAME)
async def _corral_run(start_json: str) -> str:
    start = start_from_json(start_json)
    if _executor is None:
        raise StateError(
            f"run {start.run_id} of {start.workflow!r} was recovered before any Corral app "
            "launched; construct the App and call open() in this process"
        )
    return outcome_to_json(await _executor(start))


class SqlJournal:
    """A run's checkpointed steps, preloaded from `corral_steps`, and its side effects (the
    store's effect table)."""

    def __init__(
        self,
        store: SqlStore,
        run_id: RunId,
        done: dict[str, JsonValue],
        spans: BatchingRecorder | None = None,
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._done = done
        self._spans = spans

    async def step(self, step_id: str, name: str, fn: StepFn) -> JsonValue:
        if step_id in self._done:
            return self._done[step_id]
        lease = _lease
        if lease is not None and time.monotonic() >= lease.good_until:
            await lease.check()  # a paused process may have lost its executor id meanwhile
        result = await fn()
        held = self._spans.drain() if self._spans is not None else []
        await self._store.save_step(self._run_id, step_id, name, result, with_spans=held)
        self._done[step_id] = result
        return result

    async def attempt(self, step_id: str, model: str, usd: Decimal, tokens: int) -> None:
        await self._store.record_attempt(self._run_id, step_id, model, usd, tokens)

    async def take_lost(self, at: datetime) -> list[LostAttempt]:
        return await self._store.take_lost_attempts(self._run_id, at)

    async def effect(self, key: str) -> dict[str, JsonValue] | None:
        lease = _lease  # asked right before a side effect runs
        if lease is not None and time.monotonic() >= lease.good_until:
            await lease.check()
        return await self._store.effect(key)

    async def record_effect(self, key: str, run_id: RunId, tool: str, result: JsonValue) -> None:
        await self._store.record_effect(key, run_id, tool, result)


class _LeaseKeeper:
    """This process's lease on its executor id, held while any of its apps has the durable
    engine open, renewed in the background."""

    def __init__(self, leases: ExecutorLeases, executor_id: str) -> None:
        self.leases = leases
        self.executor_id = executor_id
        self.users = 0
        self._beat: asyncio.Task[None] | None = None
        self._trust_s = leases.ttl_s - HEARTBEAT_S
        self.good_until = 0.0
        """Until this `time.monotonic()` the lease is trusted without asking the database."""

    async def hold(self) -> None:
        """Take the lease (the first user) or share it.

        Raises:
            StateError: another live process holds the executor id.
        """
        if self.users == 0:
            await self.leases.acquire(self.executor_id, _HOLDER, time.time())
            self.good_until = time.monotonic() + self._trust_s
            self._beat = asyncio.get_running_loop().create_task(
                self._renew(), name="corral-executor-lease"
            )
        self.users += 1

    async def check(self) -> None:
        """Before a durable step or a side effect: the lease is still ours. Trusted without a
        database round trip for a little less than the lease's TTL after its last renewal; past
        that (a process paused by SIGSTOP, a stalled VM, a missed heartbeat) it is renewed first.

        A process that lost its lease may be executing runs another process has taken over; it
        must not run one more step, so it exits at once (exit code 75, a temporary failure: a
        supervisor restarts it, and the runs resume where their journal says)."""
        if time.monotonic() < self.good_until:
            return
        try:
            held = await self.leases.renew(self.executor_id, _HOLDER, time.time())
        except CorralError as exc:
            log.warning("could not renew the lease of %r: %s", self.executor_id, exc)
            held = False
        if not held:
            self._fenced()
        self.good_until = time.monotonic() + self._trust_s

    async def let_go(self) -> None:
        """One user is done; the last gives the lease back."""
        self.users -= 1
        if self.users > 0:
            return
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
            self._beat = None
        try:
            await self.leases.release(self.executor_id, _HOLDER)
        except CorralError as exc:  # it expires on its own: a failed release loses nothing
            log.warning("could not give back the lease of %r: %s", self.executor_id, exc)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                held = await self.leases.renew(self.executor_id, _HOLDER, time.time())
            except CorralError as exc:  # a busy database: the next beat tries again
                log.warning("could not renew the lease of %r: %s", self.executor_id, exc)
                continue
            if not held:
                self._fenced()
            self.good_until = time.monotonic() + self._trust_s

    def _fenced(self) -> None:
        """The lease is another process's now: that process may be executing this one's runs,
        so this one must not run another step. It exits at once (code 75, a temporary failure:
        a supervisor restarts it, and the runs go on where their journal says)."""
        log.critical(
            "this process lost the lease of executor id %r (no heartbeat for over %.0f s; "
            "another process may be executing its runs): exiting now rather than run another "
            "step",
            self.executor_id,
            self.leases.ttl_s,
        )
        logging.shutdown()
        os._exit(75)


_lease: _LeaseKeeper | None = None


class DbosEngine:
    """The durable `Engine`: DBOS for run lifecycle and recovery, `corral_steps` for steps."""

    is_durable = True

    def __init__(
        self,
        store: SqlStore,
        *,
        application_version: str,
        executor_id: str,
        max_executor_threads: int = 32,
    ) -> None:
        self._store = store
        self._version = application_version
        self._executor_id = executor_id
        self._threads = max_executor_threads
        self._held = False
        """Whether this engine counts among the users of the process's lease."""

    async def launch(self, executor: RunExecutor) -> None:
        global _executor, _database, _lease
        if _database is not None:
            if _database != self._store.url:
                raise UsageError(
                    f"this process already runs durable workflows on "
                    f"{hide_url_password(_database)}; DBOS allows one database per process, so "
                    f"{hide_url_password(self._store.url)} cannot be used too"
                )
            assert _lease is not None
            await _lease.hold()
            self._held = True
            _executor = executor
            return
        keeper = _LeaseKeeper(ExecutorLeases(self._store), self._executor_id)
        await keeper.hold()  # before DBOS recovers anything of this executor id
        self._held = True
        _executor, _database, _lease = executor, self._store.url, keeper
        _engines.append(self._store.engine)
        DBOS(
            config={
                "name": "corral",
                "system_database_url": self._store.url,
                "system_database_engine": self._store.engine,
                "application_version": self._version,
                "executor_id": self._executor_id,
                "max_executor_threads": self._threads,
                "log_level": "WARNING",
                "serializer": JsonOnly(redact=self._store.redactor.json_text),
            }
        )
        # Called on the loop thread on purpose: DBOS adopts the running loop, so runs recovered at
        # launch execute here, next to the app's other tasks (docs/dbos.md, sharp edge 4).
        # DBOS logs a failed launch with its whole traceback before raising; the StateError
        # below says the same in one line, so that record is dropped.
        quiet = _DropRecords("DBOS failed to launch")
        dbos_log = logging.getLogger("dbos")
        dbos_log.addFilter(quiet)
        try:
            DBOS.launch()
        except Exception as exc:  # boundary: DBOS raises many types for an unusable database
            _executor = _database = _lease = None
            self._held = False
            await keeper.let_go()
            DBOS.destroy()
            raise self._launch_error(exc) from exc
        finally:
            dbos_log.removeFilter(quiet)

    def _launch_error(self, exc: Exception) -> StateError:
        """What stopped DBOS, in one line: the store's own wording for a locked, read-only or
        corrupt database (found in the exception's causes), else DBOS's message."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, OperationalError):
                found = self._store._state_error(cause)
                return StateError(f"the durable engine could not start: {found}")
            cause = cause.__cause__ or cause.__context__
        return StateError(
            f"the durable engine could not start on {self._store._safe_url()}: "
            f"{self._store.redactor.text(str(exc))}"
        )

    async def run(self, start: RunStart) -> RunOutcome:
        with SetWorkflowID(start.run_id):
            handle: Any = await DBOS.start_workflow_async(_corral_run, start_to_json(start))
        return outcome_from_json(await handle.get_result())

    async def journal(self, run_id: RunId, spans: BatchingRecorder | None = None) -> SqlJournal:
        # Spans ride along with step checkpoints only when they go to this same database.
        same_db = spans is not None and spans.inner is self._store
        return SqlJournal(
            self._store, run_id, await self._store.load_steps(run_id), spans if same_db else None
        )

    async def pending(self) -> list[RunId]:
        # This executor's runs only: another id's are resumed by a process with that id (a
        # wait for them here would last until that process comes back).
        found = await DBOS.list_workflows_async(
            status=["PENDING", "ENQUEUED"],
            name=WORKFLOW_NAME,
            sort_desc=False,
            executor_id=self._executor_id,
        )
        return [RunId(w.workflow_id) for w in found]

    async def wait(self, run_id: RunId) -> RunOutcome:
        handle: Any = await DBOS.retrieve_workflow_async(run_id)
        return outcome_from_json(await handle.get_result())

    async def close(self) -> None:
        # The DBOS singleton lives as long as the process: destroying it costs ~1 s and a later
        # App in the same process (tests, notebooks) would have to launch it again.
        global _executor
        _executor = None
        if self._held and _lease is not None:
            self._held = False
            await _lease.let_go()
        await asyncio.sleep(0)


def shutdown() -> None:
    """Destroy the process's DBOS instance (for tests and clean interpreter exits), and close
    the connections it gave back to the engines it was handed after their store closed."""
    global _executor, _database, _lease
    _executor = _database = _lease = None
    DBOS.destroy()
    while _engines:
        _engines.pop().dispose()


def forget_runs(engine: Any, run_ids: list[str]) -> None:
    """Delete DBOS's own records of finished runs (`corral prune`), through its public client."""
    from dbos import DBOSClient

    client = DBOSClient(system_database_engine=engine)
    try:
        for start in range(0, len(run_ids), 500):
            client.delete_workflows(run_ids[start : start + 500])
    finally:
        client.destroy()


class _DropRecords(logging.Filter):
    """Drops log records whose message starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._prefix)
