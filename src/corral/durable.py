"""The small interface the core uses for durable execution, and the no-journal implementation.

Only `corral.engine` knows DBOS. The core sees an `Engine` that starts a run, gives each run a
`Journal` of checkpointed steps, and lists unfinished runs. Steps return JSON data and never raise:
a step's failure is encoded in its result, so a replay reproduces failures exactly as successes.

The journal also remembers side effects: a tool marked `side_effect` records what it returned
under its idempotency key, and a re-run step (at-least-once) replays that instead of acting again.
This belongs to the journal, not to tracing, so the guarantee does not depend on where an app
sends its spans.

Step ids are hierarchical and assigned in program order (`3`, `3.1`, `3.2` for the model calls
inside agent call 3), so they are the same on every execution of a run even when agents run in
parallel and finish in a different order. That is why the journal is keyed by Corral's step id
rather than by the engine's start-order counter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from corral._dataclass import quick_init
from corral.contracts import JsonValue, RunId
from corral.guards.policy import Priority
from corral.model import Usage
from corral.trace import BatchingRecorder, RunStatus

__all__ = [
    "Effects",
    "Engine",
    "EphemeralEngine",
    "EphemeralJournal",
    "Journal",
    "LostAttempt",
    "MemoryEffects",
    "RunExecutor",
    "RunOutcome",
    "RunStart",
    "StepFn",
]

StepFn = Callable[[], Awaitable[JsonValue]]


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RunStart:
    """What a run needs to start, or to resume after a crash: all an engine keeps of a run.

    A durable engine stores it as JSON (`corral.engine`), never as a pickle: the payload is the
    workflow input's JSON form, and every other field is a plain value.
    """

    _new: ClassVar[Callable[..., RunStart]]
    """`RunStart(...)` without the class call's keyword dict (see `corral._dataclass`)."""

    run_id: RunId
    workflow: str
    payload: JsonValue
    """The validated input, as JSON data."""
    user: str | None = None
    tenant: str | None = None
    tags: tuple[str, ...] = ()
    durable: bool = False
    deadline_s: float
    """The run's wall-clock limit, as given (for the error that reports it)."""
    deadline_at: float
    """When the deadline passes, in epoch seconds: absolute, so a run resumed in another
    process keeps its original deadline."""
    priority: Priority = "interactive"


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutcome:
    """How a run ended, as the engine hands it back (and a durable engine stores it, as JSON)."""

    _new: ClassVar[Callable[..., RunOutcome]]
    """`RunOutcome(...)` without the class call's keyword dict (see `corral._dataclass`)."""

    run_id: RunId
    workflow: str
    status: RunStatus
    output: JsonValue = None
    """The output's JSON form when the run succeeded; otherwise the best partial result."""
    error: dict[str, Any] | None = None
    """What stopped the run (`code`, `message`, the error's typed attributes)."""
    usage: Usage = field(default_factory=Usage)
    value: BaseModel | None = field(default=None, compare=False, repr=False)
    """The validated output object, handed over within one process (an ephemeral run); never
    stored: a durable run's caller validates `output` again."""


RunExecutor = Callable[[RunStart], Awaitable[RunOutcome]]
"""Runs a workflow body for a `RunStart`; provided by the app."""


class Effects(Protocol):
    """Where executed side effects are remembered (the SQL store's effect table)."""

    async def effect(self, key: str) -> dict[str, JsonValue] | None:
        """`{"result": ...}` for the side effect `key` if it completed, else None."""
        ...

    async def record_effect(self, key: str, run_id: RunId, tool: str, result: JsonValue) -> None:
        """Remember that the side effect `key` happened and what it returned."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LostAttempt:
    """A model call sent before a crash whose step never reached the journal: the provider
    may have answered and billed it, so the resumed run counts its reservation as spent."""

    step_id: str
    model: str
    usd: Decimal
    tokens: int


class Journal(Effects, Protocol):
    """The checkpointed steps and executed side effects of one run, and the model calls sent
    but not yet journaled."""

    async def step(self, step_id: str, name: str, fn: StepFn) -> JsonValue:
        """Run `fn` as step `step_id`: a step completed before a crash returns its recorded
        result without running again (at-least-once for the step in flight at the crash)."""
        ...

    async def attempt(self, step_id: str, model: str, usd: Decimal, tokens: int) -> None:
        """A model call of step `step_id` is about to be sent, reserving `usd` and `tokens`:
        recorded (durably, before it is sent) until the step is journaled."""
        ...

    async def take_lost(self, at: datetime) -> list[LostAttempt]:
        """The calls recorded by `attempt` whose step was never journaled (sent before a
        crash), written to the cost ledger as model spans at `at` and cleared, in one step."""
        ...


class MemoryEffects:
    """Side effects remembered for the life of the process (an app without a database)."""

    def __init__(self) -> None:
        self._done: dict[str, JsonValue] = {}

    async def effect(self, key: str) -> dict[str, JsonValue] | None:
        return {"result": self._done[key]} if key in self._done else None

    async def record_effect(self, key: str, run_id: RunId, tool: str, result: JsonValue) -> None:
        self._done[key] = result


class EphemeralJournal:
    """Runs each step and checkpoints nothing; side effects still go to `effects`, so a run
    started again under the same id does not repeat them."""

    def __init__(self, effects: Effects | None = None) -> None:
        self._effects: Effects = effects if effects is not None else MemoryEffects()

    async def step(self, step_id: str, name: str, fn: StepFn) -> JsonValue:
        return await fn()

    async def attempt(self, step_id: str, model: str, usd: Decimal, tokens: int) -> None:
        return None  # nothing survives the process: nothing to count after a crash

    async def take_lost(self, at: datetime) -> list[LostAttempt]:
        return []

    async def effect(self, key: str) -> dict[str, JsonValue] | None:
        return await self._effects.effect(key)

    async def record_effect(self, key: str, run_id: RunId, tool: str, result: JsonValue) -> None:
        await self._effects.record_effect(key, run_id, tool, result)


class Engine(Protocol):
    """Runs workflows and checkpoints their steps."""

    @property
    def is_durable(self) -> bool:
        """Whether steps survive a crash."""
        ...

    async def launch(self, executor: RunExecutor) -> None:
        """Start the engine; unfinished runs of a previous process resume from here on."""
        ...

    async def run(self, start: RunStart) -> RunOutcome:
        """Execute one run to completion (or join it if it is already running) and return its
        outcome. Starting the same run id twice executes it once.

        Raises:
            StateError: the engine's record of the run is missing or corrupt.
        """
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

    async def wait(self, run_id: RunId) -> RunOutcome:
        """The outcome of a run, waiting for it to finish.

        Raises:
            StateError: the engine's record of the run is missing or corrupt.
        """
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

    async def run(self, start: RunStart) -> RunOutcome:
        if self._executor is None:
            raise RuntimeError("EphemeralEngine.run() before launch()")
        return await self._executor(start)

    async def journal(self, run_id: RunId, spans: BatchingRecorder | None = None) -> Journal:
        return self._journal

    async def pending(self) -> list[RunId]:
        return []

    async def wait(self, run_id: RunId) -> RunOutcome:
        raise KeyError(run_id)

    async def close(self) -> None:
        self._executor = None
