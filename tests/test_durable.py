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
        steps = await app.store.load_steps("fan-1")
    assert result.ok and model.calls == 4
    assert sorted(steps) == ["1.1", "2.1", "3.1", "4.1"]  # LLM agents journal their model calls


async def test_dbos_stores_a_run_as_json_text_only(durable_db):
    """What DBOS keeps of a run (its inputs and output) is JSON text, never a pickle."""
    import json

    import sqlalchemy as sa

    app = App(AppConfig(database=durable_db, tiers={"small": "sim:small"}))
    agent = Agent(name="a", instructions="x", input=Q, output=A)

    @app.workflow
    async def ask(ctx: RunContext, q: Q) -> A:
        return await ctx.call(agent, q)

    async with app:
        result = await app.run("ask", {"text": "secret"}, run_id="json-only-1")
        with app.store.engine.connect() as conn:
            # DBOS keeps inputs and outputs in side tables, older versions in workflow_status.
            row = conn.execute(
                sa.text(
                    "SELECT coalesce(i.inputs, s.inputs) AS inputs, "
                    "coalesce(o.output, s.output) AS output, s.serialization "
                    "FROM workflow_status s "
                    "LEFT JOIN workflow_input i ON i.workflow_uuid = s.workflow_uuid "
                    "LEFT JOIN workflow_output o ON o.workflow_uuid = s.workflow_uuid "
                    "WHERE s.workflow_uuid = 'json-only-1'"
                )
            ).one()
    assert result.ok
    assert row.serialization == "corral_json"
    (start,) = json.loads(row.inputs)["args"]
    assert json.loads(start)["payload"] == {"text": "secret"}
    assert json.loads(json.loads(row.output)["value"])["status"] == "succeeded"


async def test_a_tampered_pickled_row_fails_with_a_state_error_instead_of_running_code(
    durable_db,
):
    """Someone with write access to the database swaps a run's inputs for a pickle that runs
    code when loaded and marks the row for DBOS's pickle: resuming the run refuses it."""
    import base64
    import pickle

    import sqlalchemy as sa
    from dbos import DBOS

    from corral.errors import StateError

    app = App(AppConfig(database=durable_db, tiers={"small": "sim:small"}))

    @app.workflow
    async def echo(ctx: RunContext, q: Q) -> A:
        return A(answer=q.text)

    evil = base64.b64encode(pickle.dumps({"args": (_Exploit(),), "kwargs": {}})).decode()
    async with app:
        assert (await app.run("echo", {"text": "x"}, run_id="tampered-1")).ok
        with app.store.engine.begin() as conn:
            for statement in (
                "UPDATE workflow_status SET inputs = :evil, serialization = 'py_pickle', "
                "status = 'PENDING', output = NULL WHERE workflow_uuid = 'tampered-1'",
                "UPDATE workflow_input SET inputs = :evil WHERE workflow_uuid = 'tampered-1'",
                "DELETE FROM workflow_output WHERE workflow_uuid = 'tampered-1'",
            ):
                conn.execute(sa.text(statement), {"evil": evil})
        await DBOS.resume_workflow_async("tampered-1")
        with pytest.raises(StateError, match="never unpickled"):
            await app.resume()
    assert _EXECUTED == []


_EXECUTED: list[str] = []


class _Exploit:
    def __reduce__(self):
        return (_EXECUTED.append, ("pwned",))
