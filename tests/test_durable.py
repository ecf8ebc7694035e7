"""Durable runs in process on real SQLite: journaled steps, exactly-once run ids."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from corral import Agent, App, AppConfig, RunContext
from corral.models.sim import SimModel
from corral.testing import CountingModel, FakeClock

# DBOS in process (one database per process: the `dbos` xdist group keeps these on one worker).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dbos")]


class Q(BaseModel):
    text: str


class A(BaseModel):
    answer: str


def counting_sim() -> CountingModel:
    return CountingModel(SimModel("sim:small", clock=FakeClock()), name="count:sim")


@pytest.fixture(scope="module")
def durable_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    # DBOS is one instance per process: every durable test in this process shares one database.
    return f"sqlite:///{tmp_path_factory.mktemp('durable') / 'corral.db'}"


async def test_same_run_id_twice_executes_once_and_both_get_the_result(durable_db):
    model = counting_sim()
    app = App(
        AppConfig(database=durable_db, tiers={"small": "count:sim"}), models={"count:sim": model}
    )
    agent = Agent(name="a", instructions="x", input=Q, output=A)

    @app.workflow
    async def ask(ctx: RunContext, q: Q) -> A:
        return await ctx.call(agent, q)

    async with app:
        first = await app.run("ask", {"text": "hi"}, run_id="same-id-1")
        second = await app.run("ask", {"text": "hi"}, run_id="same-id-1")
        spans = await app.spans("same-id-1")
    assert first.output == second.output and first.ok
    assert model.calls == 1
    assert [s["step_id"] for s in spans] == ["1", "1.1"]


async def test_parallel_calls_journal_under_program_order_ids(durable_db):
    model = counting_sim()
    app = App(
        AppConfig(database=durable_db, tiers={"small": "count:sim"}), models={"count:sim": model}
    )
    agent = Agent(name="a", instructions="x", input=Q, output=A)

    @app.workflow
    async def fan(ctx: RunContext, q: Q) -> A:
        outs = await ctx.parallel(*(ctx.call(agent, Q(text=f"{q.text} {i}")) for i in range(4)))
        return A(answer=" | ".join(o.answer for o in outs))

    async with app:
        result = await app.run("fan", {"text": "hello"}, run_id="fan-1")
        steps = await app._store.load_steps("fan-1")
    assert result.ok and model.calls == 4
    assert sorted(steps) == ["1.1", "2.1", "3.1", "4.1"]  # LLM agents journal their model calls
