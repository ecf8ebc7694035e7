"""Operator commands in process: inbox and decisions, controls, the audit log, tokens."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from corral import App, AppConfig, HumanPolicy, RunContext, tool
from corral.contracts import RunId
from corral.errors import UsageError
from corral.humans import HumanRequest
from corral.store.ops import Ops
from corral.store.sql import SqlStore
from corral.trace import RunRecord
from tests.helpers import cli_runner


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'c.db'}"


@pytest.fixture
def cli(tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch, capsys):
    config = tmp_path / "corral.toml"
    config.write_text(f'database = "{db}"\n', encoding="utf-8")
    return cli_runner(config, monkeypatch, capsys)


def seed_runs(db: str, *run_ids: str) -> None:
    """Runs that exist (commands taking a run id refuse ids that name no run)."""

    async def go() -> None:
        store = await SqlStore.open(db)
        try:
            for run_id in run_ids:
                await store.record_run(
                    RunRecord(
                        run_id=RunId(run_id),
                        workflow="pay",
                        status="running",
                        durable=False,
                        started_at=datetime.now(UTC),
                    )
                )
        finally:
            await store.close()

    asyncio.run(go())


def seed_request(db: str) -> str:
    async def go() -> str:
        store = await SqlStore.open(db)
        try:
            row = await Ops(store).open_request(
                HumanRequest(
                    id="run-1:2.h",
                    run_id="run-1",
                    step_id="2.h",
                    kind="approval",
                    workflow="pay",
                    subject="refund",
                    title="call refund",
                    payload={"arguments": {"order_id": "o1", "amount_usd": 500}},
                    schema={
                        "type": "object",
                        "properties": {
                            "order_id": {"type": "string"},
                            "amount_usd": {"type": "number"},
                        },
                        "required": ["order_id", "amount_usd"],
                        "additionalProperties": False,
                    },
                    default="reject",
                    created_at=datetime.now(UTC),
                )
            )
            return str(row["id"])
        finally:
            await store.close()

    return asyncio.run(go())


def test_inbox_then_an_edited_approval_then_a_second_decision_is_refused(cli, db):
    request_id = seed_request(db)
    code, out, _ = cli("inbox", "--format", "json")
    assert code == 0
    [row] = json.loads(out)
    assert row["id"] == request_id and row["kind"] == "approval" and row["subject"] == "refund"

    # --edit is a merge patch over the proposed arguments: null removes one, then the schema
    # decides.
    code, _, err = cli("approve", request_id, "--edit", '{"amount_usd": null}')
    assert code == 2 and "amount_usd" in err and "required" in err

    code, out, err = cli("approve", request_id, "--edit", '{"amount_usd": 50}', "--as", "alice")
    assert code == 0, err
    assert out.strip() == f"approval {request_id}: edited by alice"
    code, out, _ = cli("inbox", "--format", "json")
    assert json.loads(out) == []
    code, out, _ = cli("inbox", "--all", "--format", "json")
    [decided] = json.loads(out)
    assert decided["status"] == "edited"
    assert decided["value"] == {"order_id": "o1", "amount_usd": 50}

    code, _, err = cli("reject", request_id)
    assert code == 2 and "[conflict]" in err and "already edited (by alice" in err
    code, _, err = cli("approve", "missing:1")
    assert code == 2 and "[not_found] no human request 'missing:1'" in err
    code, _, err = cli("approve", request_id, "--edit", "{not json")
    assert code == 2 and "not JSON" in err


def test_controls_from_the_command_line_are_logged_for_running_apps(cli, db):
    seed_runs(db, "run-9")
    code, out, err = cli("cancel", "run-9", "--reason", "runaway", "--as", "oncall")
    assert code == 0, err
    assert out.startswith("halt run run-9 (control 1, by oncall)")
    code, out, _ = cli("pause", "--noncritical")
    assert code == 0 and out.startswith("pause noncritical")
    code, _, err = cli("pause", "--agent", "a", "--workflow", "w")
    assert code == 2 and "give exactly one of --agent, --workflow, --noncritical" in err
    code, out, _ = cli("halt", "--all", "-m", "incident 42")
    assert code == 0
    code, out, _ = cli("release", "--all")
    assert code == 0

    async def controls() -> list[tuple[str, str, str | None]]:
        store = await SqlStore.open(db)
        try:
            return [(c.action, c.scope, c.name) for c in await Ops(store).controls_since(0)]
        finally:
            await store.close()

    assert asyncio.run(controls()) == [
        ("halt", "run", "run-9"),
        ("pause", "noncritical", None),
        ("halt", "all", None),
        ("release", "all", None),
    ]
    code, out, _ = cli("audit", "list", "--format", "json")
    actions = [e["action"] for e in json.loads(out)]
    assert actions == ["operator.release", "operator.halt", "operator.pause", "operator.halt"]


def test_audit_verify_passes_then_names_the_tampered_entry(cli, db, tmp_path):
    seed_runs(db, "run-0", "run-1", "run-2")
    for i in range(3):
        assert cli("pause", "--agent", f"agent-{i}")[0] == 0
    exported = tmp_path / "checkpoints.jsonl"
    code, out, _ = cli("audit", "export", str(exported))
    assert code == 0 and "3 checkpoints written" in out
    code, out, _ = cli("audit", "verify", "--checkpoints", str(exported))
    assert code == 0 and out.startswith("audit log OK: 3 entries")

    tamper(db, "UPDATE corral_audit SET actor = 'mallory' WHERE seq = 2")
    code, _, err = cli("audit", "verify")
    assert code == 1
    assert "edited entry 2 was edited: its fields do not match its hash" in " ".join(err.split())
    assert "FAILED verification: 1 problem(s)" in err


def tamper(db: str, *statements: str) -> None:
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(sa.text(sql))
    engine.dispose()


def rehash_all(db: str) -> None:
    """A careful forger: edit entry 1, then re-link and re-hash every entry."""
    from corral.store import audit as chain

    engine = sa.create_engine(db)
    with engine.begin() as conn:
        entries = [dict(r._mapping) for r in conn.execute(sa.select(chain.audit).order_by("seq"))]
        entries[0]["actor"] = "mallory"
        conn.execute(chain.audit.delete())
        prev = chain.GENESIS
        for e in entries:
            fields = ("at", "actor", "action", "subject", "run_id", "details")
            digest = chain.entry_hash(prev, *(e[f] for f in fields))
            conn.execute(chain.audit.insert().values({**e, "prev_hash": prev, "hash": digest}))
            prev = digest
    engine.dispose()


@pytest.mark.parametrize(
    ("statements", "forge", "message"),
    [
        pytest.param(
            ["DELETE FROM corral_audit WHERE seq > 2"],
            False,
            "entries after 2 deleted: checkpoint 3 signed entry 3",
            id="tail-deleted",
        ),
        pytest.param(
            ["DELETE FROM corral_audit WHERE seq > 2", "DELETE FROM corral_audit_checkpoints"],
            False,
            "entries after 2 deleted: checkpoint 3 signed entry 3",
            id="tail-and-checkpoints-deleted",
        ),
        pytest.param(
            ["DELETE FROM corral_audit_checkpoints"],
            True,
            "the chain up to entry 1 was rewritten: it no longer matches the signed checkpoint",
            id="consistent-rewrite-checkpoints-deleted",
        ),
        pytest.param(
            ["DELETE FROM corral_audit", "DELETE FROM corral_audit_checkpoints"],
            False,
            "entries after 0 deleted: checkpoint 1 signed entry 1",
            id="table-wiped",
        ),
    ],
)
def test_audit_verify_fails_on_every_tampering_the_database_alone_hides(
    cli, db, statements, forge, message
):
    """Each of these passed `corral audit verify` unless an exported file was given."""
    for i in range(3):
        assert cli("pause", "--agent", f"agent-{i}")[0] == 0
    assert cli("audit", "verify")[0] == 0
    if forge:
        rehash_all(db)
    tamper(db, *statements)
    code, out, err = cli("audit", "verify")
    assert code == 1 and out == ""
    assert message in " ".join(err.split())
    assert "audit log FAILED verification" in err


def test_audit_verify_fails_without_the_checkpoint_file_or_a_signed_head(cli, db):
    from corral.store.audit import default_checkpoint_file

    assert cli("pause", "--agent", "agent-1")[0] == 0
    points = default_checkpoint_file(db)
    assert points.exists()  # outside the database directory, one file per database
    assert points.parent != Path(db.removeprefix("sqlite:///")).parent
    # Entries added behind the app's back are not vouched for by any checkpoint.
    from corral.store import audit as chain

    engine = sa.create_engine(db)
    with engine.begin() as conn:
        head = conn.execute(sa.select(chain.audit)).one()._mapping
        forged = {**head, "seq": 2, "prev_hash": head["hash"], "actor": "mallory"}
        fields = ("at", "actor", "action", "subject", "run_id", "details")
        forged["hash"] = chain.entry_hash(head["hash"], *(forged[f] for f in fields))
        conn.execute(chain.audit.insert().values(forged))
    engine.dispose()
    code, _, err = cli("audit", "verify")
    assert code == 1
    assert "unsigned entry 2 not covered by a trusted signed checkpoint" in " ".join(err.split())

    points.unlink()
    code, _, err = cli("audit", "verify")
    assert code == 1
    assert f"no checkpoints found in {points}" in " ".join(err.split())


def test_audit_verify_never_creates_a_key(tmp_path, db, monkeypatch, capsys):
    key = tmp_path / "keys" / "audit.key"
    config = tmp_path / "audit.toml"
    config.write_text(
        f'database = "{db}"\n[audit]\nkey_file = "{key}"\n'
        f'checkpoint_file = "{tmp_path / "points.jsonl"}"\n',
        encoding="utf-8",
    )
    monkeypatch.delenv("CORRAL_AUDIT_KEY")
    cli = cli_runner(config, monkeypatch, capsys)
    code, _, err = cli("audit", "verify")  # no database yet: verify creates none either
    assert code == 2 and "no Corral database" in err
    assert not Path(db.removeprefix("sqlite:///")).exists()
    seed_runs(db)  # a database with no audit entries and no key
    code, _, err = cli("audit", "verify")
    assert code == 1
    assert f"key no trusted public key: there is no key at {key}" in " ".join(err.split())
    assert not key.exists() and not key.parent.exists()
    assert cli("pause", "--agent", "agent-1")[0] == 0  # a writer creates it
    assert key.exists() and key.stat().st_mode & 0o777 == 0o600
    assert cli("audit", "verify")[0] == 0


def test_tokens_are_shown_once_listed_without_secrets_and_revoked(cli, db):
    code, out, _ = cli("tokens", "create", "grafana", "--role", "viewer")
    assert code == 0
    token = out.strip().splitlines()[-1]
    assert token.startswith("crl_")
    code, out, _ = cli("tokens", "list", "--format", "json")
    [row] = json.loads(out)
    assert row["name"] == "grafana" and row["role"] == "viewer" and "hash" not in row
    assert token not in out
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT hash FROM corral_tokens")).scalar_one()
    engine.dispose()
    assert token not in stored and len(stored) == 64
    code, _, err = cli("tokens", "create", "x", "--role", "root")
    assert code == 2 and "unknown role 'root'" in err
    assert cli("tokens", "revoke", row["id"])[0] == 0
    code, _, err = cli("tokens", "revoke", row["id"])
    assert code == 2 and "already revoked" in err


class Order(BaseModel):
    order_id: str


async def test_show_prints_who_decided_a_human_wait(cli, db):
    @tool(side_effect=True, approval="always")
    def cancel_order(order_id: str) -> str:
        """Cancel an order."""
        return "cancelled"

    app = App(AppConfig(database=db, durable=False, humans=HumanPolicy(poll_s=0.05)))

    @app.workflow
    async def drop(ctx: RunContext, o: Order) -> Order:
        await ctx.tool(cancel_order, order_id=o.order_id)
        return o

    async with app:
        assert app.humans is not None
        queue = app.humans.subscribe()
        handle = await app.start("drop", {"order_id": "o1"})
        request = await asyncio.wait_for(queue.get(), 10)
        await app.decide(request.id, "reject", by="alice", comment="keep it")
        result = await asyncio.wait_for(handle.result(), 10)
    assert result.status == "rejected"
    code, out, _ = await asyncio.to_thread(cli, "show", result.run_id)
    assert code == 0
    assert "human:approval:cancel_order reject by alice" in " ".join(out.split())


async def test_tokens_expire_and_remember_when_they_were_last_used(db):
    from datetime import timedelta

    store = await SqlStore.open(db)
    try:
        ops = Ops(store)
        t0 = datetime(2026, 12, 1, tzinfo=UTC)
        token, row = await ops.create_token("ci", "operator", by="t", at=t0, expires_in_s=3600)
        assert row["expires_at"] == t0 + timedelta(hours=1)
        assert await ops.authenticate(token, t0 + timedelta(minutes=59)) is not None
        assert await ops.authenticate(token, t0 + timedelta(hours=1)) is None  # expired
        [listed] = await ops.list_tokens()
        assert listed["last_used_at"] == t0 + timedelta(minutes=59)
        assert await ops.has_tokens(t0) and not await ops.has_tokens(t0 + timedelta(hours=2))
        with pytest.raises(UsageError, match="lifetime must be positive"):
            await ops.create_token("x", "viewer", by="t", at=t0, expires_in_s=0)
    finally:
        await store.close()


def test_tokens_create_takes_a_lifetime(cli):
    code, out, err = cli("tokens", "create", "bot", "--role", "viewer", "--expires", "30d")
    assert code == 0, err
    assert "expires" in out
    code, out, _ = cli("tokens", "list", "--format", "json")
    [row] = json.loads(out)
    created = datetime.fromisoformat(row["created_at"])
    expires = datetime.fromisoformat(row["expires_at"])
    assert round((expires - created).total_seconds() / 86400) == 30
    code, _, err = cli("tokens", "create", "old", "--expires", "2001-01-01")
    assert code == 2 and "in the past" in err


def test_cancel_of_no_run_is_an_error_and_stores_no_control(cli, db):
    """`corral cancel deadbeef` exited 0 and stored a control that stopped nothing."""
    seed_runs(db, "abc123-one", "abc123-two")
    code, out, err = cli("cancel", "deadbeef")
    assert code == 2 and "[not_found] no run 'deadbeef'; `corral runs` lists them" in err
    code, _, err = cli("cancel", "abc123")
    assert code == 2 and "'abc123' matches more than one run (abc123-one, abc123-two)" in err
    code, out, _ = cli("audit", "list", "--format", "json")
    assert json.loads(out) == []  # nothing was written

    code, out, err = cli("cancel", "abc123-t")
    assert code == 0, err
    assert out.startswith("halt run abc123-two (control 1")
    code, out, _ = cli("release", "--run", "abc123-t")
    assert code == 0 and out.startswith("release run abc123-two")
    code, out, _ = cli("audit", "list", "--run", "abc123-t", "--format", "json")
    assert [e["subject"] for e in json.loads(out)] == ["run:abc123-two"] * 2


def test_request_ids_as_inbox_shows_them_and_unique_prefixes_are_accepted(cli, db):
    """`corral approve` refused prefixes, and the inbox's table cut the ids it showed."""
    seed_runs(db, "run-1")
    request_id = seed_request(db)
    code, out, _ = cli("inbox")
    assert code == 0 and "run-1:2.h" in out
    code, out, err = cli("approve", "run-1:2", "--as", "bob")  # a prefix of the whole id
    assert code == 0, err
    assert out.strip() == f"approval {request_id}: approved by bob"
    code, _, err = cli("reject", "nope:2.h")
    assert code == 2 and "no human request 'nope:2.h'; `corral inbox --all` lists them" in err
    code, out, _ = cli("inbox", "--all", "--run", "run-", "--format", "json")
    assert [r["id"] for r in json.loads(out)] == [request_id]


