"""Operator controls of an open app (`corral._operators`): replaying the controls log."""

from __future__ import annotations

import logging
from pathlib import Path

from corral import App, AppConfig


async def test_opening_replays_the_controls_history_quietly_and_says_what_is_in_effect(
    tmp_path: Path, caplog
):
    """Every historical halt, release and pause was logged as a WARNING at each startup."""
    db = f"sqlite:///{tmp_path / 'c.db'}"
    first = App(AppConfig(database=db, durable=False))
    async with first:
        for i in range(5):
            await first.control("halt", "agent", f"old-{i}", by="oncall", reason="incident")
            await first.control("release", "agent", f"old-{i}", by="oncall")
        await first.control("halt", "agent", "writer", by="oncall", reason="bad output")
        await first.control("pause", "workflow", "billing", by="oncall")

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="corral")
    second = App(AppConfig(database=db, durable=False))
    async with second:
        replayed = [r for r in caplog.records if r.name == "corral.guards.kill"]
        assert len(replayed) == 7  # 6 halts and a pause (releases log nothing)
        assert {r.levelno for r in replayed} == {logging.DEBUG}
        [summary] = [r for r in caplog.records if "operator controls in effect" in r.message]
        assert summary.levelno == logging.INFO
        assert summary.message == (
            "operator controls in effect: halted agents: writer; paused workflows: billing"
        )
        assert second.guards.kill.state["halted_agents"].keys() == {"writer"}

        caplog.clear()
        await second.control("halt", "agent", "reader", by="oncall")
        [now] = [r for r in caplog.records if r.name == "corral.guards.kill"]
        assert now.levelno == logging.WARNING  # a control while the app runs is news
