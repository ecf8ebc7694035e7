"""The audit log is tamper-evident: `verify` finds an edited, inserted or deleted entry and names
it, and signed checkpoints, appended to a file outside the database as they commit, catch a history
rewritten with fresh hashes, a deleted tail and a wiped table."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from corral.store import audit as chain
from corral.store.ops import Ops
from corral.store.sql import SqlStore

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def ops(tmp_path: Path):
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'audit.db'}")
    ops = Ops(store, checkpoint_every=4, checkpoint_file=tmp_path / "outside" / "points.jsonl")
    for i in range(1, 11):
        await ops.audit(
            at=T0 + timedelta(minutes=i),
            actor=f"user{i % 3}",
            action="tool.call",
            subject="tool:refund",
            run_id=f"run-{i}",
            details={"arguments": {"amount_usd": i * 10}, "result": {"ok": True}},
        )
    await ops.checkpoint(T0 + timedelta(minutes=11))  # as the app does at close
    yield ops
    await store.close()


def exported_seqs(path: Path) -> list[int]:
    return [int(p["seq"]) for p in chain.read_checkpoint_file(path)[0]]


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


async def test_an_untouched_log_verifies_and_every_checkpoint_is_exported(ops, tmp_path):
    assert await ops.verify() == (10, [])
    assert [c["seq"] for c in await ops.checkpoints()] == [4, 8, 10]
    exported = tmp_path / "outside" / "points.jsonl"
    assert await asyncio.to_thread(exported_seqs, exported) == [4, 8, 10]
    mode = (await asyncio.to_thread(exported.stat)).st_mode
    assert mode & 0o777 == 0o600


async def test_an_unsigned_head_fails_until_it_is_signed(ops):
    await ops.audit(at=T0 + timedelta(hours=1), actor="a", action="x", subject="s")
    _, problems = await ops.verify()
    assert [(p.kind, p.seq) for p in problems] == [("unsigned", 11)]
    assert problems[0].message.startswith("entry 11 not covered by a trusted signed checkpoint")
    await ops.checkpoint(T0 + timedelta(hours=3))
    assert await ops.verify() == (11, [])


async def test_a_checkpoint_of_a_rolled_back_transaction_is_not_exported(ops, tmp_path):
    ops.log.checkpoint_every = 1

    def write() -> None:
        with ops.store.engine.begin() as conn:
            ops.log.append_in(
                conn, at=T0, actor="a", action="x", subject="s", run_id=None, details={}
            )
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await asyncio.to_thread(write)
    path = tmp_path / "outside" / "points.jsonl"
    assert await asyncio.to_thread(exported_seqs, path) == [4, 8, 10]
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
    assert [(p.kind, p.seq) for p in problems] == [
        ("checkpoint", 4),
        ("checkpoint", 8),
        ("checkpoint", 10),
    ]
    assert "the chain up to entry 4 was rewritten" in problems[0].message


async def test_a_rewrite_with_every_checkpoint_deleted_is_caught_by_the_checkpoint_file(ops):
    entries = await rows(ops)
    entries[1]["details"] = json.dumps({"arguments": {"amount_usd": 0}})
    await rewrite(ops, entries)
    await execute(ops, "DELETE FROM corral_audit_checkpoints")
    _, problems = await ops.verify()
    assert [(p.kind, p.seq) for p in problems] == [
        ("checkpoint", 4),
        ("checkpoint", 8),
        ("checkpoint", 10),
    ]


async def test_deleting_the_tail_and_its_checkpoints_is_caught_by_the_checkpoint_file(ops):
    await execute(ops, "DELETE FROM corral_audit WHERE seq > 6")
    await execute(ops, "DELETE FROM corral_audit_checkpoints WHERE seq > 6")
    _, problems = await ops.verify()
    assert [(p.kind, p.seq) for p in problems] == [("deleted", 8), ("deleted", 10)]
    assert problems[0].message == "entries after 6 deleted: checkpoint 8 signed entry 8"
    # Without the file, the database alone cannot tell; an exported copy can.
    exported = list(await ops.checkpoints())
    _, problems = await ops.verify(checkpoint_file=False, exported=exported)
    assert [(p.kind, p.seq) for p in problems] == [("unsigned", 5)]


async def test_a_wiped_table_is_caught_and_so_is_a_missing_checkpoint_file(ops, tmp_path):
    await execute(ops, "DELETE FROM corral_audit")
    await execute(ops, "DELETE FROM corral_audit_checkpoints")
    count, problems = await ops.verify()
    assert count == 0
    assert [(p.kind, p.seq) for p in problems] == [("deleted", 4), ("deleted", 8), ("deleted", 10)]
    assert problems[0].message == "entries after 0 deleted: checkpoint 4 signed entry 4"
    await asyncio.to_thread((tmp_path / "outside" / "points.jsonl").unlink)
    _, problems = await ops.verify()
    assert [p.kind for p in problems] == ["unsigned"]
    assert problems[0].message.startswith(
        f"no checkpoints found in {tmp_path / 'outside' / 'points.jsonl'}: the database's own "
        "checkpoints cannot prove that nothing was deleted or rewritten"
    )


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
    _, problems = await ops.verify(exported=[forged], trusted_keys={stranger.public_key})
    assert "checkpoint 10 has an invalid signature" in [p.message for p in problems]


async def test_verify_never_creates_a_key(ops, tmp_path, monkeypatch):
    """A missing key file made `verify` generate a key and call every genuine checkpoint
    untrusted."""
    monkeypatch.delenv("CORRAL_AUDIT_KEY")
    absent = tmp_path / "nowhere" / "audit.key"
    reader = Ops(ops.store, key_file=absent, checkpoint_file=tmp_path / "outside" / "points.jsonl")
    assert await reader.verify() == (10, [])  # the checkpoint file names the key it trusts
    _, problems = await reader.verify(checkpoint_file=False)
    assert [p.kind for p in problems] == [
        "key",
        "unsigned",
        "checkpoint",
        "checkpoint",
        "checkpoint",
    ]
    assert problems[0].message.startswith(f"no trusted public key: there is no key at {absent}")
    assert not await asyncio.to_thread(absent.exists)
    assert not await asyncio.to_thread(absent.parent.exists)


def test_the_default_files_live_outside_the_database_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    assert chain.default_key_file() == tmp_path / "config" / "corral" / "audit.key"
    relative = chain.default_checkpoint_file("sqlite:///.corral/corral.db")
    absolute = chain.default_checkpoint_file(f"sqlite:///{tmp_path / '.corral' / 'corral.db'}")
    assert relative == absolute  # one database, one file, from wherever it is named
    assert relative.parent == tmp_path / "state" / "corral" / "audit"
    assert relative.name.startswith("corral-") and relative.name.endswith(".checkpoints.jsonl")
    other = chain.default_checkpoint_file("postgresql://u:secret@db.example/prod")
    assert other.parent == relative.parent and other != relative
    assert "secret" not in str(other)
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert chain.default_checkpoint_file("sqlite:///x.db").parent == (
        tmp_path / "home" / ".local" / "state" / "corral" / "audit"
    )


# -- chain versions -----------------------------------------------------------------------------


def test_version_2_hashes_fields_unambiguously():
    """Version 1 joined the fields with \x1f: text moved from one field to the next kept the
    hash."""
    head = ("p" * 64, "2026-12-01T00:00:00+00:00", "alice", "tool.call")
    honest = (*head, "tool:a\x1fx", "run-1", "{}")
    shifted = (*head, "tool:a", "x\x1frun-1", "{}")  # a character moved to the next field
    assert chain.entry_hash(*honest, version=1) == chain.entry_hash(*shifted, version=1)
    assert chain.entry_hash(*honest) != chain.entry_hash(*shifted)
    none_run = (*honest[:5], None, "{}")
    empty_run = (*honest[:5], "", "{}")
    assert chain.entry_hash(*none_run) != chain.entry_hash(*empty_run)
    with pytest.raises(ValueError, match="unknown audit chain version 3"):
        chain.entry_hash(*honest, version=3)


def _old_chain(ops: Ops, count: int) -> None:
    """Entries as a Corral before chain version 2 wrote them."""
    prev = chain.GENESIS
    with ops.store.engine.begin() as conn:
        for seq in range(1, count + 1):
            fields = (
                prev,
                (T0 + timedelta(minutes=seq)).isoformat(),
                "old",
                "tool.call",
                "tool:refund",
                None,
                json.dumps({"n": seq}),
            )
            digest = chain.entry_hash(*fields, version=1)
            conn.execute(
                chain.audit.insert().values(
                    seq=seq,
                    at=fields[1],
                    actor="old",
                    action="tool.call",
                    subject="tool:refund",
                    run_id=None,
                    details=fields[6],
                    prev_hash=prev,
                    hash=digest,
                )
            )
            prev = digest


async def test_a_chain_written_by_the_old_hashing_still_verifies_and_continues(tmp_path):
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        ops = Ops(store, checkpoint_file=tmp_path / "points.jsonl")
        await asyncio.to_thread(_old_chain, ops, 3)
        await ops.checkpoint(T0 + timedelta(hours=1))
        assert await ops.verify() == (3, [])
        await ops.audit(at=T0 + timedelta(hours=2), actor="new", action="x", subject="s")
        assert await ops.verify() == (4, [])
        newest = (await rows(ops))[-1]
        assert newest["hash"] == chain.entry_hash(
            str(newest["prev_hash"]), str(newest["at"]), "new", "x", "s", None, "{}"
        )
        # An edit of an old entry is still caught...
        await execute(ops, "UPDATE corral_audit SET actor = 'mallory' WHERE seq = 2")
        _, problems = await ops.verify()
        assert [(p.kind, p.seq) for p in problems] == [("edited", 2)]
        # ...and so is a new entry re-hashed the old way, where fields can shift.
        await execute(ops, "UPDATE corral_audit SET actor = 'old' WHERE seq = 2")
        await ops.audit(at=T0 + timedelta(hours=3), actor="new", action="x", subject="s")
        old_way = chain.entry_hash(
            str(newest["hash"]),
            (T0 + timedelta(hours=3)).isoformat(),
            "new",
            "x",
            "s",
            None,
            "{}",
            version=1,
        )
        await execute(ops, "UPDATE corral_audit SET hash = :h WHERE seq = 5", h=old_way)
        _, problems = await ops.verify()
        assert ("edited", 5) in [(p.kind, p.seq) for p in problems]
        assert "hashed the old way (version 1) after entries hashed the new way" in " ".join(
            p.message for p in problems
        )
    finally:
        await store.close()


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
        writers = [Ops(s, checkpoint_every=5) for s in stores]  # one checkpoint file: one URL
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
    from corral.humans import AuditPolicy

    points = tmp_path / "points.jsonl"
    app = App(
        AppConfig(
            database=f"sqlite:///{tmp_path / 'c.db'}",
            durable=False,
            audit=AuditPolicy(checkpoint_every=0, checkpoint_file=str(points)),
        )
    )
    async with app:
        assert app.ops is not None
        ops = app.ops
        await app.control("halt", "agent", "a", by="t")  # two entries: config change, halt
        assert [c["seq"] for c in await ops.checkpoints()] == []
    store = await SqlStore.open(app.config.database)
    try:
        reopened = Ops(store, checkpoint_file=points)
        assert [c["seq"] for c in await reopened.checkpoints()] == [2]
        assert await asyncio.to_thread(exported_seqs, points) == [2]
        assert await reopened.verify() == (2, [])
    finally:
        await store.close()


@pytest.fixture
def in_tmp_path_without_key_env(tmp_path, monkeypatch):
    """Run from `tmp_path` with no CORRAL_AUDIT_KEY (a sync fixture: `chdir` blocks)."""
    monkeypatch.delenv("CORRAL_AUDIT_KEY")
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("in_tmp_path_without_key_env")
async def test_no_key_is_written_to_the_working_directory(tmp_path):
    """The key went to `.corral/audit.key` in whatever directory a command ran from; now it
    lives in the user's config directory, neither there nor beside the database."""
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
    assert files == []  # nothing in the working directory or beside the database
