"""`corral run`, `runs`, `show` and `resume`: running workflows and reading their runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from corral._loop import run as run_loop
from corral.cli._app import ConfigOpt, DbOpt, ExecutorOpt, app, open_store, read_config
from corral.cli._output import console, err, short
from corral.contracts import RunId


@app.command()
def run(
    workflow: Annotated[str, typer.Argument(help="registered workflow name")],
    app_ref: Annotated[
        str, typer.Option("--app", "-a", help="module:attribute of the App (or a factory)")
    ],
    input: Annotated[str, typer.Option("--input", "-i", help="JSON payload, or @file.json")] = "{}",
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

    payload = Path(input[1:]).read_text(encoding="utf-8") if input.startswith("@") else input
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
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """List recent runs: status, cost, tokens, duration."""

    async def go() -> list[dict[str, Any]]:
        store = await open_store(read_config(config, db))
        try:
            rows: list[dict[str, Any]] = await store.list_runs(limit, status)
            return rows
        finally:
            await store.close()

    rows = run_loop(go())
    table = Table(title="Recent runs")
    # The run id is what a reader copies into `corral show`: never wrapped or cut.
    table.add_column("run id", no_wrap=True, min_width=12)
    for col in ("workflow", "status", "calls", "tokens", "cost $", "duration s", "started"):
        table.add_column(col)
    for r in rows:
        duration = (
            (r["finished_at"] - r["started_at"]).total_seconds() if r["finished_at"] else None
        )
        table.add_row(
            r["run_id"][:12],
            r["workflow"],
            r["status"],
            str(r["calls"]),
            str(r["tokens_in"] + r["tokens_out"]),
            f"{r['cost_usd']:.6f}",
            f"{duration:.2f}" if duration is not None else "-",
            r["started_at"].strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="run id or a unique prefix")],
    width: Annotated[
        int, typer.Option(help="truncate inputs/outputs to this many characters")
    ] = 80,
    config: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Show a run's steps as a tree: agent, input/output, tokens, cost, latency, errors."""

    async def go() -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        store = await open_store(read_config(config, db))
        try:
            found = await store.get_run(RunId(run_id))
            return found, (await store.list_spans(found["run_id"]) if found else [])
        finally:
            await store.close()

    found, spans = run_loop(go())
    if found is None:
        err.print(
            f"[red]no run matches {escape(repr(run_id))}[/red] (use `corral runs` to list them)"
        )
        raise typer.Exit(2)
    root = Tree(
        f"[bold]{found['workflow']}[/bold] {found['run_id']}  status={found['status']}  "
        f"calls={found['calls']} tokens={found['tokens_in'] + found['tokens_out']} "
        f"cost=${found['cost_usd']:.6f}"
    )
    root.add(f"input: {escape(short(found['input'], width))}")
    nodes: dict[str, Any] = {}
    for s in spans:
        parent = nodes.get(s["parent_id"] or "", root)
        if s["kind"] == "guard":
            # A guard decision: one line, highlighted (retry, fallback, breaker, degrade, ...).
            colour = "red" if s["status"] == "alert" else "magenta"
            nodes[s["step_id"]] = parent.add(
                f"[{colour}]guard:{s['name']}[/{colour}] {escape(short(s['output'], width))}"
            )
            continue
        if s["kind"] == "human":
            # A human wait: who decided what, and how long the run waited.
            a = s.get("attrs") or {}
            nodes[s["step_id"]] = parent.add(
                f"[cyan]{s['step_id']} human:{s['name']}[/cyan] {a.get('action') or 'waiting'}"
                f" by {a.get('by') or '-'}{' (timed out)' if a.get('timed_out') else ''} after "
                f"{s['latency_ms'] / 1000:.1f}s  request {a.get('request_id')}"
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
            f"[{colour}]{s['step_id']} {s['kind']}:{s['name']}[/{colour}] "
            f"{s['model'] or ''} tok={s['tokens_in']}/{s['tokens_out']} ${s['cost_usd']:.6f} "
            f"{s['latency_ms']:.0f}ms {s['status']}"
        )
        node = parent.add(label)
        if s["error"]:
            node.add(f"[red]error: {escape(short(s['error'], width))}[/red]")
        else:
            node.add(f"in:  {escape(short(s['input'], width))}")
            node.add(f"out: {escape(short(s['output'], width))}")
        nodes[s["step_id"]] = node
    if found["error"]:
        root.add(f"[red]error: {escape(short(found['error'], width * 2))}[/red]")
    if found["output"] is not None:
        label = "output" if found["status"] == "succeeded" else "best result so far"
        root.add(f"{label}: {escape(short(found['output'], width * 2))}")
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
        console.print(f"{r.run_id}  {r.workflow}  {r.status}  ${r.cost_usd:.6f}")
