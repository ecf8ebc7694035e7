"""What the CLI prints from the database: controls removed, markup inert, tables that fit."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rich.console import Console

from corral.cli import _output
from corral.cli._output import _emit, _fit, clean, safe, short

HOSTILE = [
    pytest.param(
        "\x1b]8;;https://evil.example\x07click\x1b]8;;\x07",
        "]8;;https://evil.exampleclick]8;;",
        id="osc-8-link",
    ),
    pytest.param("\x1b[2J\x1b[Hgone", "[2J[Hgone", id="csi-clear-screen"),
    pytest.param("a\x9b31mb\x9dc", "a31mbc", id="c1-csi-and-osc"),
    pytest.param("x\rover\x08\x7fy", "xovery", id="carriage-return-backspace-del"),
    pytest.param("admin\u202e)txt.exe", "admin)txt.exe", id="bidi-override"),
    pytest.param("two\nlines\tand tab", "two\nlines\tand tab", id="newline-and-tab-stay"),
]


@pytest.mark.parametrize(("raw", "cleaned"), HOSTILE)
def test_clean_removes_what_a_terminal_would_interpret(raw, cleaned):
    assert clean(raw) == cleaned


def test_safe_text_prints_literally_inside_markup():
    console = Console(record=True, width=200, color_system=None)
    for name in ("[/green]", "[link=https://evil.example]x[/link]", "[/bold]mallory", "\x1b[31m"):
        console.print(f"[bold]tool[/bold] {safe(name)}")
    text = console.export_text()
    assert "tool [/green]" in text and "tool [/bold]mallory" in text
    assert "tool [link=https://evil.example]x[/link]" in text and "\x1b" not in text


def test_short_is_one_line_without_controls():
    assert short("a\nb\x1b[0m", 80) == "a b[0m"
    assert short({"k": "v" * 100}, 10) == '{"k": "vv…'


def test_columns_are_kept_in_order_while_they_fit_and_the_rest_are_named():
    cells = {"id": ["x" * 12], "name": ["y" * 30], "what": ["z" * 60], "more": ["w"]}
    fit = _fit(cells, ["id", "name", "what", "more"], 80)
    # 1 + (12+3) + (30+3) = 49 used; "what" is narrowed to the 28 left, "more" is hidden.
    assert fit.columns == ["id", "name", "what"] and fit.widths["what"] == 80 - 49 - 3
    assert fit.hidden == ["more"]
    assert _fit(cells, ["id", "name"], 80).hidden == []


@pytest.mark.parametrize("width", [80, 60, 120])
def test_a_table_never_overflows_the_terminal(monkeypatch, capsys, width):
    monkeypatch.setattr(_output.console, "width", width)
    rows = [
        {
            "run_id": "0123456789ab",
            "workflow": "support_desk_triage",
            "status": "succeeded",
            "cost_usd": Decimal("0.012345"),
            "started_at": datetime(2026, 12, 7, 20, 1, 2, tzinfo=UTC),
            "duration_s": 12.5,
            "calls": 7,
            "tokens": 12345,
            "user": "[/bold]mallory\x1b]0;pwned\x07",
        }
    ]
    _emit(rows, list(rows[0]), "table", "Recent runs")
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= width
    assert "0123456789ab" in out  # the id is never cut
    assert "\x1b" not in out and "\x07" not in out
    if width == 80:
        caption = " ".join(out.split())
        assert "not shown (too narrow): " in caption and "see --format csv or json" in caption


def test_csv_has_every_column_and_no_controls(capsys):
    _emit([{"a": "x\x1b[31my", "b": None}], ["a", "b"], "csv", "t")
    assert capsys.readouterr().out.splitlines() == ["a,b", "x[31my,"]


def test_important_columns_are_kept_first_and_shown_in_their_place(monkeypatch, capsys):
    monkeypatch.setattr(_output.console, "width", 32)
    row = {"agent": "a", "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "cost_usd": Decimal(1)}
    _emit([row], list(row), "table", "t", first=["agent", "cost_usd"])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "agent" in line)
    assert header.split("┃")[1:-1] == [" agent ", " p50_ms ", " cost_usd "]
    assert "not shown (too narrow): p95_ms, p99_ms" in " ".join(out.split())
