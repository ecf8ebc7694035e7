"""`Mesh`: a deterministic topic bus that ends when quiescent or at its bound; deadlocks fail fast."""

from __future__ import annotations

from pydantic import BaseModel

from corral import Agent, RunContext, function_agent
from corral.patterns import Mesh, Subscriber
from tests.helpers import ephemeral_app


class Text(BaseModel):
    text: str


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
