"""Incident mesh (Mesh pattern): an alert travels between a triager, a diagnoser and a fixer over
topics until the bus is quiescent.

    python -m examples.incident_mesh --model sim "checkout latency p99 is 4s"
"""

from __future__ import annotations

import sys

from pydantic import BaseModel, Field

from corral import Agent, App, AppConfig, RunContext, function_agent
from corral.patterns import Mesh, Subscriber
from examples._runner import run_once


class Alert(BaseModel):
    text: str


class Diagnosis(BaseModel):
    component: str
    cause: str
    severity: int = Field(ge=1, le=5)


class Fix(BaseModel):
    action: str
    safe: bool


class Ticket(BaseModel):
    summary: str
    severity: int


diagnoser = Agent(
    name="diagnoser",
    instructions="Diagnose the alert: component, cause, severity.",
    input=Alert,
    output=Diagnosis,
    max_output_tokens=120,
)
fixer = Agent(
    name="fixer",
    instructions="Propose one remediation and whether it is safe to apply.",
    input=Diagnosis,
    output=Fix,
    max_output_tokens=120,
)


@function_agent
def page_human(d: Diagnosis) -> Ticket:
    return Ticket(summary=f"{d.component}: {d.cause}", severity=d.severity)


@function_agent
def apply_fix(f: Fix) -> Ticket:
    return Ticket(summary=f"applied: {f.action}", severity=1)


bus = Mesh(
    [
        Subscriber(topic="alert", agent=diagnoser, publish="diagnosis"),
        Subscriber(topic="diagnosis", agent=fixer, publish=lambda f: "fix" if f.safe else None),
        Subscriber(
            topic="diagnosis",
            agent=page_human,
            publish=lambda t: "page" if t.severity >= 4 else None,
        ),
        Subscriber(topic="fix", agent=apply_fix, publish="resolved"),
    ],
    max_messages=20,
)


class Outcome(BaseModel):
    status: str
    topics: list[str]


def build_app(config: AppConfig | None = None) -> App:
    app = App(config)

    @app.workflow
    async def incident(ctx: RunContext, alert: Alert) -> Outcome:
        result = await bus.run(ctx, "alert", alert)
        return Outcome(status=result.status, topics=[m.topic for m in result.messages])

    return app


if __name__ == "__main__":
    sys.exit(
        run_once(
            build_app,
            "incident",
            sys.argv[1:],
            prog="python -m examples.incident_mesh",
            default="checkout latency p99 is 4s since 09:00",
        )
    )