def test_inbox_short_ids_name_a_long_run_id(cli, db):
    run_id = "0123456789abcdef" * 2
    seed_runs(db, run_id)

    async def go() -> None:
        store = await SqlStore.open(db)
        try:
            await Ops(store).open_request(
                HumanRequest(
                    id=f"{run_id}:7.h",
                    run_id=run_id,
                    step_id="7.h",
                    kind="escalation",
                    workflow="w",
                    subject="s",
                    title="t",
                    payload={},
                    created_at=datetime.now(UTC),
                )
            )
        finally:
            await store.close()

    asyncio.run(go())
    code, out, _ = cli("inbox")
    assert code == 0 and "0123456789ab:7.h" in out and run_id not in out
    code, out, err = cli("take-over", "0123456789ab:7.h", "--as", "carol")
    assert code == 0, err
    assert out.strip() == f"escalation {run_id}:7.h: taken_over by carol"


def test_tokens_revoke_takes_a_unique_prefix(cli):
    code, out, _ = cli("tokens", "create", "ci")
    token_id = out.split()[1]
    code, out, err = cli("tokens", "revoke", token_id[:5])
    assert code == 0 and out.strip() == f"token {token_id} revoked", err
    code, _, err = cli("tokens", "revoke", "zz")
    assert code == 2 and "no token 'zz'" in err


