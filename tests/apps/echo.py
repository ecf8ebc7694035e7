"""A tiny app the CLI tests load with `--app tests.apps.echo:build`."""

from __future__ import annotations

from pydantic import BaseModel

from corral import Agent, App, AppConfig, RunContext


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    answer: str


answerer = Agent(name="answerer", instructions="Answer.", input=Question, output=Answer)


def build(config: AppConfig) -> App:
    app = App(config)

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(answerer, q)

    return app


not_an_app = 42
