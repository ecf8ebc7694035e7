"""Operator commands: the human inbox, decisions, kill switch and pauses, the audit log, tokens.

Each opens the run database directly (no app import): a decision or a control written here is
applied by every process running the app within `humans.poll_s`.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape

from corral._loop import run as run_loop
from corral.cli._app import (
    ConfigOpt,
    DbOpt,
    app,
    open_store,
    read_config,
    read_json_text,
    resolve_id,
)
from corral.cli._output import Format, _emit, console, err, safe, short
from corral.config import AppConfig
from corral.contracts import RunId
from corral.errors import PayloadError, UsageError

if TYPE_CHECKING:
    from corral.store.ops import Control, Ops

T = TypeVar("T")

As = Annotated[str | None, typer.Option("--as", help="who is acting (recorded in the audit log)")]
Comment = Annotated[str, typer.Option("--comment", "-m", help="why (shown to the run and audited)")]
Reason = Annotated[str, typer.Option("--reason", "-m", help="why (audited)")]


def _who(actor: str | None) -> str:
    return actor or f"cli:{getpass.getuser()}"


def _with_ops(
    config: Path | None,
    db: str | None,
    fn: Callable[[Ops], Awaitable[T]],
    *,
    read_only: bool = False,
) -> T:
    """Run `fn(ops)` against the configured database (`read_only`: see `open_store`)."""

    async def go() -> T:
        cfg: AppConfig = read_config(config, db)
        store = await open_store(cfg, read_only=read_only)
        from corral.store.ops import Ops

        ops = Ops(
            store,
            key_file=cfg.audit.key_file,
            checkpoint_every=cfg.audit.checkpoint_every,
            checkpoint_file=cfg.audit.checkpoint_file,
        )
        try:
            return await fn(ops)
        finally:
            await store.close()

    return run_loop(go())


def _json_arg(text: str, option: str) -> Any:
    raw = read_json_text(text, option)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"not JSON ({exc.msg} at character {exc.pos}): {short(raw, 60)}"
        ) from exc


def _decide(
    request_id: str,
    action: str,
    value: Any,
    comment: str,
    actor: str | None,
    config: Path | None,
    db: str | None,
    *,
    patch: bool = False,
) -> None:
    who = _who(actor)

    async def decide(ops: Ops) -> dict[str, Any]:
        full_id = await resolve_id(ops.store, "request", request_id)
        return await ops.decide(
            full_id,
            action,
            by=who,
            at=datetime.now(UTC),
            value=value,
            comment=comment,
            patch=patch,
        )

    row = _with_ops(config, db, decide)
    console.print(f"{safe(row['kind'])} {safe(row['id'])}: {safe(row['status'])} by {safe(who)}")


# -- the inbox ----------------------------------------------------------------------------------


@app.command()
def inbox(
    kind: Annotated[
        str | None, typer.Option(help="approval, escalation or review (default: all)")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="decided requests too")] = False,
    run: Annotated[
        str | None, typer.Option(help="only this run's requests (id or unique prefix)")
    ] = None,
    limit: int = 50,
    fmt: Format = "table",
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Requests waiting for a human: approvals, escalations, reviews (newest first).

    The table's `id` column is the short form RUNPREFIX:STEP, accepted by `approve`, `reject`,
    `answer`, `take-over` and `review` like the whole id (csv and json have the whole id).
    """

    async def requests(ops: Ops) -> list[dict[str, Any]]:
        run_id = await resolve_id(ops.store, "run", run) if run else None
        status = None if all_ else "pending"
        found: list[dict[str, Any]] = await ops.list_requests(
            kind=kind, status=status, run_id=run_id, limit=limit
        )
        return found

    rows = _with_ops(config, db, requests, read_only=True)
    for r in rows:
        r["what"] = short(r["payload"], 70)
    if fmt == "table":
        for r in rows:
            r["id"] = f"{r['run_id'][:12]}:{r['step_id']}"
    columns = ["id", "kind", "subject", "what", "title", "workflow", "created_at", "deadline_at"]
    if all_:
        columns[2:2] = ["status", "decided_by"]
    _emit(rows, columns, fmt, "Inbox")


