"""Run the support desk over the shipped tickets.

python -m examples.support_desk                # local model, first 6 tickets
python -m examples.support_desk --all --model sim
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import shlex
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from examples.support_desk.app import Ticket, build_app, load_tickets
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from corral import AppConfig, CorralError
from corral import run as run_loop
from corral.app import RunResult

MODELS = {"sim": "sim:small", "local": "local:smollm2"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.support_desk",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="local",
        help="model behind every agent (default: local, SmolLM2-135M via llama.cpp)",
    )
    parser.add_argument("--all", action="store_true", help="process every shipped ticket")
    parser.add_argument(
        "--limit", type=int, default=6, help="tickets to process without --all (default 6)"
    )
    parser.add_argument("--tickets", type=Path, help="a JSONL file of {id, text} tickets")
    parser.add_argument(
        "--out", type=Path, default=Path("support_desk_results.jsonl"), help="results file"
    )
    parser.add_argument("--db", default="sqlite:///.corral/corral.db", help="database URL")
    parser.add_argument("--ephemeral", action="store_true", help="no journal (durable=False)")
    parser.add_argument(
        "--inbox",
        action="store_true",
        help="send escalations to the human inbox and wait for the replies (answer them with "
        "`corral inbox` / `corral answer ID JSON`, or on the dashboard: `corral serve`)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="tickets in flight (default: 8 on sim, 1 on local)",
    )
    return parser.parse_args(argv)


async def process(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    tickets = load_tickets(args.tickets)
    if not args.all:
        tickets = tickets[: args.limit]
    model = MODELS[args.model]
    config = AppConfig(
        database=args.db,
        tiers={"small": model, "medium": model, "large": model},
        durable=not args.ephemeral,
    )
    app = build_app(config)
    seen: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    # In inbox mode an escalated ticket waits for a person; it must not hold a slot meanwhile.
    default = len(tickets) if args.inbox else (8 if args.model == "sim" else 1)
    limit = asyncio.Semaphore(args.concurrency or default)
    workflow = "support_inbox" if args.inbox else "support"
    if args.inbox:
        console.print(
            "escalations wait in the human inbox: `corral inbox --db "
            f'{args.db}` lists them, `corral answer ID \'{{"reply": "..."}}\'` replies, or '
            "answer them on the dashboard (`corral serve`)"
        )

    async with app:

        async def one(ticket: Ticket) -> None:
            digest = hashlib.sha256(" ".join(ticket.text.lower().split()).encode()).hexdigest()
            if digest in seen and ticket.text.strip():
                rows.append(
                    {
                        "ticket_id": ticket.id,
                        "outcome": "duplicate",
                        "reason": f"same as {seen[digest]}",
                        "run_id": None,
                        "status": "skipped",
                        "spans": [],
                    }
                )
                progress.advance(task)
                return
            seen.setdefault(digest, ticket.id)
            async with limit:
                result: RunResult[Any] = await app.run(
                    workflow, ticket, tags=["support-desk", args.model]
                )
            spans = await app.spans(result.run_id)
            out = result.output.model_dump() if result.output else {}
            rows.append(
                {
                    "ticket_id": ticket.id,
                    "run_id": result.run_id,
                    "status": result.status,
                    "outcome": out.get("outcome", "failed"),
                    "category": out.get("category"),
                    "reason": out.get("reason") or (result.error or {}).get("message"),
                    "reply": out.get("reply"),
                    "calls": result.usage.calls,
                    "tokens": result.usage.input_tokens + result.usage.output_tokens,
                    "cost_usd": str(result.cost_usd),
                    "duration_s": round(result.duration_s, 3),
                    "spans": spans,
                }
            )
            progress.advance(task)

        with Progress(
            TextColumn("[bold]support desk"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task("tickets", total=len(tickets))
            await asyncio.gather(*(one(t) for t in tickets))

    order = {t.id: i for i, t in enumerate(tickets)}
    rows.sort(key=lambda r: order[r["ticket_id"]])
    with args.out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(
                json.dumps({k: v for k, v in row.items() if k != "spans"}, ensure_ascii=False)
                + "\n"
            )
    return {"rows": rows, "model": model, "db": args.db}


def report(summary: dict[str, Any], console: Console, out: Path) -> None:
    rows = summary["rows"]
    tickets = Table(title=f"Tickets ({summary['model']})")
    for col in ("ticket", "outcome", "category", "calls", "cost $", "reason / reply"):
        tickets.add_column(col)
    for r in rows:
        text = r.get("reply") or r.get("reason") or ""
        tickets.add_row(
            r["ticket_id"],
            r["outcome"],
            r.get("category") or "-",
            str(r.get("calls", 0)),
            r.get("cost_usd", "0"),
            (text[:70] + "…") if len(text) > 70 else text,
        )
    console.print(tickets)

    agents: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"calls": 0, "tokens": 0, "cost": Decimal(0), "latency": [], "failures": 0}
    )
    repairs = invalid_args = 0
    for r in rows:
        for s in r["spans"]:
            if s["kind"] == "model":
                a = agents[s["agent"]]
                a["calls"] += 1
                a["tokens"] += s["tokens_in"] + s["tokens_out"]
                a["cost"] += s["cost_usd"]
                a["latency"].append(s["latency_ms"])
                a["failures"] += s["status"] != "ok"
            if s["kind"] == "agent" and s["status"] != "ok":
                agents[s["agent"]]["failures"] += 0
            if s["kind"] == "tool" and s["status"] == "invalid_args":
                invalid_args += 1
        model_calls = [s for s in r["spans"] if s["kind"] == "model"]
        per_agent = defaultdict(int)
        for s in model_calls:
            per_agent[s["agent"]] += 1
        repairs += sum(n - 1 for n in per_agent.values() if n > 1)
    table = Table(title="Per agent")
    for col in ("agent", "model calls", "tokens", "cost $", "p50 latency ms", "failed calls"):
        table.add_column(col)
    for name, a in sorted(agents.items()):
        lat = sorted(a["latency"])
        table.add_row(
            name,
            str(a["calls"]),
            str(a["tokens"]),
            f"{a['cost']:.6f}",
            f"{lat[len(lat) // 2]:.0f}" if lat else "-",
            str(a["failures"]),
        )
    console.print(table)
    outcomes: dict[str, int] = defaultdict(int)
    for r in rows:
        outcomes[r["outcome"]] += 1
    total_cost = sum((Decimal(r.get("cost_usd", "0")) for r in rows), Decimal(0))
    console.print(
        f"outcomes: {dict(outcomes)}  repairs: {repairs}  invalid tool calls: {invalid_args}  "
        f"failed runs: {sum(r['status'] == 'failed' for r in rows)}  total cost: ${total_cost:.6f}"
    )
    console.print(f"results written to {out}")
    # The exact command to copy: a real run (a failed or escalated one when there is one).
    ran = [r for r in rows if r["run_id"]]
    if ran:
        pick = next((r for r in ran if r["status"] != "succeeded"), ran[0])
        command = shlex.join(["corral", "show", pick["run_id"][:12], "--db", summary["db"]])
        console.print(f"inspect ticket {pick['ticket_id']}'s run with:", highlight=False)
        console.print(f"  {escape(command)}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    logging.basicConfig(level=logging.ERROR)
    try:
        summary = run_loop(process(args, console))
    except CorralError as exc:
        console.print(f"[red]error[/red] {exc.code}: {exc}")
        return 2
    finally:
        from corral.engine.dbos import shutdown

        shutdown()
    report(summary, console, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
