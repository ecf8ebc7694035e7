"""Group commit: one writer thread, and writes that arrive together share one transaction.

Why our own: SQLAlchemy has no write batching across callers, and a run database sees many small
writes (a run row, a step checkpoint with its spans, an effect) from many concurrent runs. One
transaction each costs a commit each (about 0.3-0.5 ms on SQLite WAL, and SQLite admits one
writer at a time, so a thread pool only adds lock contention). Here a single thread takes every
write that is waiting, runs them in one transaction and commits once; each caller's future
resolves only after that commit, so a checkpoint is durable before its step returns.

If a batch fails it is split in halves and retried (recursively), so one bad write fails only its
own caller and the others still commit together.

Rows written through one prepared statement (`write_rows`: run records, spans) are merged across
the writes of a transaction into one `executemany` per statement, in the order they came (the
drivers execute it row by row, so a later upsert of the same key still wins); other writes run
in queue order, after the rows queued before them. One `executemany` of a thousand runs' rows
costs a fraction of a thousand single-row statements through SQLAlchemy.

The callers of a transaction are woken together: one `call_soon_threadsafe` per event loop per
transaction settles all their futures (a `concurrent.futures.Future` per write, wrapped for
asyncio, wakes the loop once per write: a self-pipe write each, which with a thousand runs in
flight cost more than the writes themselves).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

__all__ = ["GroupWriter"]

log = logging.getLogger(__name__)

WriteFn = Callable[[sa.Connection], Any]


class Rows:
    """Rows for one prepared statement (`GroupWriter.write_rows`), made in the writer thread."""

    __slots__ = ("make", "statement")

    def __init__(self, statement: Any, make: Callable[[], list[dict[str, Any]]]) -> None:
        self.statement = statement
        self.make = make


class _Merge:
    """The rows waiting for each statement in the transaction being written."""

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self._waiting: dict[int, tuple[Any, list[dict[str, Any]]]] = {}

    def add(self, rows: Rows) -> None:
        entry = self._waiting.get(id(rows.statement))
        if entry is None:
            entry = self._waiting[id(rows.statement)] = (rows.statement, [])
        entry[1].extend(rows.make())

    def flush(self) -> None:
        for statement, waiting in self._waiting.values():
            if waiting:
                self._conn.execute(statement, waiting)
        self._waiting.clear()


# A queued write: the function (or rows), the caller's future and the caller's loop.
_Write = tuple["WriteFn | Rows", "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_STOP = object()


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """In the callers' loop: hand each write's caller its result or error."""
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class GroupWriter:
    """Runs `fn(connection)` writes on one thread, many per transaction.

    Args:
        engine: Where to write.
        max_batch: Most writes in one transaction.
    """

    def __init__(self, engine: sa.Engine, *, max_batch: int = 256) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.transactions = 0
        """Transactions committed (for tests and benchmarks)."""

    async def write(self, fn: WriteFn) -> Any:
        """Run `fn` in a write transaction; returns once that transaction has committed.

        Raises:
            Whatever `fn` or the commit raised.
        """
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((fn, future, loop))
        return await future

    async def write_rows(self, statement: Any, make: Callable[[], list[dict[str, Any]]]) -> None:
        """Write the rows `make()` returns (called in the writer thread) with `statement`, merged
        with other writes' rows for the same statement; returns once committed.

        Raises:
            Whatever the statement or the commit raised.
        """
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((Rows(statement, make), future, loop))
        await future

    def close(self) -> None:
        """Finish the queued writes and stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._loop, name="corral-db-writer", daemon=True
                    )
                    self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch: list[_Write] = [item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Write]) -> None:
        # A caller cancelled before its write started: skip it (one already written stays).
        live = [write for write in batch if not write[1].cancelled()]
        outcomes: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        if live:
            self._commit_group(live, outcomes)
        for loop, settled in outcomes.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # the caller's loop is closed: nobody waits for these
                log.debug("%d writes finished after their event loop closed", len(settled))

    def _commit_group(
        self, group: list[_Write], outcomes: dict[asyncio.AbstractEventLoop, list[Any]]
    ) -> None:
        try:
            with self._engine.begin() as conn:
                merge = _Merge(conn)
                results: list[Any] = []
                for fn, _, _ in group:
                    if isinstance(fn, Rows):
                        merge.add(fn)
                        results.append(None)
                    else:
                        merge.flush()  # the rows queued before it are written before it
                        results.append(fn(conn))
                merge.flush()
        except Exception as exc:  # boundary: the error belongs to a caller, not to this thread
            if len(group) == 1:
                _, future, loop = group[0]
                outcomes.setdefault(loop, []).append((future, None, exc))
                return
            # Bisect: the good writes still commit together, the bad one fails alone.
            log.debug("a batch of %d writes failed (%s); splitting it", len(group), exc)
            half = len(group) // 2
            self._commit_group(group[:half], outcomes)
            self._commit_group(group[half:], outcomes)
            return
        self.transactions += 1
        for (_, future, loop), result in zip(group, results, strict=True):
            outcomes.setdefault(loop, []).append((future, result, None))