@app.command()
def approve(
    request_id: Annotated[
        str, typer.Argument(help="the request id, as `corral inbox` shows it, or a unique prefix")
    ],
    edit: Annotated[
        str | None,
        typer.Option(
            help="approve with changed arguments: a JSON merge patch over the proposed ones "
            "(JSON or @file.json); '{\"amount_usd\": 90}' changes one, null removes one",
        ),
    ] = None,
    comment: Comment = "",
    actor: As = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Approve a request (or approve it edited, with --edit).

    The edited arguments are the proposed ones with --edit merged over them (RFC 7386), then
    checked against the tool's schema: `--edit '{"amount_usd": 90}'` keeps every other argument.
    """
    value = _json_arg(edit, "--edit") if edit is not None else None
    action = "edit" if edit is not None else "approve"
    _decide(request_id, action, value, comment, actor, config, db, patch=True)


@app.command()
def reject(
    request_id: Annotated[
        str, typer.Argument(help="the request id, as `corral inbox` shows it, or a unique prefix")
    ],
    comment: Comment = "",
    actor: As = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Reject an approval (the tool does not run) or decline an escalation."""
    _decide(request_id, "reject", None, comment, actor, config, db)


@app.command()
def answer(
    request_id: Annotated[
        str, typer.Argument(help="the escalation's id (`corral inbox`) or a unique prefix")
    ],
    value: Annotated[str, typer.Argument(help="the agent's output, as JSON or @file.json")],
    comment: Comment = "",
    actor: As = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Answer an escalation: the answer becomes the agent's output and the run continues."""
    _decide(request_id, "answer", _json_arg(value, "VALUE"), comment, actor, config, db)


@app.command("take-over")
def take_over(
    request_id: Annotated[
        str, typer.Argument(help="the escalation's id (`corral inbox`) or a unique prefix")
    ],
    comment: Comment = "",
    actor: As = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Take an escalated run over: it ends `taken_over` and you finish the work."""
    _decide(request_id, "take_over", None, comment, actor, config, db)


@app.command()
def review(
    request_id: Annotated[
        str, typer.Argument(help="the review's id (`corral inbox`) or a unique prefix")
    ],
    score: Annotated[float, typer.Option(help="1 (bad) to 5 (excellent)")],
    label: Annotated[str | None, typer.Option(help="a category, e.g. wrong_tone")] = None,
    comment: Comment = "",
    actor: As = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Give feedback on a sampled run (shows up in `corral stats` per agent)."""
    _decide(request_id, "review", {"score": score, "label": label}, comment, actor, config, db)


# -- kill switch and pauses ---------------------------------------------------------------------


def _control(
    action: str,
    scope: str,
    name: str | None,
    reason: str,
    actor: str | None,
    config: Path | None,
    db: str | None,
) -> None:
    who = _who(actor)

    async def add(ops: Ops) -> Control:
        # A run control names a run that exists (a unique prefix is enough): a typo must not
        # store a control that stops nothing and report success.
        target = await resolve_id(ops.store, "run", name) if scope == "run" and name else name
        if action == "halt" and scope == "run" and target:
            run = await ops.store.get_run(RunId(target))
            if run is not None and run["status"] not in ("running", "pending"):
                raise UsageError(
                    f"run {target} already ended ({run['status']}); there is nothing to cancel"
                )
        return await ops.add_control(
            action, scope, target, by=who, at=datetime.now(UTC), reason=reason
        )

    control = _with_ops(config, db, add)
    target = f"{scope} {control.name}" if control.name else scope
    # The controls log's word for lifting a pause is `resume`; the command is `unpause`.
    said = "unpause" if action == "resume" else action
    console.print(f"{said} {safe(target)} (control {control.seq}, by {safe(who)})")


def _one_scope(**given: Any) -> tuple[str, str | None]:
    chosen = [(k, v) for k, v in given.items() if v]
    if len(chosen) != 1:
        options = ", ".join(f"--{k}" for k in given)
        raise UsageError(f"give exactly one of {options}")
    scope, value = chosen[0]
    return scope, value if isinstance(value, str) else None


@app.command()
def cancel(
    run_id: Annotated[str, typer.Argument(help="the run to stop: its id or a unique prefix")],
    reason: Reason = "",
    actor: As = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Cancel a run: its model call in flight is cancelled and it ends `killed`."""
    _control("halt", "run", run_id, reason, actor, config, db)


@app.command()
def pause(
    agent: Annotated[str | None, typer.Option(help="hold every call of this agent")] = None,
    workflow: Annotated[str | None, typer.Option(help="hold every run of this workflow")] = None,
    noncritical: Annotated[
        bool, typer.Option(help="hold every run whose priority is not critical")
    ] = False,
    reason: Reason = "",
    actor: As = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Pause an agent, a workflow or all non-critical work (runs wait at their next step)."""
    scope, name = _one_scope(agent=agent, workflow=workflow, noncritical=noncritical)
    _control("pause", scope, name, reason, actor, config, db)


@app.command()
def unpause(
    agent: Annotated[str | None, typer.Option(help="the paused agent")] = None,
    workflow: Annotated[str | None, typer.Option(help="the paused workflow")] = None,
    noncritical: Annotated[bool, typer.Option(help="non-critical work")] = False,
    reason: Reason = "",
    actor: As = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Lift a pause: held runs continue."""
    scope, name = _one_scope(agent=agent, workflow=workflow, noncritical=noncritical)
    _control("resume", scope, name, reason, actor, config, db)


@app.command()
def halt(
    agent: Annotated[str | None, typer.Option(help="stop every call of this agent")] = None,
    all_: Annotated[bool, typer.Option("--all", help="stop everything")] = False,
    reason: Reason = "",
    actor: As = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """The kill switch: stop an agent in every run, or everything (`release` lifts it)."""
    scope, name = _one_scope(agent=agent, all=all_)
    _control("halt", scope, name, reason, actor, config, db)


@app.command()
def release(
    agent: Annotated[str | None, typer.Option(help="the halted agent")] = None,
    run: Annotated[str | None, typer.Option(help="the cancelled run (id or unique prefix)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="lift the global halt")] = False,
    reason: Reason = "",
    actor: As = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Lift a halt."""
    scope, name = _one_scope(agent=agent, run=run, all=all_)
    _control("release", scope, name, reason, actor, config, db)


# -- audit --------------------------------------------------------------------------------------

audit_app = typer.Typer(help="The tamper-evident audit log: list, verify, checkpoint, export.")
app.add_typer(audit_app, name="audit")


@audit_app.command("list")
def audit_list(
    run: Annotated[
        str | None, typer.Option(help="only this run's entries (id or unique prefix)")
    ] = None,
    action: Annotated[str | None, typer.Option(help="e.g. tool.call, human.approve")] = None,
    limit: int = 50,
    fmt: Format = "table",
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Audit entries, newest first."""

    async def entries(ops: Ops) -> list[dict[str, Any]]:
        run_id = await resolve_id(ops.store, "run", run) if run else None
        found: list[dict[str, Any]] = await ops.audit_entries(
            run_id=run_id, action=action, limit=limit
        )
        return found

    rows = _with_ops(config, db, entries, read_only=True)
    for r in rows:
        r["what"] = short(r["details"], 80)
    columns = ["seq", "at", "actor", "action", "subject", "what", "run_id"]
    _emit(rows, columns, fmt, "Audit log")


@audit_app.command("verify")
def audit_verify(
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            help="also check against checkpoints exported earlier (`corral audit export`); the "
            "configured checkpoint file (audit.checkpoint_file) is always read"
        ),
    ] = None,
    public_key: Annotated[
        list[str] | None,
        typer.Option(
            help="trust only this signing key (hex; repeatable); default: the key file's and "
            "those the checkpoint files name"
        ),
    ] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Check every entry's hash, the links between entries and the signed checkpoints.

    Reads the checkpoints in the database and in the checkpoint file kept outside it
    (audit.checkpoint_file). Exit code 1 and one line per problem when the log was edited, entries
    were inserted or deleted, a checkpoint does not match, no checkpoint file can be found, the
    newest entries are not covered by a signed checkpoint, or no trusted key can be found. Never
    creates a key.
    """
    from corral.store.audit import read_checkpoint_file

    exported: list[dict[str, Any]] = []
    named: set[str] = set()
    if checkpoints is not None:
        exported, named = read_checkpoint_file(checkpoints)
    keys = set(public_key) if public_key else None

    async def verify(ops: Ops) -> tuple[int, list[Any], Path]:
        count, problems = await ops.verify(exported=exported, trusted_keys=keys, also_trust=named)
        return count, problems, await asyncio.to_thread(lambda: ops.log.checkpoint_file)

    count, problems, where = _with_ops(config, db, verify, read_only=True)
    if problems:
        for p in problems:
            err.print(f"[red]{p.kind}[/red] {escape(p.message)}")
        err.print(f"[red]audit log FAILED verification[/red]: {len(problems)} problem(s)")
        raise typer.Exit(1)
    console.print(
        f"audit log OK: {count} entries, chain intact, head signed "
        f"(checkpoints from the database and {escape(str(where))})"
    )


@audit_app.command("checkpoint")
def audit_checkpoint(config: ConfigOpt = None, db: DbOpt = None) -> None:
    """Sign the current head of the chain now."""
    point = _with_ops(config, db, lambda ops: ops.checkpoint(datetime.now(UTC)))
    if point is None:
        console.print("the audit log is empty: nothing to sign")
        return
    console.print(f"checkpoint at entry {point['seq']}: {point['hash'][:16]}…")


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Argument(help="file to write (keep it off the database host)")],
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Write the signed checkpoints and the public key as JSON lines, for `verify --checkpoints`
    (a copy to keep elsewhere: every checkpoint is already appended to audit.checkpoint_file)."""

    async def collect(ops: Ops) -> tuple[str, list[dict[str, Any]]]:
        await ops.checkpoint(datetime.now(UTC))
        return ops.signer.public_key, await ops.checkpoints()

    key, points = _with_ops(config, db, collect)
    lines = [json.dumps({"public_key": key})] + [json.dumps(p) for p in points]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    console.print(f"{len(points)} checkpoints written to {out} (public key {key[:16]}…)")


# -- tokens -------------------------------------------------------------------------------------

tokens_app = typer.Typer(help="API tokens for the HTTP API and the dashboard.")
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="who or what uses it")],
    role: Annotated[str, typer.Option(help="viewer, operator or admin")] = "viewer",
    expires: Annotated[
        str | None,
        typer.Option(help="lifetime (12h, 30d, 2w) or an ISO date (default: until revoked)"),
    ] = None,
    actor: As = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Create a token; it is shown once (only its hash is stored)."""
    from corral.store.queries import parse_since

    who = _who(actor)
    now = datetime.now(UTC)
    lifetime: float | None = None
    if expires:
        target = parse_since(expires, now)  # `30d` means 30 days back; an ISO date is a date
        lifetime = (now - target if target < now else target - now).total_seconds()
        if expires[:1].isdigit() and "-" in expires and target < now:
            raise UsageError(f"--expires {expires} is in the past")
    token, row = _with_ops(
        config,
        db,
        lambda ops: ops.create_token(name, role, by=who, at=now, expires_in_s=lifetime),
    )
    until = f", expires {row['expires_at']:%Y-%m-%d %H:%M} UTC" if row["expires_at"] else ""
    console.print(
        f"token {row['id']} for {safe(name)} ({safe(role)}{until}); store it now, it is not "
        "shown again:"
    )
    console.out(token)


@tokens_app.command("list")
def tokens_list(fmt: Format = "table", config: ConfigOpt = None, db: DbOpt = None) -> None:
    """Tokens (never the secret), newest first."""
    rows = _with_ops(config, db, lambda ops: ops.list_tokens(), read_only=True)
    columns = ["id", "name", "role", "created_at", "created_by", "expires_at", "last_used_at"]
    first = ["id", "name", "role", "expires_at", "revoked_at"]
    _emit(rows, [*columns, "revoked_at"], fmt, "Tokens", first=first)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[
        str, typer.Argument(help="the token's id (from `corral tokens list`) or a unique prefix")
    ],
    actor: As = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    who = _who(actor)

    async def revoke(ops: Ops) -> str:
        full_id = await resolve_id(ops.store, "token", token_id)
        await ops.revoke_token(full_id, by=who, at=datetime.now(UTC))
        return full_id

    console.print(f"token {safe(_with_ops(config, db, revoke))} revoked")
