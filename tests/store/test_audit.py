"""The audit log is tamper-evident: `verify` finds an edited, inserted or deleted entry and names
it, and signed checkpoints catch a history rewritten with fresh hashes."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from corral.store import audit as chain
from corral.store.audit import AuditSigner, default_key_file
from corral.store.ops import Ops
from corral.store.sql import SqlStore

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def ops(tmp_path: Path):
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'audit.db'}")
    ops = Ops(store, checkpoint_every=4)
    for i in range(1, 11):
        await ops.audit(
            at=T0 + timedelta(minutes=i),
            actor=f"user{i % 3}",
            action="tool.call",
            subject="tool:refund",
            run_id=f"run-{i}",
            details={"arguments": {"amount_usd": i * 10}, "result": {"ok": True}},
        )
    yield ops
    await store.close()


# The forger works on the database directly, in a thread: never on the event loop.


async def execute(ops: Ops, sql: str, **params: object) -> None:
    def go() -> None:
        with ops.store.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    await asyncio.to_thread(go)


async def rows(ops: Ops) -> list[dict[str, object]]:
    def go() -> list[dict[str, object]]:
        with ops.store.engine.connect() as conn:
            query = sa.select(chain.audit).order_by("seq")
            return [dict(r._mapping) for r in conn.execute(query)]

    return await asyncio.to_thread(go)


async def rewrite(ops: Ops, entries: list[dict[str, object]]) -> None:
    """Replace the whole table, re-linking and re-hashing every entry (a careful forger)."""
    await asyncio.to_thread(_rewrite, ops, entries)


def _rewrite(ops: Ops, entries: list[dict[str, object]]) -> None:
    prev = chain.GENESIS
    with ops.store.engine.begin() as conn:
        conn.execute(chain.audit.delete())
        for seq, e in enumerate(entries, start=1):
            digest = chain.entry_hash(
                prev,
                str(e["at"]),
                str(e["actor"]),
                str(e["action"]),
                str(e["subject"]),
                e["run_id"],  # type: ignore[arg-type]
                str(e["details"]),
            )
            conn.execute(
                chain.audit.insert().values({**e, "seq": seq, "prev_hash": prev, "hash": digest})
            )
            prev = digest


async def test_an_untouched_log_verifies_and_is_checkpointed(ops):
    count, problems = await ops.verify()
    assert (count, problems) == (10, [])
    assert [c["seq"] for c in await ops.checkpoints()] == [4, 8]
    assert (await ops.checkpoint(T0))["seq"] == 10
    assert await ops.verify() == (10, [])


async def test_an_edited_entry_is_named(ops):
    await execute(ops, "UPDATE corral_audit SET details = :d WHERE seq = 5", d='{"amount_usd":1}')
    _, problems = await ops.verify()
    assert [(p.kind, p.seq) for p in problems] == [("edited", 5)]
    assert problems[0].message == "entry 5 was edited: its fields do not match its hash"


async def test_a_deleted_entry_is_named(ops):
    await execute(ops, "DELETE FROM corral_audit WHERE seq = 6")
    _, problems = await ops.verify()
    assert [(p.kind, p.seq) for p in problems] == [("deleted", 6)]
    assert problems[0].message == "entry 6 deleted (before entry 7)"


async def test_an_inserted_entry_is_named_even_when_it_is_hashed_and_the_rest_renumbered(ops):
    entries = await rows(ops)
    prev = entries[3]
    forged_at = T0 + timedelta(minutes=4, seconds=30)
    details = json.dumps({"arguments": {"amount_usd": 5000}})
    forged = {
        "seq": 5,
        "at": forged_at.isoformat(),
        "actor": "mallory",
        "action": "tool.call",
        "subject": "tool:refund",
        "run_id": "run-x",
        "details": details,
        "prev_hash": prev["hash"],
        "hash": chain.entry_hash(
            str(prev["hash"]),
            forged_at.isoformat(),
            "mallory",
            "tool.call",
            "tool:refund",
            "run-x",
            details,
        ),
    }

    def insert() -> None:
        with ops.store.engine.begin() as conn:
            conn.execute(chain.audit.delete())
            for seq, e in enumerate([*entries[:4], forged, *entries[4:]], start=1):
                conn.execute(chain.audit.insert().values({**e, "seq": seq}))

    await asyncio.to_thread(insert)
    _, problems = await ops.verify()
    assert [(p.kind, p.seq) for p in problems][:1] == [("inserted", 5)]
    assert problems[0].message == "entry 5 was inserted: entry 6 links past it"


async def test_a_history_rewritten_with_fresh_hashes_fails_its_signed_checkpoint(ops):
    entries = await rows(ops)
    entries[1]["details"] = json.dumps({"arguments": {"amount_usd": 0}})
    await rewrite(ops, entries)
    _, problems = await ops.verify()
    assert [(p.kind, p.seq) for p in problems] == [("checkpoint", 4), ("checkpoint", 8)]
    assert "the chain up to entry 4 was rewritten" in problems[0].message


async def test_deleting_the_tail_and_its_checkpoints_is_caught_by_the_exported_copy(ops, tmp_path):
    exported = await ops.checkpoints()  # `corral audit export` keeps these outside the database
    await execute(ops, "DELETE FROM corral_audit WHERE seq > 6")
    await execute(ops, "DELETE FROM corral_audit_checkpoints WHERE seq > 6")
    assert (await ops.verify())[1] == []  # the database alone cannot tell
    _, problems = await ops.verify(exported=exported)
    assert [(p.kind, p.seq) for p in problems] == [("deleted", 8)]
    assert problems[0].message == "entries after 6 deleted: checkpoint 8 signed entry 8"


async def test_a_checkpoint_signed_by_another_key_is_not_trusted(ops, tmp_path, monkeypatch):
    monkeypatch.delenv("CORRAL_AUDIT_KEY")
    stranger = await asyncio.to_thread(chain.AuditSigner.load, tmp_path / "other.key")
    mode = (await asyncio.to_thread((tmp_path / "other.key").stat)).st_mode
    assert mode & 0o777 == 0o600
    head = (await rows(ops))[-1]
    forged = stranger.sign(10, str(head["hash"]), T0.isoformat())
    _, problems = await ops.verify(exported=[forged])
    assert [(p.kind, p.seq) for p in problems] == [("checkpoint", 10)]
    assert problems[0].message == "checkpoint 10 is signed by an untrusted key"
    forged["signature"] = "00" * 64
    trusted = {stranger.public_key, ops.signer.public_key}
    _, problems = await ops.verify(exported=[forged], trusted_keys=trusted)
    assert [p.message for p in problems] == ["checkpoint 10 has an invalid signature"]


def test_a_bad_signing_key_is_a_config_error(tmp_path, monkeypatch):
    from corral.errors import ConfigError

    monkeypatch.setenv("CORRAL_AUDIT_KEY", "not base64!")
    with pytest.raises(ConfigError, match="CORRAL_AUDIT_KEY environment variable is not a base64"):
        chain.AuditSigner.load(tmp_path / "k")


async def test_secrets_are_redacted_and_nothing_is_truncated(ops):
    await ops.audit(
        at=T0,
        actor="a",
        action="tool.call",
        subject="tool:send",
        details={"arguments": {"token": "sk-" + "a" * 30, "body": "x" * 20_000}},
    )
    newest = (await ops.audit_entries(limit=1))[0]
    assert newest["details"]["arguments"]["token"] == "[REDACTED]"
    assert len(newest["details"]["arguments"]["body"]) == 20_000


@pytest.mark.postgres
async def test_concurrent_appends_on_postgres_keep_one_chain(postgres_url):
    stores = [await SqlStore.open(postgres_url) for _ in range(2)]
    try:
        writers = [Ops(s, checkpoint_every=5) for s in stores]
        await asyncio.gather(
            *(
                writers[i % 2].audit(at=T0, actor=f"w{i % 2}", action="x", subject=str(i))
                for i in range(30)
            )
        )
        count, problems = await writers[0].verify()
        assert (count, problems) == (30, [])
        assert [c["seq"] for c in await writers[1].checkpoints()] == [5, 10, 15, 20, 25, 30]
    finally:
        for s in stores:
            await s.close()


async def test_closing_an_app_signs_the_head_of_the_chain(tmp_path):
    from corral import App, AppConfig

    app = App(AppConfig(database=f"sqlite:///{tmp_path / 'c.db'}", durable=False))
    async with app:
        assert app.ops is not None
        ops = app.ops
        await app.control("halt", "agent", "a", by="t")  # two entries: config change, halt
        assert [c["seq"] for c in await ops.checkpoints()] == []
    store = await SqlStore.open(app.config.database)
    try:
        reopened = Ops(store)
        assert [c["seq"] for c in await reopened.checkpoints()] == [2]
        assert await reopened.verify() == (2, [])
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("sqlite:///.corral/corral.db", Path(".corral/audit.key"), id="default-db"),
        pytest.param("sqlite:////srv/app/runs.db", Path("/srv/app/audit.key"), id="sqlite-file"),
        pytest.param("sqlite:///:memory:", None, id="in-memory"),
        pytest.param("postgresql://u@db/x", Path.home() / ".corral" / "audit.key", id="postgresql"),
    ],
)
def test_the_signing_key_lives_beside_the_database_by_default(url, expected):
    assert default_key_file(url) == expected


@pytest.fixture
def in_tmp_path_without_key_env(tmp_path, monkeypatch):
    """Run from `tmp_path` with no CORRAL_AUDIT_KEY (a sync fixture: `chdir` blocks)."""
    monkeypatch.delenv("CORRAL_AUDIT_KEY")
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("in_tmp_path_without_key_env")
async def test_no_key_is_written_to_the_working_directory(tmp_path):
    """The key went to `.corral/audit.key` in whatever directory a command ran from."""
    db = tmp_path / "data" / "runs.db"
    store = await SqlStore.open(f"sqlite:///{db}")
    try:
        ops = Ops(store)
        key = await asyncio.to_thread(lambda: ops.signer.public_key)
        again = await asyncio.to_thread(lambda: Ops(store).signer.public_key)
    finally:
        await store.close()
    assert key == again
    files = await asyncio.to_thread(
        lambda: sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*key*"))
    )
    assert files == ["data/audit.key"]  # beside the database, nothing in the working directory


@pytest.mark.usefixtures("in_tmp_path_without_key_env")
async def test_a_key_left_in_the_working_directory_is_still_used(tmp_path, caplog):
    old = await asyncio.to_thread(lambda: AuditSigner.load(tmp_path / ".corral" / "audit.key"))
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'data' / 'runs.db'}")
    try:
        key = await asyncio.to_thread(lambda: Ops(store).signer.public_key)
    finally:
        await store.close()
    assert key == old.public_key
    assert "move it to" in caplog.text and "data/audit.key" in caplog.text
