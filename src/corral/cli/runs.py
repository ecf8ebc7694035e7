"""`corral run`, `runs`, `show` and `resume`: running workflows and reading their runs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.tree import Tree

from corral._loop import run as run_loop
from corral.cli._app import (
    ConfigOpt,
    DbOpt,
    ExecutorOpt,
    app,
    open_store,
    read_config,
    read_json_text,
    resolve_id,
)
from corral.cli._output import Format, _emit, console, safe, short
from corral.contracts import RunId
from corral.errors import UsageError


@app.command()
def run(
    workflow: Annotated[str, typer.Argument(help="registered workflow name")],
    app_ref: Annotated[
        str, typer.Option("--app", "-a", help="module:attribute of the App (or a factory)")
    ],
    input: Annotated[
        str, typer.Option("--input", "-i", help="JSON payload, or @ and a file: @payload.json")
    ] = "{}",
    user: Annotated[str | None, typer.Option(help="user the run is for")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="label (repeatable)")] = None,
    ephemeral: Annotated[
        bool, typer.Option(help="run without a journal (default: the config's `durable`)")
    ] = False,
    priority: Annotated[
        str, typer.Option(help="critical, interactive or batch (rate limiter and daily limits)")
    ] = "interactive",
    tenant: Annotated[str | None, typer.Option(help="tenant billed (daily limits, costs)")] = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    executor_id: ExecutorOpt = None,
) -> None:
    """Run WORKFLOW once and print its result as JSON."""
    from corral.cli._load import load_app

    payload = read_json_text(input, "--input")
    cfg = read_config(config, db, executor_id)
    target = load_app(app_ref, cfg)

    async def go() -> Any:
        async with target:
            return await target.run(
                workflow,
                payload,
                user=user,
                tenant=tenant,
                tags=tag or (),
                durable=False if ephemeral else None,
                priority=priority,  # type: ignore[arg-type]  # checked by App.run
            )

    result = run_loop(go())
    output = result.output.model_dump(mode="json") if result.output is not None else None
    console.print_json(
        json.dumps(
            {
                "run_id": result.run_id,
                "status": result.status,
                "output": output,
                "error": result.error,
                "usage": result.usage.to_dict(),
            }
        )
    )
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def runs(
    limit: Annotated[int, typer.Option(help="how many")] = 20,
    status: Annotated[str | None, typer.Option(help="only runs with this status")] = None,
    fmt: Format = "table",
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """List recent runs: status, cost, tokens, duration.

    The table shows the first 12 characters of each run id (enough for `corral show`, `cancel`
    and every command taking a run id) and the columns that fit the terminal; `--format csv`
    or `json` give whole ids and every column.
    """

    async def go() -> list[dict[str, Any]]:
        store = await open_store(read_config(config, db), read_only=True)
        try:
            rows: list[dict[str, Any]] = await store.list_runs(limit, status)
            return rows
        finally:
            await store.close()

    found = run_loop(go())
    rows = [
        {
            "run_id": r["run_id"][:12] if fmt == "table" else r["run_id"],
            "workflow": r["workflow"],
            "status": r["status"],
            "cost_usd": r["cost_usd"],
            "started_at": r["started_at"],
            "duration_s": (r["finished_at"] - r["started_at"]).total_seconds()
            if r["finished_at"]
            else None,
            "calls": r["calls"],
            "tokens": r["tokens_in"] + r["tokens_out"],
            "user": r["user_id"],
            "tenant": r["tenant"],
        }
        for r in found
    ]
    # Most important first: the table drops columns from the end to fit the terminal.
    columns = ["run_id", "workflow", "status", "cost_usd", "started_at", "duration_s", "calls"]
    _emit(rows, [*columns, "tokens", "user", "tenant"], fmt, "Recent runs")


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="run id or a unique prefix")],
    width: Annotated[
        int, typer.Option(help="truncate inputs/outputs to this many characters")
    ] = 80,
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", help="tree, or json (the run and its spans, whole)"),
    ] = "tree",
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Show a run's steps as a tree: agent, input/output, tokens, cost, latency, errors."""
    if fmt not in ("tree", "json"):
        raise UsageError(f"unknown format {fmt!r}; use tree or json")

    async def go() -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        store = await open_store(read_config(config, db), read_only=True)
        try:
            full_id = RunId(await resolve_id(store, "run", run_id))
            return await store.get_run(full_id), await store.list_spans(full_id)
        finally:
            await store.close()

    found, spans = run_loop(go())
    if found is None:  # deleted between the two reads
        raise UsageError(f"run {run_id!r} was just deleted (by `corral prune`?)")
    if fmt == "json":
        console.print_json(json.dumps({"run": found, "spans": spans}, default=str))
        return
    # Names, ids and statuses come from models and callers: every one goes through `safe`.
    root = Tree(
        f"[bold]{safe(found['workflow'])}[/bold] {safe(found['run_id'])}  "
        f"status={safe(found['status'])}  calls={found['calls']} "
        f"tokens={found['tokens_in'] + found['tokens_out']} cost=${found['cost_usd']:.6f}"
    )
    root.add(f"input: {safe(short(found['input'], width))}")
    nodes: dict[str, Any] = {}
    for s in spans:
        parent = nodes.get(s["parent_id"] or "", root)
        if s["kind"] == "guard":
            # A guard decision: one line, highlighted (retry, fallback, breaker, degrade, ...).
            colour = "red" if s["status"] == "alert" else "magenta"
            nodes[s["step_id"]] = parent.add(
                f"[{colour}]guard:{safe(s['name'])}[/{colour}] {safe(short(s['output'], width))}"
            )
            continue
        if s["kind"] == "human":
            # A human wait: who decided what, and how long the run waited.
            a = s.get("attrs") or {}
            nodes[s["step_id"]] = parent.add(
                f"[cyan]{safe(s['step_id'])} human:{safe(s['name'])}[/cyan] "
                f"{safe(a.get('action') or 'waiting')} by {safe(a.get('by') or '-')}"
                f"{' (timed out)' if a.get('timed_out') else ''} after "
                f"{s['latency_ms'] / 1000:.1f}s  request {safe(a.get('request_id'))}"
            )
            continue
        colour = (
            "green"
            if s["status"] == "ok"
            else "yellow"
            if s["status"] == "replayed_effect"
            else "red"
        )
        label = (
            f"[{colour}]{safe(s['step_id'])} {safe(s['kind'])}:{safe(s['name'])}[/{colour}] "
            f"{safe(s['model'] or '')} tok={s['tokens_in']}/{s['tokens_out']} "
            f"${s['cost_usd']:.6f} {s['latency_ms']:.0f}ms {safe(s['status'])}"
        )
        node = parent.add(label)
        if s["error"]:
            node.add(f"[red]error: {safe(short(s['error'], width))}[/red]")
        else:
            node.add(f"in:  {safe(short(s['input'], width))}")
            node.add(f"out: {safe(short(s['output'], width))}")
        nodes[s["step_id"]] = node
    if found["error"]:
        root.add(f"[red]error: {safe(short(found['error'], width * 2))}[/red]")
    if found["output"] is not None:
        label = "output" if found["status"] == "succeeded" else "best result so far"
        root.add(f"{label}: {safe(short(found['output'], width * 2))}")
    console.print(root)


@app.command()
def resume(
    app_ref: Annotated[
        str, typer.Option("--app", "-a", help="module:attribute of the App (or a factory)")
    ],
    config: ConfigOpt = None,
    db: DbOpt = None,
    executor_id: ExecutorOpt = None,
) -> None:
    """Resume runs interrupted by a crash and wait for them to finish (the runs of this
    executor id; refused while a live process holds the id)."""
    from corral.cli._load import load_app

    target = load_app(app_ref, read_config(config, db, executor_id))

    async def go() -> Any:
        async with target:
            return await target.resume()

    results = run_loop(go())
    if not results:
        console.print("no interrupted runs")
    for r in results:
        console.print(f"{safe(r.run_id)}  {safe(r.workflow)}  {r.status}  ${r.cost_usd:.6f}")
