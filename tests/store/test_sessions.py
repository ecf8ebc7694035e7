"""Login sessions: a secret that acts as its token until expiry, logout or the token's revocation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from corral.errors import UsageError
from corral.store.ops import Ops
from corral.store.sql import SqlStore

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(
    params=[
        "sqlite",
        # The same contract on PostgreSQL (a fresh database per test; slow tier).
        pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow]),
    ]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database: set up before `ops` and so dropped only after its store is closed."""
    if request.param == "postgres":
        found: str = request.getfixturevalue("postgres_url")
        return found
    return f"sqlite:///{tmp_path / 's.db'}"


@pytest.fixture
async def ops(url: str, tmp_path: Path) -> AsyncIterator[Ops]:
    store = await SqlStore.open(url)
    try:
        yield Ops(store, key_file=tmp_path / "audit.key", checkpoint_every=0)
    finally:
        await store.close()


async def test_a_session_acts_as_its_token_until_it_expires(ops: Ops):
    token, row = await ops.create_token("ann", "operator", by="test", at=T0)
    secret, session = await ops.open_session(row["id"], by="token:ann", at=T0, ttl_s=3600)
    assert secret.startswith("crs_") and token not in secret
    found = await ops.find_session(secret, T0 + timedelta(minutes=59))
    assert found is not None and (found.name, found.role, found.id) == (
        "ann",
        "operator",
        session.id,
    )
    assert await ops.find_session(secret, T0 + timedelta(hours=1)) is None
    assert await ops.find_session(token, T0) is None, "an API token is not a session secret"
    assert await ops.find_session("crs_" + secret[4:][::-1], T0) is None


async def test_logout_ends_the_session_and_is_audited(ops: Ops):
    _, row = await ops.create_token("ann", "viewer", by="test", at=T0)
    secret, session = await ops.open_session(row["id"], by="token:ann", at=T0, ttl_s=3600)
    other, _ = await ops.open_session(row["id"], by="token:ann", at=T0, ttl_s=3600)
    assert await ops.close_session(secret, by="token:ann", at=T0) is True
    assert await ops.find_session(secret, T0) is None
    assert await ops.close_session(secret, by="token:ann", at=T0) is False
    assert await ops.find_session(other, T0) is not None, "other browsers stay logged in"
    entries = await ops.audit_entries()
    assert [e["action"] for e in entries][:2] == ["session.close", "session.open"]
    assert entries[0]["subject"] == f"session:{session.id}"
    assert secret not in str(entries)


async def test_revoking_or_expiring_the_token_ends_its_sessions(ops: Ops):
    _, revoked = await ops.create_token("a", "admin", by="test", at=T0)
    _, short = await ops.create_token("b", "admin", by="test", at=T0, expires_in_s=60)
    first, _ = await ops.open_session(revoked["id"], by="token:a", at=T0, ttl_s=3600)
    second, _ = await ops.open_session(short["id"], by="token:b", at=T0, ttl_s=3600)
    await ops.revoke_token(revoked["id"], by="test", at=T0)
    assert await ops.find_session(first, T0) is None
    assert await ops.find_session(second, T0 + timedelta(seconds=59)) is not None
    assert await ops.find_session(second, T0 + timedelta(seconds=60)) is None


async def test_ended_sessions_are_deleted_when_the_next_one_opens(ops: Ops):
    from corral.store.schema import sessions

    _, row = await ops.create_token("ann", "viewer", by="test", at=T0)
    old, _ = await ops.open_session(row["id"], by="t", at=T0, ttl_s=60)
    closed, _ = await ops.open_session(row["id"], by="t", at=T0, ttl_s=3600)
    await ops.close_session(closed, by="t", at=T0)
    await ops.open_session(row["id"], by="t", at=T0 + timedelta(minutes=2), ttl_s=60)
    count = await ops.store.query(lambda conn: len(conn.execute(sessions.select()).all()))
    assert count == 1


async def test_a_session_needs_a_positive_lifetime(ops: Ops):
    _, row = await ops.create_token("ann", "viewer", by="test", at=T0)
    with pytest.raises(UsageError, match="lifetime must be positive, got 0"):
        await ops.open_session(row["id"], by="t", at=T0, ttl_s=0)
