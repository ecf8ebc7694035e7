"""Shared builders for tests."""

from __future__ import annotations

from typing import Any

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
