"""`SqlStore.prune` reaches the durable engine only through what the store's opener hands in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from corral.store.sql import SqlStore
from corral.trace import RunRecord

T0 = datetime(2026, 12, 1, tzinfo=UTC)


async def _store_with_runs(url: str, forget: list[tuple[sa.Engine, list[str]]] | None) -> SqlStore:
    def remember(engine: sa.Engine, run_ids: list[str]) -> None:
        assert forget is not None
        forget.append((engine, sorted(run_ids)))

    store = await SqlStore.open(url, forget_durable=remember if forget is not None else None)
    for run_id, durable, finished in (
        ("old-durable", True, T0),
        ("old-ephemeral", False, T0),
        ("running-durable", True, None),
    ):
        await store.record_run(
            RunRecord(
                run_id=run_id,
                workflow="w",
                status="succeeded" if finished else "running",
                durable=durable,
                started_at=T0 - timedelta(hours=1),
                finished_at=finished,
            )
        )
    return store


async def test_prune_hands_the_pruned_durable_runs_to_forget_durable(tmp_path: Path):
    forgotten: list[tuple[sa.Engine, list[str]]] = []
    store = await _store_with_runs(f"sqlite:///{tmp_path / 'p.db'}", forgotten)
    try:
        counts = await store.prune(T0 + timedelta(minutes=1), dry_run=True)
        assert counts["runs"] == 2 and forgotten == []  # a dry run forgets nothing
        counts = await store.prune(T0 + timedelta(minutes=1))
        assert counts["runs"] == 2
        assert forgotten == [(store.engine, ["old-durable"])]
        assert await store.get_run("running-durable") is not None
    finally:
        await store.close()


async def test_prune_without_forget_durable_deletes_only_its_own_rows(tmp_path: Path):
    store = await _store_with_runs(f"sqlite:///{tmp_path / 'p.db'}", None)
    try:
        counts = await store.prune(T0 + timedelta(minutes=1))
        assert counts["runs"] == 2
        assert await store.get_run("old-durable") is None
    finally:
        await store.close()


async def test_a_read_only_open_checks_the_schema_version_and_writes_nothing(tmp_path: Path):
    import asyncio

    import pytest

    from corral.errors import StateError
    from corral.store.schema import SCHEMA_VERSION

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with pytest.raises(StateError, match="there is no Corral database at .*nothing was created"):
        await SqlStore.open(url, read_only=True)
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []

    await (await SqlStore.open(url)).close()
    store = await SqlStore.open(url, read_only=True)
    try:
        assert await store.list_runs() == []
        with pytest.raises(StateError):  # query_only: a write is refused, not carried out
            await store.transact(lambda conn: conn.execute(sa.text("DELETE FROM corral_runs")))
    finally:
        await store.close()

    def downgrade() -> None:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE corral_meta SET value = '1' WHERE key = 'schema_version'"))
        engine.dispose()

    await asyncio.to_thread(downgrade)
    with pytest.raises(StateError) as info:
        await SqlStore.open(url, read_only=True)
    assert f"has Corral schema version 1, not this Corral's ({SCHEMA_VERSION})" in str(info.value)


def test_an_unparseable_database_url_is_named_without_its_password():
    import pytest

    from corral.errors import ConfigError
    from corral.store.sql import make_engine

    with pytest.raises(ConfigError, match="is not a database URL; use sqlite") as error:
        make_engine("postgresql+psycopg:/app:pg-pw-7c2e@db:notaport/x")
    assert "pg-pw-7c2e" not in str(error.value) and ":***@" in str(error.value)


async def test_journaled_steps_effects_and_cached_answers_are_stored_redacted(tmp_path: Path):
    """They are read back (replay, a cache hit), so they are redacted but never truncated."""
    from corral.secrets import register_secret

    key = register_secret("stored-step-key-3b9d")
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'c.db'}")
    long_text = "x" * 10_000
    try:
        await store.save_step("r1", "1", "tool:t", {"error": f"401 {key}", "long": long_text})
        await store.record_effect("r1:2", "r1", "t", f"done with {key}")
        await store.cache_put("tenant:*", "k", {"text": f"sk-{'b' * 30}"}, now=0.0, ttl_s=60)
        steps = await store.load_steps("r1")
        effect = await store.effect("r1:2")
        cached = await store.cache_get("tenant:*", "k", 1.0)
    finally:
        await store.close()
    assert steps == {"1": {"error": "401 [REDACTED]", "long": long_text}}
    assert effect == {"result": "done with [REDACTED]"}
    assert cached == {"text": "[REDACTED]"}


async def test_a_runs_user_tenant_and_tags_are_stored_redacted(tmp_path: Path):
    """A caller can put anything in them: `--user` holding a key stored it in clear."""
    from corral.secrets import register_secret

    key = register_secret("user-field-key-7c1e")
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        await store.record_run(
            RunRecord(
                run_id="r1",
                workflow="w",
                status="running",
                durable=False,
                user=f"u-{key}",
                tenant=key,
                tags=("plain", key),
                started_at=T0,
            )
        )
        [row] = await store.list_runs()
    finally:
        await store.close()
    assert key not in repr(row)
    assert row["user_id"] == "u-[REDACTED]" and row["tags"] == ["plain", "[REDACTED]"]


async def test_a_resumed_runs_record_keeps_the_time_it_first_started(tmp_path: Path):
    """Recovery rewrote `started_at` to the moment the run resumed."""
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        for status, started in (("running", T0), ("succeeded", T0 + timedelta(hours=2))):
            await store.record_run(
                RunRecord(
                    run_id="r1",
                    workflow="w",
                    status=status,
                    durable=True,
                    started_at=started,
                    finished_at=started if status == "succeeded" else None,
                )
            )
        [row] = await store.list_runs()
    finally:
        await store.close()
    assert row["status"] == "succeeded" and row["started_at"] == T0
