"""An in-memory Recorder for tests."""

from __future__ import annotations

from collections.abc import Sequence

from corral.contracts import RunId
from corral.trace import RunRecord, Span


class SpanRecorder:
    """Collects runs and spans; `spans` keeps the latest version of each (run, step)."""

    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}
        self._spans: dict[tuple[str, str], Span] = {}

    @property
    def spans(self) -> list[Span]:
        return list(self._spans.values())

    def spans_of(self, run_id: RunId | str, kind: str | None = None) -> list[Span]:
        """A run's spans (optionally of one kind) in recording order."""
        return [s for s in self.spans if s.run_id == run_id and (kind is None or s.kind == kind)]

    async def record_run(self, run: RunRecord) -> None:
        self.runs[run.run_id] = run

    async def record_span(self, span: Span) -> None:
        self._spans[(span.run_id, span.step_id)] = span

    async def record_spans(self, spans: Sequence[Span]) -> None:
        for span in spans:
            await self.record_span(span)
