"""`corral costs`, `stats`, `alerts`, `prune` and `serve`: reading the run database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from corral._loop import run as run_loop
from corral.cli._app import ConfigOpt, DbOpt, app, open_store, read_config
from corral.cli._output import Format, _emit, console, err, safe
from corral.errors import UsageError

if TYPE_CHECKING:
    from corral.store.ops import Ops

T = TypeVar("T")


def _query(config: Path | None, db: str | None, fn: Callable[..., T], *args: object) -> T:
    """`fn(connection, *args)` on the configured database, opened read-only."""

    async def go() -> T:
        store = await open_store(read_config(config, db), read_only=True)
        try:
            result: T = await store.query(fn, *args)
            return result
        finally:
            await store.close()

    return run_loop(go())


@app.command()
def costs(
    by: Annotated[
        str, typer.Option(help="agent, workflow, user, tenant, model, tier or day")
    ] = "agent",
    since: Annotated[str, typer.Option(help="30m, 24h, 7d, 2w or an ISO date")] = "7d",
    daily: Annotated[
        int | None,
        typer.Option(help="instead: a daily report for the last N days, with the trend"),
    ] = None,
    fmt: Format = "table",
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Model spend from the cost ledger: tokens and USD by agent, workflow, user, model or day."""
    from corral.store import queries

    if daily is not None:
        if daily < 1:
            raise UsageError("--daily needs a number of days >= 1")
        rows = _query(config, db, queries.daily_report, daily)
        for r in rows:
            r["trend"] = (
                "-"
                if r["change"] is None
                else f"{'▲' if r['change'] > 0 else '▼' if r['change'] < 0 else '='} "
                f"{r['change']:+.0%}"
            )
        columns = ["day", "runs", "succeeded", "calls", "tokens", "cost_usd", "cost_per_task"]
        _emit(rows, [*columns, "trend" if fmt == "table" else "change"], fmt, "Daily cost")
        return
    if by not in queries.GROUPS:
        raise UsageError(f"cannot group costs by {by!r}; choose one of {', '.join(queries.GROUPS)}")
    start = queries.parse_since(since)
    rows = _query(config, db, queries.cost_breakdown, by, start)
    columns = ["key", "runs", "calls", "cached", "tokens_in", "tokens_out", "cost_usd"]
    title = f"Cost by {by} since {start:%Y-%m-%d %H:%M}"
    first = ["key", "runs", "calls", "cost_usd", "cost_per_run"]
    _emit(rows, [*columns, "cost_per_run"], fmt, title, first=first)
    if fmt == "table":
        total = sum((r["cost_usd"] for r in rows), Decimal(0))
        console.print(f"total ${total:.6f} over {sum(r['calls'] for r in rows)} model calls")


