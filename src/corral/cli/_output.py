"""Printing rows as a Rich table, CSV or JSON (shared by the CLI's reading commands), and making
stored data safe to print.

Everything the CLI prints from the database was written by someone else: a model invents tool
names, users pick their own ids, payloads carry whatever a caller sent. Printed raw, `[/green]`
crashes Rich's markup parser, `[link=...]` becomes a hyperlink, and an ESC or C1 byte starts a
terminal escape sequence (OSC 8 links, title changes, cursor moves that hide lines). So every
value goes through `clean` (control characters out) and is printed as plain `Text` or escaped
(`safe`) before it meets markup.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from corral.errors import UsageError

Format = Annotated[
    str,
    typer.Option(
        "--format", "-f", help="table (fits the terminal's width), csv or json (every column)"
    ),
]

console = Console()
err = Console(stderr=True)

# C0 controls but tab and newline, DEL, C1 controls (0x9b is CSI, 0x9d OSC on their own), and
# the bidirectional overrides that make a terminal show text in another order than it is stored.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SPACE = re.compile(r"[\t\n]")


def clean(text: str) -> str:
    """`text` without the characters a terminal interprets (ESC, other C0 and C1 controls,
    bidirectional overrides); tabs and newlines stay."""
    return _CONTROL.sub("", text)


def safe(value: Any) -> str:
    """`value` as text for a Rich markup string: controls removed, markup escaped."""
    return escape(clean(value if isinstance(value, str) else str(value)))


def short(value: Any, width: int = 80) -> str:
    """`value` (JSON unless text) on one line, cut to `width` characters, controls removed."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = _SPACE.sub(" ", clean(text))
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True, slots=True)
class _Fit:
    columns: list[str]
    widths: dict[str, int]
    hidden: list[str]


# A cell past this many characters is cut in a table (csv and json keep it whole).
_MAX_CELL = 40
# Per column: one space of padding each side and one border.
_COLUMN_EDGES = 3


def _fit(cells: dict[str, list[str]], columns: Sequence[str], width: int) -> _Fit:
    """The columns that fit `width`, in order of importance (the order given): each as wide as
    its widest cell (up to `_MAX_CELL`); the last one shown may be narrowed to fit."""
    shown: list[str] = []
    widths: dict[str, int] = {}
    used = 1  # the table's left border
    for col in columns:
        natural = min(max((len(c) for c in cells[col]), default=0), _MAX_CELL)
        need = max(natural, len(col)) + _COLUMN_EDGES
        if used + need > width:
            room = width - used - _COLUMN_EDGES
            if room >= max(len(col), 8):  # narrowed (cells cut with …) rather than hidden
                shown.append(col)
                widths[col] = room
            return _Fit(shown, widths, [c for c in columns if c not in widths])
        shown.append(col)
        widths[col] = need - _COLUMN_EDGES
        used += need
    return _Fit(shown, widths, [])


def _emit(
    rows: list[dict[str, Any]],
    columns: list[str],
    fmt: str,
    title: str,
    *,
    first: Sequence[str] = (),
) -> None:
    """Print `rows` as `fmt`. A table shows the `columns` that fit the terminal, chosen in order
    of importance (those in `first`, then the others in order; shown in `columns` order), and
    names the others in its caption; csv and json have every column."""
    if fmt == "json":
        console.print_json(json.dumps(rows, default=str))
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _plain(r.get(k)) for k in columns} for r in rows)
        console.out(clean(out.getvalue()), end="", highlight=False)
    elif fmt == "table":
        cells = {c: [_cell(r.get(c)) for r in rows] for c in columns}
        ranked = [*first, *(c for c in columns if c not in first)]
        fit = _fit(cells, ranked, console.width)
        caption = (
            f"not shown (too narrow): {', '.join(fit.hidden)}; see --format csv or json"
            if fit.hidden
            else None
        )
        table = Table(title=clean(title), caption=caption, caption_justify="left")
        shown = [c for c in columns if c in fit.widths]
        for col in shown:
            table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=fit.widths[col])
        for i in range(len(rows)):
            table.add_row(*(Text(cells[c][i]) for c in shown))
        console.print(table)
    else:
        raise UsageError(f"unknown format {fmt!r}; use table, csv or json")


def _plain(value: Any) -> Any:
    if value is None:
        return ""
    return clean(value) if isinstance(value, str) else value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return f"{value:.6f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, dict | list):
        return short(value, 10_000)
    return short(str(value), 10_000)
