"""Executor leases (`corral_executors`): one live process per executor id.

DBOS recovers the unfinished runs of its executor id when a process launches, and executes the
runs it starts under that id. Two live processes with one id would both execute those runs: a
model call paid twice, a side effect repeated. So the process that launches the durable engine
takes its executor id's lease first and renews it with a heartbeat (`HEARTBEAT_S`); a second
process asking for the same id while the heartbeat is fresh is refused with a `StateError` that
names the holder. A lease whose heartbeat is older than `LEASE_TTL_S`, or whose process is gone
from this machine (its pid no longer exists: a restart right after a crash), belongs to a process
that died: the next process takes it over (and DBOS recovers that process's runs). Closing the
app gives the lease back at once.

Each step is one conditional statement, atomic in SQLite (the write lock) and PostgreSQL (the
row lock), so two processes racing for a free or stale lease cannot both get it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass

import sqlalchemy as sa

from corral.errors import StateError
from corral.store.schema import executors
from corral.store.sql import SqlStore

__all__ = ["HEARTBEAT_S", "LEASE_TTL_S", "ExecutorLeases", "Lease"]

LEASE_TTL_S = float(os.environ.get("CORRAL_LEASE_TTL_S", "20"))
"""A lease not renewed for this long is free (its process is taken for dead). 20 s by default;
`CORRAL_LEASE_TTL_S` changes it (every process on a database must use the same value)."""
HEARTBEAT_S = LEASE_TTL_S / 4
"""How often a holder renews its lease: four heartbeats per TTL, so a process busy for a few
seconds keeps its lease."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """Who holds an executor id."""

    executor_id: str
    holder: str
    """A random id of the holding process (one per app opened)."""
    pid: int
    host: str
    started_at: float
    heartbeat_at: float
    """Unix time of the last renewal."""


class ExecutorLeases:
    """The executor leases of one database."""

    def __init__(self, store: SqlStore, *, ttl_s: float = LEASE_TTL_S) -> None:
        self._store = store
        self.ttl_s = ttl_s

    async def acquire(self, executor_id: str, holder: str, now: float) -> Lease:
        """Take the lease of `executor_id` for `holder` (free, stale, or already `holder`'s).

        Raises:
            StateError: a live process holds it; the message names it and what to do.
        """
        mine = Lease(
            executor_id=executor_id,
            holder=holder,
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=now,
            heartbeat_at=now,
        )
        taken = await self._store.transact(self._take, mine, None)
        if taken is not None and _dead_here(taken):
            # Its process died on this machine (a crash, then a restart): no need to wait out
            # the TTL. Taken only if it is still that same dead holder's (compare-and-set).
            taken = await self._store.transact(self._take, mine, taken)
        if taken is None:
            return mine
        age = now - taken.heartbeat_at
        raise StateError(
            f"executor id {executor_id!r} is held by a live process (pid {taken.pid} on "
            f"{taken.host}, heartbeat {age:.0f} s ago): two processes with one executor id would "
            "execute the same durable runs twice. Stop that process (its lease is freed when it "
            f"closes, or {self.ttl_s:.0f} s after it died), or give this one its own id: "
            "`--executor-id NAME` or `executor_id` in corral.toml"
        )

    def _take(self, conn: sa.Connection, mine: Lease, dead: Lease | None) -> Lease | None:
        """In one transaction: the lease taken (None), or the holder that keeps it. Free,
        stale, `mine` already, or still held by the `dead` holder: taken."""
        row, values = executors.c, dataclasses.asdict(mine)
        takeable = [row.holder == mine.holder, row.heartbeat_at < mine.heartbeat_at - self.ttl_s]
        if dead is not None:
            takeable.append(
                sa.and_(row.holder == dead.holder, row.heartbeat_at == dead.heartbeat_at)
            )
        took = conn.execute(
            sa.update(executors)
            .where(row.executor_id == mine.executor_id, sa.or_(*takeable))
            .values(values)
            .returning(row.executor_id)
        )
        if took.first() is not None:
            return None
        took = conn.execute(
            self._store.insert(executors)
            .values(values)
            .on_conflict_do_nothing(index_elements=["executor_id"])
            .returning(row.executor_id)  # rowcount is -1 here on psycopg: ask for the row
        )
        if took.first() is not None:
            return None
        found = conn.execute(sa.select(executors).where(row.executor_id == mine.executor_id))
        return Lease(**found.one()._mapping)

    async def renew(self, executor_id: str, holder: str, now: float) -> bool:
        """Renew `holder`'s lease; False when it no longer holds it (taken over as stale)."""

        def renew(conn: sa.Connection) -> bool:
            done = conn.execute(
                sa.update(executors)
                .where(executors.c.executor_id == executor_id, executors.c.holder == holder)
                .values(heartbeat_at=now)
            )
            return bool(done.rowcount)

        return await self._store.transact(renew)

    async def release(self, executor_id: str, holder: str) -> None:
        """Give `holder`'s lease back (nothing if it no longer holds it)."""

        def release(conn: sa.Connection) -> None:
            conn.execute(
                sa.delete(executors).where(
                    executors.c.executor_id == executor_id, executors.c.holder == holder
                )
            )

        await self._store.transact(release)

    async def leases(self) -> list[Lease]:
        """Every lease, live or stale, by executor id."""

        def read(conn: sa.Connection) -> list[Lease]:
            rows = conn.execute(sa.select(executors).order_by(executors.c.executor_id))
            return [Lease(**r._mapping) for r in rows]

        return await self._store.query(read)


def _dead_here(lease: Lease) -> bool:
    """Whether `lease`'s process was on this machine and no longer exists."""
    if lease.host != socket.gethostname() or lease.pid == os.getpid():
        return False
    try:
        os.kill(lease.pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False