@app.command()
def stats(
    since: Annotated[str, typer.Option(help="30m, 24h, 7d or an ISO date")] = "24h",
    fmt: Format = "table",
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Per-agent health: success rate, latency, tokens, cost, retries, cache hits, reviews."""
    from corral.store import queries

    start = queries.parse_since(since)
    metrics = _query(config, db, queries.agent_metrics, start)
    rows = list(metrics.values())
    for r in rows:
        for key in ("success_rate", "tool_success_rate"):
            if r[key] is not None and fmt == "table":
                r[key] = f"{r[key]:.1%}"
    columns = [
        "agent",
        "calls",
        "success_rate",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "retries",
        "fallbacks",
        "repairs",
        "cache_hits",
        "secrets_redacted",
        "tool_calls",
        "tool_success_rate",
        "breaker",
        "reviews",
        "review_score",
    ]
    first = ["agent", "calls", "success_rate", "p95_ms", "cost_usd", "breaker", "retries"]
    _emit(rows, columns, fmt, f"Agents since {start:%Y-%m-%d %H:%M}", first=first)


alerts_app = typer.Typer(
    help="Anomaly, threshold and agent_stopped (error streak) alerts: list and acknowledge."
)
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def alerts_list(
    all_: Annotated[bool, typer.Option("--all", help="include acknowledged alerts")] = False,
    fmt: Format = "table",
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Alerts, newest first (unacknowledged only unless --all)."""
    from corral.store import queries

    rows = _query(config, db, lambda conn: queries.list_alerts(conn, include_acknowledged=all_))
    columns = ["id", "created_at", "kind", "agent", "metric", "value", "baseline", "message"]
    first = ["id", "agent", "metric", "message", "kind"]
    _emit(rows, [*columns, "acknowledged_by"] if all_ else columns, fmt, "Alerts", first=first)


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[int, typer.Argument(help="the alert's id (from `corral alerts list`)")],
    by: Annotated[str, typer.Option(help="who acknowledges it")] = "cli",
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Acknowledge an alert."""

    async def go() -> bool:
        store = await open_store(read_config(config, db))
        try:
            done: bool = await store.acknowledge_alert(alert_id, by, datetime.now(UTC))
            return done
        finally:
            await store.close()

    if not run_loop(go()):
        err.print(f"[red]no unacknowledged alert {alert_id}[/red] (see `corral alerts list --all`)")
        raise typer.Exit(2)
    console.print(f"alert {alert_id} acknowledged by {safe(by)}")


@app.command()
def prune(
    older_than: Annotated[
        str | None,
        typer.Option(help="age, e.g. 30d (default: the config's retention.days)"),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="count what would go, delete nothing")] = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Delete finished runs (with their spans, steps and effects) and alerts past retention."""
    from corral.store import queries

    cfg = read_config(config, db)
    cutoff = queries.parse_since(older_than or f"{cfg.retention.days}d")

    async def go() -> dict[str, int]:
        store = await open_store(cfg)
        try:
            counts: dict[str, int] = await store.prune(cutoff, dry_run=dry_run)
            return counts
        finally:
            await store.close()

    counts = run_loop(go())
    verb = "would delete" if dry_run else "deleted"
    console.print(
        f"{verb} {counts['runs']} runs, {counts['spans']} spans, {counts['steps']} steps, "
        f"{counts['effects']} effects, {counts['alerts']} alerts older than {cutoff:%Y-%m-%d %H:%M}"
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    app_ref: Annotated[
        str | None,
        typer.Option(
            "--app",
            "-a",
            help="module:attribute of an App to open in this process (adds live breaker and "
            "queue state); without it the dashboard reads the database only",
        ),
    ] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="where the first admin token goes when the output is not a terminal (file "
            "mode 0600; default: first-admin-token beside the audit key, ~/.config/corral/)"
        ),
    ] = None,
    session_hours: Annotated[
        float, typer.Option(help="how long a dashboard login lasts", min=0.01, max=24 * 365)
    ] = 12,
) -> None:
    """Serve the dashboard, its JSON API (/api/...) and Prometheus metrics (/metrics).

    Every page and endpoint needs an API token (`corral tokens create NAME --role ROLE`); on a
    database without tokens, an admin token is created once: shown if the output is a terminal,
    otherwise written to --token-file (mode 0600) and never printed into a log. Logging in at
    /login gives the browser a session cookie (not the token) that lasts --session-hours and ends
    at logout or when the token is revoked; 5 failed logins a minute from one address are refused
    (429) and each failure is logged. The API docs (/api/docs) and the OpenAPI spec
    (/api/openapi.json) need a token too. Prometheus scrapes /metrics with a viewer token as its
    bearer token.
    """
    import contextlib
    import sys
    from collections.abc import AsyncIterator

    import uvicorn
    from fastapi import FastAPI

    from corral.cli._token import first_admin_token
    from corral.server.dashboard import create_dashboard
    from corral.store.audit import default_key_file

    cfg = read_config(config, db)
    # Beside the audit key: a directory of the user's own (0700), not the working directory.
    key_dir = Path(cfg.audit.key_file).parent if cfg.audit.key_file else default_key_file().parent
    secret_file = token_file or key_dir / "first-admin-token"
    session_ttl_s = session_hours * 3600

    async def first_token(ops: Ops) -> None:
        # Every page and endpoint needs a token: on a database with none, make the first admin
        # token, the way Jupyter makes its login token, but keep it out of logs.
        made = await first_admin_token(
            ops, at=datetime.now(UTC), terminal=sys.stdout.isatty(), file=secret_file
        )
        if made is None:
            return
        if made.file is not None:
            console.print(
                f"corral: no API tokens existed, so an admin token was created and written to "
                f"{made.file} (mode 0600; not printed, the output is not a terminal)",
                soft_wrap=True,  # one line with the whole path, for scripts and log readers
            )
            return
        console.print(
            "corral: no API tokens existed, so an admin token was created (shown once; "
            "`corral tokens create` makes more, `corral tokens revoke` removes this one):"
        )
        console.out(made.token)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        from corral.store.ops import Ops

        if app_ref is not None:
            from corral.cli._load import load_app

            target = load_app(app_ref, cfg)
            async with target:
                assert target.ops is not None
                await first_token(target.ops)
                dashboard = create_dashboard(target.store, app=target, session_ttl_s=session_ttl_s)
                web.mount("/", dashboard)
                yield
        else:
            store = await open_store(cfg)
            try:
                ops = Ops(
                    store,
                    key_file=cfg.audit.key_file,
                    checkpoint_every=cfg.audit.checkpoint_every,
                    checkpoint_file=cfg.audit.checkpoint_file,
                )
                await first_token(ops)
                web.mount("/", create_dashboard(store, ops=ops, session_ttl_s=session_ttl_s))
                yield
            finally:
                await store.close()

    web = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    console.print(
        f"corral: dashboard at http://{host}:{port}/  (API docs at /api/docs, metrics at /metrics)"
    )
    uvicorn.run(web, host=host, port=port, log_level="warning")
