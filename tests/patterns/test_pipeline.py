"""`Pipeline`: stages in order, gates that repair, escalate or fail with the best result (on `sim`
and FakeModel)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from corral import Agent, RunContext
from corral.patterns import Gate, Pipeline, Stage
from corral.testing import FakeModel
from tests.helpers import ephemeral_app


class Text(BaseModel):
    text: str


class Scored(BaseModel):
    text: str
    score: int = Field(ge=1, le=5)


async def test_pipeline_runs_stages_in_order_and_gates_can_escalate():
    app, recorder, _ = ephemeral_app()
    first = Agent(name="first", instructions="x", input=Text, output=Scored)
    second = Agent(name="second", instructions="x", input=Scored, output=Text)

    @app.workflow
    async def flow(ctx: RunContext, t: Text) -> Text:
        result = await Pipeline([Stage(first), second]).run(ctx, t)
        assert result.status == "completed" and list(result.outputs) == ["first", "second"]
        return result.output

    @app.workflow
    async def gated(ctx: RunContext, t: Text) -> Text:
        result = await Pipeline(
            [Stage(first, gate=lambda s: Gate.escalate("needs a human")), second]
        ).run(ctx, t)
        assert (
            result.status == "escalated"
            and result.stage == "first"
            and result.reason == "needs a human"
        )
        return Text(text=result.status)

    assert (await app.run("flow", {"text": "hello world"})).ok
    assert (await app.run("gated", {"text": "hello"})).output.text == "escalated"


async def test_pipeline_gate_repairs_then_fails_with_best_result_so_far():
    model = FakeModel([{"text": "a", "score": 1}, {"text": "b", "score": 2}])
    app, _, _ = ephemeral_app(models={"fake:model": model}, tiers={"small": "fake:model"})
    grade = Agent(name="grade", instructions="x", input=Text, output=Scored)

    @app.workflow
    async def flow(ctx: RunContext, t: Text) -> Text:
        gate = lambda s: Gate.ok() if s.score >= 3 else Gate.repair("score too low")  # noqa: E731
        result = await Pipeline([Stage(grade, gate=gate, max_repairs=1)]).run(ctx, t)
        return Text(text=f"{result.status}:{result.repairs}")

    assert (await app.run("flow", {"text": "x"})).output.text == "failed:1"
    model.assert_done()