def test_an_unreadable_edit_file_is_one_clear_line_and_decides_nothing(cli, db, tmp_path):
    seed_runs(db, "run-1")
    seed_request(db)
    code, _, err = cli("approve", "run-1:2", "--edit", f"@{tmp_path}/missing.json")
    assert code == 2 and "cannot read --edit file" in err and "No such file" in err
    assert "Traceback" not in err
    code, out, _ = cli("inbox")
    assert code == 0 and "run-1:2.h" in out  # still pending


def test_cancelling_a_run_that_already_ended_stores_nothing(cli, db):
    """Each `corral cancel` of a finished run stored another halt and said it halted it."""

    async def finished() -> None:
        store = await SqlStore.open(db)
        try:
            await store.record_run(
                RunRecord(
                    run_id=RunId("done-1"),
                    workflow="pay",
                    status="succeeded",
                    durable=False,
                    started_at=datetime.now(UTC),
                    finished_at=datetime.now(UTC),
                )
            )
        finally:
            await store.close()

    asyncio.run(finished())
    code, _, err = cli("cancel", "done-1")
    assert code == 2 and "already ended (succeeded); there is nothing to cancel" in err
    code, out, _ = cli("audit", "list", "--format", "json")
    assert "operator.halt" not in out
    code, out, _ = cli("pause", "--agent", "a")
    code, out, _ = cli("unpause", "--agent", "a")
    assert code == 0 and out.startswith("unpause agent a")
