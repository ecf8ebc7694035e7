"""Shared builders for tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from corral import App, AppConfig
from corral.testing import FakeClock, SpanRecorder


def ephemeral_app(
    models: dict[str, Any] | None = None, **config: Any
) -> tuple[App, SpanRecorder, FakeClock]:
    """An app with no journal, an in-memory recorder and a fake clock; database in memory."""
    recorder = SpanRecorder()
    clock = FakeClock()
    cfg = AppConfig(database="sqlite:///:memory:", durable=False, **config)
    counter = iter(range(1, 10_000))
    app = App(
        cfg,
        models=models,
        clock=clock,
        recorder=recorder,
        id_factory=lambda: f"run-{next(counter)}",
    )
    return app, recorder, clock


def cli_runner(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """`invoke(*args)` runs `corral ARGS --config CONFIG` in process: (exit code, stdout, stderr)."""
    from corral.cli import _output
    from corral.cli import main as cli_main

    # A wide terminal, so assertions see whole cells (the narrow case is Rich's business).
    monkeypatch.setattr(_output.console, "width", 220)
    monkeypatch.setattr(_output.err, "width", 220)

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["corral", *args, "--config", str(config)])
        try:
            cli_main.main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke
