"""Each pattern on `sim` (and FakeModel where the path must be forced)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from corral import Agent, RunContext, function_agent
from corral.patterns import (
    Blackboard,
    BoardTask,
    Gate,
    Mesh,
    Pipeline,
    Stage,
    Subscriber,
    Supervisor,
    Task,
)
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


class Alert(BaseModel):
    service: str
    hops: int = 0


class Diagnosis(BaseModel):
    service: str
    hops: int
    fixed: bool


async def test_mesh_is_deterministic_and_ends_when_quiescent_or_at_its_bound():
    @function_agent
    def diagnose(a: Alert) -> Diagnosis:
        return Diagnosis(service=a.service, hops=a.hops + 1, fixed=a.hops >= 2)

    @function_agent
    def reopen(d: Diagnosis) -> Alert:
        return Alert(service=d.service, hops=d.hops)

    @function_agent
    def audit(d: Diagnosis) -> Diagnosis:
        return d

    subs = [
        Subscriber(
            topic="alert", agent=diagnose, publish=lambda d: "resolved" if d.fixed else "open"
        ),
        Subscriber(topic="open", agent=reopen, publish="alert"),
        Subscriber(topic="resolved", agent=audit, publish=None),
    ]
    app, _, _ = ephemeral_app()
    seen: list[list[str]] = []

    @app.workflow
    async def incident(ctx: RunContext, a: Alert) -> Diagnosis:
        result = await Mesh(subs).run(ctx, "alert", a)
        seen.append([f"{m.seq}:{m.topic}:{m.sender}" for m in result.messages])
        assert result.status == "quiescent"
        return result.last("resolved")

    @app.workflow
    async def runaway(ctx: RunContext, a: Alert) -> Diagnosis:
        loop = [
            Subscriber(topic="alert", agent=diagnose, publish="open"),
            Subscriber(topic="open", agent=reopen, publish="alert"),
        ]
        result = await Mesh(loop, max_messages=7).run(ctx, "alert", a)
        assert result.status == "limit" and len(result.messages) == 7
        return Diagnosis(service="x", hops=0, fixed=False)

    first = await app.run("incident", {"service": "db"})
    await app.run("incident", {"service": "db"})
    assert first.output.fixed and first.output.hops == 3
    assert seen[0] == seen[1]
    assert (await app.run("runaway", {"service": "db"})).ok


class Draft(BaseModel):
    text: str


async def test_blackboard_rejects_stale_writes_and_retries_against_the_new_version():
    calls: list[str] = []

    @function_agent
    def writer(d: Draft) -> Draft:
        calls.append(d.text)
        return Draft(text=d.text + "+")

    app, _, _ = ephemeral_app()

    @app.workflow
    async def board_run(ctx: RunContext, d: Draft) -> Draft:
        board = Blackboard({"doc": d})

        def coordinator(b: Blackboard) -> list[BoardTask]:
            if b.version("doc") >= 3:
                return []
            # Two peers edit the same entry in one round: the second write is stale.
            return [BoardTask(agent=writer, key="doc", payload=lambda bb: bb.get("doc"))] * 2

        rounds = await board.run(ctx, coordinator)
        assert board.stale_writes >= 1 and board.errors == []
        assert rounds >= 1
        return board.get("doc")

    result = await app.run("board_run", {"text": "v"})
    assert result.ok and result.output.text.startswith("v++")


async def test_mesh_deadlock_fails_fast_with_the_wait_for_cycle():
    app, _, _ = ephemeral_app()
    fixer = Agent(name="fixer", instructions="Fix.", input=Text, output=Text)
    approver = Agent(name="approver", instructions="Approve.", input=Text, output=Text)
    mesh = Mesh(
        [
            # The fixer waits for an approval; the approver waits for a fix: nobody moves.
            Subscriber(topic="alert", agent=fixer, publish="fix", waits_for=("approval",)),
            Subscriber(topic="alert", agent=approver, publish="approval", waits_for=("fix",)),
        ]
    )

    @app.workflow
    async def incident(ctx: RunContext, alert: Text) -> Text:
        await mesh.run(ctx, "alert", alert)
        return alert

    result = await app.run("incident", {"text": "db down"})
    assert result.error["code"] == "deadlock"
    assert sorted(result.error["cycle"]) == ["approver", "fixer"]
    assert result.error["waiting"] == {"approver": "fix", "fixer": "approval"}
    assert result.usage.calls == 0, "failed fast, before any agent ran"


async def test_mesh_waits_for_an_awaited_topic_then_delivers():
    app, _, _ = ephemeral_app()

    @function_agent
    def diagnose(t: Text) -> Text:
        return Text(text=f"diag {t.text}")

    @function_agent
    def fix(t: Text) -> Text:
        return Text(text=f"fixed {t.text}")

    mesh = Mesh(
        [
            Subscriber(topic="alert", agent=fix, publish="done", waits_for=("diagnosis",)),
            Subscriber(topic="alert", agent=diagnose, publish="diagnosis"),
        ]
    )

    @app.workflow
    async def incident(ctx: RunContext, alert: Text) -> Text:
        result = await mesh.run(ctx, "alert", alert)
        return Text(text=result.last("done").text)

    result = await app.run("incident", {"text": "disk"})
    assert result.ok and result.output.text == "fixed disk"


async def test_blackboard_deadlock_names_the_cycle():
    app, _, _ = ephemeral_app()

    @function_agent
    def writer_a(t: Text) -> Text:
        return Text(text="a")

    @function_agent
    def writer_b(t: Text) -> Text:
        return Text(text="b")

    a, b = writer_a, writer_b

    def coordinator(board: Blackboard) -> list[BoardTask]:
        if "x" in board and "y" in board:
            return []
        return [
            BoardTask(agent=a, key="x", payload=lambda bb: Text(text="?"), needs=("y",)),
            BoardTask(agent=b, key="y", payload=lambda bb: Text(text="?"), needs=("x",)),
        ]

    @app.workflow
    async def collaborate(ctx: RunContext, t: Text) -> Text:
        await Blackboard().run(ctx, coordinator)
        return t

    result = await app.run("collaborate", {"text": "go"})
    assert result.error["code"] == "deadlock"
    assert sorted(result.error["cycle"]) == ["writer_a->x", "writer_b->y"]
