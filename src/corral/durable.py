"""The small interface the core uses for durable execution, and the no-journal implementation.

Only `corral.engine` knows DBOS. The core sees an `Engine` that starts a run, gives each run a
`Journal` of checkpointed steps, and lists unfinished runs. Steps return JSON data and never raise:
a step's failure is encoded in its result, so a replay reproduces failures exactly as successes.

Step ids are hierarchical and assigned in program order (`3`, `3.1`, `3.2` for the model calls
inside agent call 3), so they are the same on every execution of a run even when agents run in
parallel and finish in a different order. That is why the journal is keyed by Corral's step id
rather than by the engine's start-order counter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from corral.contracts import JsonValue, RunId
from corral.trace import BatchingRecorder

__all__ = ["Engine", "EphemeralEngine", "EphemeralJournal", "Journal", "RunExecutor", "StepFn"]

StepFn = Callable[[], Awaitable[JsonValue]]
RunExecutor = Callable[[str, RunId, JsonValue, dict[str, Any]], Awaitable[dict[str, Any]]]
"""`(workflow_name, run_id, payload, meta) -> result record`; provided by the app."""


class Journal(Protocol):
    """The checkpointed steps of one run."""

    async def step(self, step_id: str, name: str, fn: StepFn) -> JsonValue:
        """Run `fn` as step `step_id`: a step completed before a crash returns its recorded
        result without running again (at-least-once for the step in flight at the crash)."""
        ...


class EphemeralJournal:
    """Runs each step; remembers nothing."""

    async def step(self, step_id: str, name: str, fn: StepFn) -> JsonValue:
        return await fn()


class Engine(Protocol):
    """Runs workflows and checkpoints their steps."""

    @property
    def is_durable(self) -> bool:
        """Whether steps survive a crash."""
        ...

    async def launch(self, executor: RunExecutor) -> None:
        """Start the engine; unfinished runs of a previous process resume from here on."""
        ...

    async def run(
        self, run_id: RunId, workflow: str, payload: JsonValue, meta: dict[str, Any]
    ) -> dict[str, Any]:
        """Execute one run to completion (or join it if it is already running) and return its
        result record. Starting the same run id twice executes it once."""
        ...

    async def journal(self, run_id: RunId, spans: BatchingRecorder | None = None) -> Journal:
        """The journal of `run_id`, loaded with the steps it completed before.

        `spans`, when given, holds the run's unwritten spans; a journal that writes to the same
        database drains them into each step's transaction.
        """
        ...

    async def pending(self) -> list[RunId]:
        """Runs that started and have not finished."""
        ...

    async def wait(self, run_id: RunId) -> dict[str, Any]:
        """The result record of a run, waiting for it to finish."""
        ...

    async def close(self) -> None:
        """Stop the engine."""
        ...


class EphemeralEngine:
    """No journal: each step simply runs. For latency-critical work and unit tests."""

    is_durable = False

    def __init__(self) -> None:
        self._executor: RunExecutor | None = None
        self._journal = EphemeralJournal()  # stateless: one for every run

    async def launch(self, executor: RunExecutor) -> None:
        self._executor = executor

    async def run(
        self, run_id: RunId, workflow: str, payload: JsonValue, meta: dict[str, Any]
    ) -> dict[str, Any]:
        if self._executor is None:
            raise RuntimeError("EphemeralEngine.run() before launch()")
        return await self._executor(workflow, run_id, payload, meta)

    async def journal(self, run_id: RunId, spans: BatchingRecorder | None = None) -> Journal:
        return self._journal

    async def pending(self) -> list[RunId]:
        return []

    async def wait(self, run_id: RunId) -> dict[str, Any]:
        raise KeyError(run_id)

    async def close(self) -> None:
        self._executor = None
