"""Spans: the record of every run, agent call, model call and tool call.

The core writes spans through the `Recorder` protocol. The SQL store implements it (what
`corral show` reads); `corral.testing.SpanRecorder` collects them in memory for tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal, Protocol

from corral._dataclass import quick_init
from corral.contracts import JsonValue, RunId

__all__ = [
    "BatchingRecorder",
    "NullRecorder",
    "Recorder",
    "RunRecord",
    "Span",
    "Tap",
    "Taps",
    "keeps_spans",
]

SpanKind = Literal["workflow", "agent", "model", "tool", "guard", "human"]
SpanStatus = Literal["ok", "error", "invalid_output", "invalid_args", "replayed_effect", "alert"]
RunStatus = Literal[
    "running",
    "succeeded",
    "failed",
    "deadline_exceeded",
    "budget_exhausted",
    "killed",
    "rejected",
    "taken_over",
]


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Span:
    """One unit of work inside a run. `step_id` is unique within the run."""

    _new: ClassVar[Callable[..., Span]]
    """`Span(...)` without the class call's keyword dict (see `corral._dataclass`)."""

    run_id: RunId
    step_id: str
    parent_id: str | None
    kind: SpanKind
    name: str
    agent: str | None
    model: str | None = None
    input: JsonValue = None
    output: JsonValue = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_ms: float = 0.0
    status: SpanStatus = "ok"
    error: dict[str, Any] | None = None
    started_at: datetime
    tier: str | None = None
    """Model spans: the tier the call was made for (after routing and degrading)."""
    attrs: dict[str, JsonValue] | None = None
    """Small facts that have no column: an agent's repairs and tool rounds, a cache hit."""
    memo: list[Any] = field(default_factory=list, compare=False, repr=False)
    """The redacted JSON of the payload fields, computed once for the store and the exporter
    (`corral.observe.redact.Redactor.span_fields`)."""


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """A run's row: who started it, what it cost and how it ended."""

    _new: ClassVar[Callable[..., RunRecord]]
    """`RunRecord(...)` without the class call's keyword dict (see `corral._dataclass`)."""

    run_id: RunId
    workflow: str
    status: RunStatus
    durable: bool
    user: str | None = None
    tenant: str | None = None
    tags: tuple[str, ...] = ()
    input: JsonValue = None
    output: JsonValue = None
    error: dict[str, Any] | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: Decimal = Decimal(0)
    calls: int = 0
    started_at: datetime
    finished_at: datetime | None = None


class Recorder(Protocol):
    """Where runs and spans go."""

    async def record_run(self, run: RunRecord) -> None:
        """Insert or update a run's row (keyed by `run_id`)."""
        ...

    async def record_span(self, span: Span) -> None:
        """Insert or replace a span (keyed by `run_id`, `step_id`)."""
        ...

    async def record_spans(self, spans: Sequence[Span]) -> None:
        """`record_span` for many spans at once (one transaction where the backend has them)."""
        ...


class Tap(Protocol):
    """Sees every span and run record on its way to the store (OTLP export, alerting): spans
    in batches (a step's, or up to `max_held`), always before the record of the run's end.

    Called on the event loop in the hot path: it must only hand the data off (append to a
    queue), never do I/O.
    """

    def spans(self, spans: Sequence[Span]) -> None:
        """New spans of a run."""
        ...

    def run(self, run: RunRecord) -> None:
        """A run's record: once when it starts (`running`), again when it ends."""
        ...


class Taps:
    """Several taps as one."""

    def __init__(self, taps: Sequence[Tap]) -> None:
        self.taps = tuple(taps)

    def spans(self, spans: Sequence[Span]) -> None:
        for tap in self.taps:
            tap.spans(spans)

    def run(self, run: RunRecord) -> None:
        for tap in self.taps:
            tap.run(run)


class NullRecorder:
    """Records nothing."""

    async def record_run(self, run: RunRecord) -> None:
        return None

    async def record_span(self, span: Span) -> None:
        return None

    async def record_spans(self, spans: Sequence[Span]) -> None:
        return None


class BatchingRecorder:
    """One run's recorder: spans are held and written in batches instead of one by one.

    A durable journal drains the held spans into the transaction that saves a step, so a model
    call's span and its checkpoint are written together. Everything still held is written before
    the run's record is updated (so a finished run always has all its spans), and whenever
    `max_held` spans are waiting (so a long run's trace fills in as it goes).
    """

    def __init__(self, inner: Recorder, *, max_held: int = 64, tap: Tap | None = None) -> None:
        self.inner = inner
        self.tap = tap
        """Sees every span and run record on its way in (see `Tap`)."""
        self._held: list[Span] = []
        self._max_held = max_held
        self._null = isinstance(inner, NullRecorder)

    def drain(self) -> list[Span]:
        """Take the held spans (the caller now owns writing them); the tap sees them here, a
        batch at a time, on their way to the store."""
        held, self._held = self._held, []
        if self.tap is not None and held:
            self.tap.spans(held)
        return held

    async def flush(self) -> None:
        """Write the held spans now."""
        if self._held:
            await self.inner.record_spans(self.drain())

    async def record_run(self, run: RunRecord) -> None:
        if self._held or not self._null:
            await self.flush()
            await self.inner.record_run(run)
        if self.tap is not None:
            self.tap.run(run)

    async def record_span(self, span: Span) -> None:
        self._held.append(span)
        if len(self._held) >= self._max_held:
            await self.flush()

    async def record_spans(self, spans: Sequence[Span]) -> None:
        self._held.extend(spans)
        if len(self._held) >= self._max_held:
            await self.flush()


def keeps_spans(recorder: Recorder) -> bool:
    """False for a recorder that drops spans (then building them is skipped)."""
    inner = recorder.inner if isinstance(recorder, BatchingRecorder) else recorder
    return not isinstance(inner, NullRecorder)
