"""The composition root: what an app rebuilds from its run database when it opens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel

from corral import Agent, App, AppConfig, ModelPrice, RunContext
from corral.guards import DailyLimit, GuardPolicies
from corral.model import ModelResponse
from corral.testing import FakeClock, FakeModel

DAY = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    answer: str


def _app(database: str, at: datetime, answers: list[ModelResponse]) -> tuple[App, FakeModel]:
    """An app whose every call reserves a few cents (its output tokens at $100 per million)
    and costs what its answer reports, under a $1 daily limit per tenant."""
    model = FakeModel(answers)
    app = App(
        AppConfig(
            database=database,
            durable=False,
            tiers={"small": "fake:m"},
            prices={"fake:m": ModelPrice(input_per_mtok=Decimal(1), output_per_mtok=Decimal(100))},
            guards=GuardPolicies(daily={"tenant:*": DailyLimit(usd=Decimal(1))}),
        ),
        models={"fake:m": model},
        clock=FakeClock(start=at),
    )
    agent = Agent(name="answerer", instructions="Answer.", input=Question, output=Answer)

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(agent, q)

    return app, model


def _costing(usd: str) -> ModelResponse:
    """An answer billed `usd` (input tokens at $1 per million)."""
    tokens = int(Decimal(usd) * 1_000_000)
    return ModelResponse(text='{"answer": "a"}', model="fake:m", input_tokens=tokens)


async def test_a_restart_does_not_reset_the_days_spend_against_a_daily_limit(tmp_path: Path):
    """Two processes one after the other each spent $0.91 of a $1 tenant limit ($1.82 a day)."""
    database = f"sqlite:///{tmp_path / 'runs.db'}"
    first, _ = _app(database, DAY, [_costing("0.99")])
    async with first:
        spent = await first.run("ask", {"text": "q"}, tenant="acme", priority="critical")
    assert spent.ok and spent.cost_usd == Decimal("0.99")

    later, model = _app(database, DAY + timedelta(hours=3), [_costing("0.01")])
    async with later:
        refused = await later.run("ask", {"text": "q"}, tenant="acme", priority="critical")
        other = await later.run("ask", {"text": "q"}, tenant="globex", priority="critical")
    assert refused.status == "budget_exhausted"
    assert refused.error is not None and refused.error["scope"] == "tenant:acme", refused.error
    assert other.ok  # another tenant's limit is its own
    assert len(model.requests) == 1


async def test_the_next_day_starts_from_zero(tmp_path: Path):
    database = f"sqlite:///{tmp_path / 'runs.db'}"
    first, _ = _app(database, DAY, [_costing("0.99")])
    async with first:
        assert (await first.run("ask", {"text": "q"}, tenant="acme")).ok
    tomorrow, _ = _app(database, DAY + timedelta(days=1), [_costing("0.01")])
    async with tomorrow:
        assert (await tomorrow.run("ask", {"text": "q"}, tenant="acme", priority="critical")).ok
