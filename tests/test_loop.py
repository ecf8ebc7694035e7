"""`corral.run`: a coroutine on uvloop's loop when installed (the dev extras install it), else
asyncio's; `CORRAL_LOOP` chooses."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from pydantic import BaseModel

import corral
from corral import Agent, ConfigError, RunContext
from tests.helpers import ephemeral_app


class Q(BaseModel):
    text: str


class A(BaseModel):
    answer: str


async def _loop_and_run() -> tuple[str, str]:
    """A sim run in whatever loop runs this; (the loop's module, the run's status)."""
    app, _, _ = ephemeral_app()
    agent = Agent(name="a", instructions="Answer.", input=Q, output=A)

    @app.workflow
    async def ask(ctx: RunContext, q: Q) -> A:
        return await ctx.call(agent, q)

    async with app:
        result = await app.run("ask", {"text": "hi"}, deadline_s=30)
    return type(asyncio.get_running_loop()).__module__, result.status


def test_run_uses_uvloop_when_installed_and_asyncio_when_asked(monkeypatch):
    monkeypatch.delenv("CORRAL_LOOP", raising=False)
    assert corral.run(_loop_and_run()) == (uvloop.Loop.__module__, "succeeded")
    monkeypatch.setenv("CORRAL_LOOP", "asyncio")
    module, status = corral.run(_loop_and_run())
    assert module.startswith("asyncio.") and status == "succeeded"


def test_a_bad_loop_choice_is_a_config_error_and_the_coroutine_is_closed(monkeypatch):
    monkeypatch.setenv("CORRAL_LOOP", "trio")
    main = _loop_and_run()
    with pytest.raises(ConfigError, match="CORRAL_LOOP: must be one of auto, asyncio, uvloop"):
        corral.run(main)
    assert main.cr_frame is None  # closed: no "never awaited" warning, nothing half-run


def test_asking_for_uvloop_where_it_is_missing_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("CORRAL_LOOP", "uvloop")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'corral\[fast\]'"):
        corral.run(_loop_and_run())
