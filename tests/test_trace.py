"""Span batching: spans are never lost and go out in as few transactions as possible."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from corral import Agent, App, AppConfig, RunContext
from corral.engine.dbos import SqlJournal
from corral.observe import AlertPolicy
from corral.store.sql import SqlStore
from corral.testing import SpanRecorder
from corral.trace import BatchingRecorder, NullRecorder, RunRecord, Span


def span(step: str, run: str = "r1") -> Span:
    return Span(
        run_id=run,
        step_id=step,
        parent_id=None,
        kind="model",
        name="a",
        agent="a",
        started_at=datetime.now(UTC),
    )


def run(status: str = "succeeded") -> RunRecord:
    return RunRecord(
        run_id="r1",
        workflow="w",
        status=status,  # type: ignore[arg-type]
        durable=False,
        started_at=datetime.now(UTC),
    )


async def test_held_spans_are_written_before_the_run_record():
    inner = SpanRecorder()
    batch = BatchingRecorder(inner, max_held=10)
    await batch.record_span(span("1"))
    await batch.record_span(span("2"))
    assert inner.spans == []
    await batch.record_run(run())
    assert [s.step_id for s in inner.spans] == ["1", "2"]
    assert "r1" in inner.runs


async def test_a_full_batch_is_written_without_waiting_for_the_run_to_end():
    inner = SpanRecorder()
    batch = BatchingRecorder(inner, max_held=3)
    for step in ("1", "2", "3", "4"):
        await batch.record_span(span(step))
    assert [s.step_id for s in inner.spans] == ["1", "2", "3"]
    await batch.flush()
    assert len(inner.spans) == 4


async def test_a_journaled_step_carries_the_held_spans_in_its_transaction(tmp_path):
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        batch = BatchingRecorder(store)
        journal = SqlJournal(store, "r1", {}, batch)

        async def step() -> dict[str, str]:
            await batch.record_span(span("1.1"))
            return {"ok": "yes"}

        assert await journal.step("1.1", "model:a", step) == {"ok": "yes"}
        # Written with the checkpoint, before any flush or run record.
        assert [s["step_id"] for s in await store.list_spans("r1")] == ["1.1"]
        assert (await store.load_steps("r1")) == {"1.1": {"ok": "yes"}}
        # A span written twice (a replayed agent span) is one row, the latest version.
        await store.record_spans([span("1.1"), span("1.1")])
        assert len(await store.list_spans("r1")) == 1
    finally:
        await store.close()


async def test_concurrent_writes_share_transactions_and_a_bad_write_fails_alone(tmp_path):
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        writer = store._writer
        before = writer.transactions

        async def bad() -> None:
            await store._write(
                lambda conn: conn.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")
            )

        results = await asyncio.gather(
            *(store.record_spans([span(str(i), run="r2")]) for i in range(200)),
            bad(),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1 and "no_such_table" in str(errors[0])
        assert len(await store.list_spans("r2")) == 200
        # 200 writes needed far fewer commits than 200 (the exact number depends on timing).
        assert writer.transactions - before < 200
    finally:
        await store.close()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
async def test_rows_queued_together_merge_per_table_in_order_around_other_writes(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("postgres_url")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'm.db'}"
    )
    store = await SqlStore.open(url)
    try:
        writer = store._writer
        started, gate = threading.Event(), threading.Event()

        def hold(conn: sa.Connection) -> None:
            started.set()
            gate.wait(10)

        held = asyncio.ensure_future(store._write(hold))
        await asyncio.to_thread(started.wait, 10)  # the writer is busy: what follows queues up
        before = writer.transactions
        seen: list[str] = []

        def read_status(conn: sa.Connection) -> None:
            seen.append(conn.exec_driver_sql("SELECT status FROM corral_runs").scalar_one())

        queued = [
            asyncio.ensure_future(store.record_run(run("running"))),
            asyncio.ensure_future(store.record_spans([span("1"), span("2")])),
            asyncio.ensure_future(store._write(read_status)),
            asyncio.ensure_future(store.record_spans([span("2"), span("3")])),
            asyncio.ensure_future(store.record_run(run("succeeded"))),
        ]
        await asyncio.sleep(0)  # one turn of the loop: each task puts its write on the queue
        gate.set()
        await asyncio.gather(held, *queued)
        # The held write's transaction, then one for the five queued behind it.
        assert writer.transactions - before == 2
        assert seen == ["running"]  # rows queued before another write are written before it
        assert (await store.get_run("r1") or {})["status"] == "succeeded"  # the later row won
        assert [s["step_id"] for s in await store.list_spans("r1")] == ["1", "2", "3"]
    finally:
        await store.close()


class _RunTap:
    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.span_count = 0

    def spans(self, spans: Sequence[Span]) -> None:
        self.span_count += len(spans)

    def run(self, run: RunRecord) -> None:
        self.statuses.append(run.status)


class Doc(BaseModel):
    text: str


async def test_a_tap_sees_a_runs_start_and_end_even_without_a_store():
    stage = Agent(name="stage", instructions="Rewrite.", input=Doc, output=Doc)
    tap = _RunTap()
    app = App(
        AppConfig(database="sqlite:///:memory:", durable=False, alerts=AlertPolicy(enabled=False)),
        recorder=NullRecorder(),
        taps=[tap],
    )

    @app.workflow
    async def one(ctx: RunContext, doc: Doc) -> Doc:
        return await ctx.call(stage, doc)

    async with app:
        result = await app.run("one", {"text": "hello"})
    assert result.ok
    assert tap.statuses == ["running", "succeeded"]
