"""Research team (Supervisor pattern): a planner splits a question, researchers answer the parts in
parallel, a writer synthesizes.

    python -m examples.research_team --model sim "How do durable workflows survive crashes?"
"""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import BaseModel, Field

from corral import Agent, App, AppConfig, RunContext
from corral.patterns import Supervisor, Task
from examples._runner import run_once


class Question(BaseModel):
    text: str


class Step(BaseModel):
    worker: Literal["researcher", "skeptic"]
    question: str


class Plan(BaseModel):
    steps: list[Step] = Field(min_length=1, max_length=4)


class Finding(BaseModel):
    claim: str
    confidence: float = Field(ge=0, le=1)


class Notes(BaseModel):
    question: str
    findings: list[str]


class Report(BaseModel):
    summary: str
    caveats: list[str] = []


planner = Agent(
    name="planner",
    instructions="Split the question into 2-3 sub-questions, each for "
    "the researcher or the skeptic.",
    input=Question,
    output=Plan,
    max_output_tokens=200,
)
researcher = Agent(
    name="researcher",
    instructions="Answer the question with one claim.",
    input=Question,
    output=Finding,
    max_output_tokens=120,
)
skeptic = Agent(
    name="skeptic",
    instructions="Give the strongest objection as one claim.",
    input=Question,
    output=Finding,
    max_output_tokens=120,
)
writer = Agent(
    name="writer",
    instructions="Summarize the findings for the question.",
    input=Notes,
    output=Report,
    max_output_tokens=200,
)

team = Supervisor(
    planner=planner,
    workers={"researcher": researcher, "skeptic": skeptic},
    synthesizer=writer,
    tasks=lambda plan: [
        Task(worker=s.worker, payload=Question(text=s.question)) for s in plan.steps
    ],
    synthesis_input=lambda goal, outcomes: Notes(
        question=goal.text,
        findings=[o.output.claim for o in outcomes if o.ok],  # type: ignore[union-attr]
    ),
)


def build_app(config: AppConfig | None = None) -> App:
    app = App(config)

    @app.workflow
    async def research(ctx: RunContext, q: Question) -> Report:
        result = await team.run(ctx, q)
        if result.output is None:
            assert result.error is not None
            raise result.error
        return result.output  # type: ignore[return-value]

    return app


if __name__ == "__main__":
    sys.exit(
        run_once(
            build_app,
            "research",
            sys.argv[1:],
            prog="python -m examples.research_team",
            default="How do durable workflows survive crashes?",
        )
    )
