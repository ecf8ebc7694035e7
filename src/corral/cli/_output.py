"""Printing rows as a Rich table, CSV or JSON (shared by the CLI's reading commands)."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from corral.errors import UsageError

Format = Annotated[str, typer.Option("--format", "-f", help="table, csv or json")]

console = Console()
err = Console(stderr=True)


def short(value: Any, width: int = 80) -> str:
    """`value` (JSON unless text) on one line, cut to `width` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _emit(rows: list[dict[str, Any]], columns: list[str], fmt: str, title: str) -> None:
    if fmt == "json":
        console.print_json(json.dumps(rows, default=str))
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _plain(r.get(k)) for k in columns} for r in rows)
        console.out(out.getvalue(), end="")
    elif fmt == "table":
        table = Table(title=title)
        for col in columns:
            table.add_column(col, no_wrap=col in ("key", "day", "agent"))
        for r in rows:
            table.add_row(*(_cell(r.get(c)) for c in columns))
        console.print(table)
    else:
        raise UsageError(f"unknown format {fmt!r}; use table, csv or json")


def _plain(value: Any) -> Any:
    return "" if value is None else value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return f"{value:.6f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
