"""`Supervisor`: plan, delegate, monitor, synthesize; worker errors are values (FakeModel and `sim`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from corral import Agent, RunContext, function_agent
from corral.patterns import Supervisor, Task
from corral.testing import FakeModel
from tests.helpers import ephemeral_app


class Text(BaseModel):
    text: str


class Scored(BaseModel):
    text: str
    score: int = Field(ge=1, le=5)


class Plan(BaseModel):
    steps: list[Text] = Field(min_length=2, max_length=3)


class Report(BaseModel):
    summary: str


async def test_supervisor_walks_its_state_machine_and_sees_worker_errors_as_values():
    model = FakeModel([{"steps": [{"text": "ok task"}, {"text": "bad task"}]}])
    app, _, _ = ephemeral_app(
        models={"fake:model": model}, tiers={"small": "sim:small", "fake": "fake:model"}
    )
    planner = Agent(name="planner", instructions="x", input=Text, output=Plan, model="fake")
    worker = Agent(name="worker", instructions="x", input=Text, output=Scored, model="small")
    synth = Agent(name="synth", instructions="x", input=Text, output=Report, model="small")

    @function_agent
    def picky(t: Text) -> Scored:
        if "bad" in t.text:
            return Scored.model_construct(text="x", score=0)  # fails output validation
        return Scored(text=t.text, score=3)

    sup = Supervisor(
        planner=planner,
        workers={"picky": picky, "worker": worker},
        synthesizer=synth,
        tasks=lambda plan: (
            [Task(worker="picky", payload=s) for s in plan.steps]
            + [Task(worker="ghost", payload={})]
        ),
        synthesis_input=lambda goal, outcomes: Text(
            text=" ".join(o.output.text for o in outcomes if o.ok)
        ),
        max_retries=1,
    )

    @app.workflow
    async def run(ctx: RunContext, t: Text) -> Report:
        result = await sup.run(ctx, t)
        assert result.status == "done"
        assert result.transitions[0] == "plan->delegate (3 tasks)"
        assert "monitor->delegate (retry 1)" in result.transitions
        assert result.transitions[-1] == "synthesize->done"
        codes = sorted(o.error.code for o in result.outcomes if o.error)
        assert codes == ["invalid_output", "unknown_worker"]
        bad = next(o for o in result.outcomes if o.error and o.error.code == "invalid_output")
        assert bad.attempts == 2
        return result.output

    result = await app.run("run", {"text": "goal"})
    assert result.ok, result.error
    model.assert_done()


async def test_a_worker_function_that_raises_is_a_failed_task_the_supervisor_retries():
    """It used to escape `ctx.parallel` as an ExceptionGroup and fail the run."""
    model = FakeModel([{"steps": [{"text": "fine"}, {"text": "boom"}]}])
    app, _, _ = ephemeral_app(
        models={"fake:model": model}, tiers={"small": "sim:small", "fake": "fake:model"}
    )
    planner = Agent(name="planner", instructions="x", input=Text, output=Plan, model="fake")
    synth = Agent(name="synth", instructions="x", input=Text, output=Report, model="small")

    @function_agent
    def worker(t: Text) -> Scored:
        if t.text == "boom":
            raise RuntimeError("the index is down")
        return Scored(text=t.text, score=3)

    sup = Supervisor(
        planner=planner,
        workers={"worker": worker},
        synthesizer=synth,
        tasks=lambda plan: [Task(worker="worker", payload=s) for s in plan.steps],
        synthesis_input=lambda goal, outcomes: Text(text="ok"),
        max_retries=1,
    )

    @app.workflow
    async def run(ctx: RunContext, t: Text) -> Report:
        result = await sup.run(ctx, t)
        assert result.status == "done" and "monitor->delegate (retry 1)" in result.transitions
        [failed] = [o for o in result.outcomes if not o.ok]
        assert failed.attempts == 2 and failed.error is not None
        assert failed.error.code == "function_error" and failed.error.agent == "worker"
        assert failed.error.details == {"type": "RuntimeError", "message": "the index is down"}
        return result.output

    result = await app.run("run", {"text": "goal"})
    assert result.ok, result.error
    model.assert_done()
