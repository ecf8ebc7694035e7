"""`Pipeline`: stages in order, gates that repair, escalate or fail with the best result (on `sim`
and FakeModel)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel, Field

from corral import Agent, App, RunContext
from corral.humans import HumanRequest
from corral.patterns import Gate, Pipeline, Stage
from corral.testing import FakeModel
from tests.helpers import ephemeral_app

WAIT = 10  # generous bound on every wait: a hang fails the test instead of the suite


class Text(BaseModel):
    text: str


class Scored(BaseModel):
    text: str
    score: int = Field(ge=1, le=5)


async def test_pipeline_runs_stages_in_order():
    app, _, _ = ephemeral_app()
    first = Agent(name="first", instructions="x", input=Text, output=Scored)
    second = Agent(name="second", instructions="x", input=Scored, output=Text)

    @app.workflow
    async def flow(ctx: RunContext, t: Text) -> Text:
        result = await Pipeline([Stage(first), second]).run(ctx, t)
        assert result.status == "completed" and list(result.outputs) == ["first", "second"]
        return result.output

    assert (await app.run("flow", {"text": "hello world"})).ok


def escalating(model: FakeModel) -> App:
    """`first` answers, its gate escalates every answer, `second` echoes what it was handed."""
    app, _, _ = ephemeral_app(models={"fake:model": model}, tiers={"small": "fake:model"})
    first = Agent(name="first", instructions="x", input=Text, output=Scored)
    second = Agent(name="second", instructions="x", input=Scored, output=Text)

    @app.workflow
    async def gated(ctx: RunContext, t: Text) -> Text:
        gate = lambda s: Gate.escalate("needs a human") if s.score < 3 else Gate.ok()  # noqa: E731
        result = await Pipeline([Stage(first, gate=gate), second]).run(ctx, t)
        return Text(text=f"{result.status}:{result.escalations}:{result.reason}")

    return app


async def next_request(app: App, handle_of: Any) -> tuple[Any, HumanRequest]:
    assert app.humans is not None
    queue = app.humans.subscribe()
    handle = await handle_of()
    request = await asyncio.wait_for(queue.get(), WAIT)
    app.humans.unsubscribe(queue)
    return handle, request


async def test_an_escalating_gate_asks_the_inbox_and_the_human_answer_goes_on():
    model = FakeModel([{"text": "draft", "score": 1}, {"text": "done"}])
    app = escalating(model)
    async with app:
        handle, request = await next_request(app, lambda: app.start("gated", {"text": "hi"}))
        assert (request.kind, request.subject) == ("escalation", "first")
        assert request.payload["reason"] == "needs a human"
        assert request.payload["input"] == {"text": "hi"}
        assert request.payload["proposed"] == {"text": "draft", "score": 1}
        await app.decide(request.id, "answer", by="lead", value={"text": "fixed", "score": 5})
        result = await asyncio.wait_for(handle.result(), WAIT)
    assert result.ok and result.output.text == "completed:1:"
    # The next stage was handed the human's answer, not the draft the gate escalated.
    assert json.loads(model.requests[1].messages[-1].content) == {"text": "fixed", "score": 5}
    model.assert_done()


async def test_a_declined_escalation_ends_the_pipeline_escalated_with_the_draft():
    model = FakeModel([{"text": "draft", "score": 1}])
    app = escalating(model)
    async with app:
        handle, request = await next_request(app, lambda: app.start("gated", {"text": "hi"}))
        await app.decide(request.id, "reject", by="lead", comment="not ours")
        result = await asyncio.wait_for(handle.result(), WAIT)
    assert result.output.text == (
        "escalated:0:needs a human (lead rejected answering for agent 'first': not ours)"
    )
    model.assert_done()  # the second stage never ran


async def test_without_an_inbox_an_escalating_gate_ends_the_pipeline_escalated(monkeypatch):
    monkeypatch.setattr(RunContext, "has_inbox", property(lambda self: False))
    model = FakeModel([{"text": "draft", "score": 1}])
    result = await escalating(model).run("gated", {"text": "hi"})
    assert result.output.text == "escalated:0:needs a human"
    model.assert_done()


async def test_an_open_app_has_an_inbox():
    app, _, _ = ephemeral_app()

    @app.workflow
    async def ask(ctx: RunContext, t: Text) -> Text:
        return Text(text=str(ctx.has_inbox))

    assert (await app.run("ask", {"text": "?"})).output.text == "True"


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


async def test_a_repairing_gate_tells_the_model_what_it_rejected_and_why():
    model = FakeModel(
        [{"text": "a", "score": 1}, {"text": "b", "score": 2}, {"text": "c", "score": 4}]
    )
    app, _, _ = ephemeral_app(models={"fake:model": model}, tiers={"small": "fake:model"})
    grade = Agent(name="grade", instructions="x", input=Text, output=Scored)

    @app.workflow
    async def flow(ctx: RunContext, t: Text) -> Scored:
        gate = lambda s: Gate.ok() if s.score >= 3 else Gate.repair(f"score {s.score} < 3")  # noqa: E731
        result = await Pipeline([Stage(grade, gate=gate, max_repairs=2)]).run(ctx, t)
        assert result.status == "completed" and result.repairs == 2
        return result.output

    result = await app.run("flow", {"text": "x"})
    assert result.ok and result.output.text == "c"
    first, second, third = ([(m.role, m.content) for m in r.messages] for r in model.requests)
    assert len(first) == 2  # instructions, payload
    # Each repair shows every answer the gate rejected, each followed by the gate's reason.
    assert second[:2] == first and third[:4] == second
    assert second[2] == ("assistant", '{"text":"a","score":1}')
    assert second[3][0] == "user" and second[3][1].startswith(
        "Your previous answer was rejected: score 1 < 3. Answer again"
    )
    assert third[4] == ("assistant", '{"text":"b","score":2}')
    assert "score 2 < 3" in third[5][1]
    model.assert_done()
