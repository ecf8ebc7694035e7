"""Executor leases: one live process per executor id, a dead one's lease taken over, and two
processes opening a fresh database at once (the migration lock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from corral.errors import StateError
from corral.store.executors import LEASE_TTL_S, ExecutorLeases
from corral.store.schema import SCHEMA_VERSION, executors, meta_table
from corral.store.sql import SqlStore

T0 = 1_800_000_000.0


@pytest.fixture
async def leases(tmp_path: Path) -> AsyncIterator[ExecutorLeases]:
    store = await SqlStore.open(f"sqlite:///{tmp_path}/leases.db")
    yield ExecutorLeases(store)
    await store.close()


async def test_a_second_live_holder_is_refused_with_who_holds_it(leases: ExecutorLeases):
    mine = await leases.acquire("corral-local", "first", T0)
    assert mine.holder == "first" and mine.pid > 0
    with pytest.raises(StateError) as refused:
        await leases.acquire("corral-local", "second", T0 + 3)
    text = str(refused.value)
    assert f"pid {mine.pid}" in text and "heartbeat 3 s ago" in text
    assert "--executor-id" in text  # what to do instead
    # The holder itself may take it again (a second app in the same process).
    await leases.acquire("corral-local", "first", T0 + 4)
    # Another executor id is another lease.
    await leases.acquire("worker-2", "second", T0 + 4)
    assert [(x.executor_id, x.holder) for x in await leases.leases()] == [
        ("corral-local", "first"),
        ("worker-2", "second"),
    ]


async def test_renewing_keeps_the_lease_and_a_stale_one_is_taken_over(leases: ExecutorLeases):
    await leases.acquire("corral-local", "first", T0)
    assert await leases.renew("corral-local", "first", T0 + LEASE_TTL_S - 1)
    # Renewed: still live a TTL after it was taken.
    with pytest.raises(StateError):
        await leases.acquire("corral-local", "second", T0 + LEASE_TTL_S + 1)
    # No heartbeat for longer than the TTL: the process is taken for dead.
    later = T0 + 2 * LEASE_TTL_S + 1
    taken = await leases.acquire("corral-local", "second", later)
    assert taken.holder == "second"
    assert not await leases.renew("corral-local", "first", later + 1)  # the first lost it
    assert await leases.renew("corral-local", "second", later + 1)


async def test_release_frees_the_lease_only_for_its_holder(leases: ExecutorLeases):
    await leases.acquire("corral-local", "first", T0)
    await leases.release("corral-local", "second")  # not the holder: nothing happens
    with pytest.raises(StateError):
        await leases.acquire("corral-local", "second", T0 + 1)
    await leases.release("corral-local", "first")
    assert (await leases.acquire("corral-local", "second", T0 + 1)).holder == "second"


async def test_two_racers_for_a_free_lease_get_it_once(leases: ExecutorLeases):
    outcomes = await asyncio.gather(
        *(leases.acquire("corral-local", f"racer-{i}", T0) for i in range(6)),
        return_exceptions=True,
    )
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(won) == 1
    assert all(isinstance(o, StateError) for o in outcomes if o not in won)


async def test_processes_opening_a_fresh_database_at_once_all_succeed(tmp_path: Path):
    """Each open migrates in its own thread and connection, as separate processes would: the
    migration lock makes the others wait, then find the tables at head."""
    for attempt in range(8):
        url = f"sqlite:///{tmp_path}/fresh-{attempt}.db"
        stores = await asyncio.gather(*(SqlStore.open(url) for _ in range(4)))
        for store in stores:
            assert await store.query(_version) == str(SCHEMA_VERSION)
            await store.close()


def _version(conn: sa.Connection) -> str | None:
    query = sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
    return conn.execute(query).scalar()


async def test_a_lease_of_a_process_gone_from_this_machine_is_taken_at_once(
    leases: ExecutorLeases,
):
    """A restart right after a crash does not wait out the TTL: the holder's pid is gone."""
    await leases.acquire("corral-local", "crashed", T0)

    def as_dead_process(conn: sa.Connection) -> None:
        conn.execute(sa.update(executors).values(pid=999_999_999))  # above any pid_max

    await leases._store.transact(as_dead_process)
    assert (await leases.acquire("corral-local", "restarted", T0 + 1)).holder == "restarted"


async def test_a_live_process_on_another_machine_keeps_its_lease(leases: ExecutorLeases):
    await leases.acquire("corral-local", "elsewhere", T0)

    def on_another_host(conn: sa.Connection) -> None:
        conn.execute(sa.update(executors).values(host="other-machine", pid=999_999_999))

    await leases._store.transact(on_another_host)
    with pytest.raises(StateError, match="on other-machine"):
        await leases.acquire("corral-local", "here", T0 + 1)


async def test_processes_opening_a_fresh_postgres_database_at_once_all_succeed(postgres_url: str):
    stores = await asyncio.gather(*(SqlStore.open(postgres_url) for _ in range(4)))
    for store in stores:
        assert await store.query(_version) == str(SCHEMA_VERSION)
        await store.close()
