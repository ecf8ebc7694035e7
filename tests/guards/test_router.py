"""Routing `auto` agents by complexity, with every decision recorded and degrade applied after."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from corral import Agent, AppConfig, ModelPrice, RunContext
from corral.config import parse_config
from corral.guards import BudgetPolicy, GuardPolicies
from corral.guards.router import RouteInput, RouterPolicy, default_scorer, route, schema_shape
from tests.helpers import ephemeral_app


class Q(BaseModel):
    text: str


class Short(BaseModel):
    answer: str


class Address(BaseModel):
    street: str
    city: str
    country: str


class Person(BaseModel):
    name: str
    email: str
    home: Address
    work: Address
    tags: list[str]


class Report(BaseModel):
    title: str
    people: list[Person]
    summary: str
    risks: list[str]
    next_steps: list[str]


def x(**kw: object) -> RouteInput:
    base = {
        "agent": "a",
        "role": None,
        "input_tokens": 10,
        "schema_fields": 1,
        "schema_depth": 1,
        "tools": 0,
    }
    base.update(kw)
    return RouteInput(**base)  # type: ignore[arg-type]


def test_schema_shape_counts_nested_fields_through_refs():
    assert schema_shape(Short.model_json_schema()) == (1, 1)
    # title, people (name, email, home (street, city, country), work (3), tags), summary, risks,
    # next_steps: 16 fields, three levels deep.
    assert schema_shape(Report.model_json_schema()) == (16, 3)


def test_declared_tiers_are_not_routed_and_auto_is_scored():
    policy = RouterPolicy()
    assert route(policy, "medium", x()) == ("medium", None)
    assert route(policy, "auto", x())[0] == "small"
    assert route(policy, "auto", x(input_tokens=2500))[0] == "medium"
    tier, reason = route(policy, "auto", x(input_tokens=2500, schema_fields=25, role="planner"))
    assert tier == "large" and reason is not None
    assert reason["because"]["role"] == "planner" and reason["score"] >= 0.6


def test_a_custom_scorer_replaces_the_default():
    policy = RouterPolicy(scorer=lambda r: 1.0 if "legal" in r.agent else 0.0)
    assert route(policy, "auto", x(agent="legal_review"))[0] == "large"
    assert route(policy, "auto", x(agent="chit_chat", input_tokens=10_000))[0] == "small"
    assert route(policy, "auto", x())[1]["because"]["scorer"] == "custom"  # type: ignore[index]


def test_default_score_is_bounded():
    assert (
        0 <= default_scorer(x(input_tokens=10**6, schema_fields=999, tools=99, role="judge")) <= 1
    )


async def test_auto_agents_get_the_tier_their_call_needs_and_the_reason_is_recorded():
    app, recorder, _ = ephemeral_app()
    quick = Agent(name="quick", instructions="Answer.", input=Q, output=Short, model="auto")
    deep = Agent(
        name="deep", instructions="Report.", input=Q, output=Report, model="auto", role="planner"
    )

    @app.workflow
    async def both(ctx: RunContext, q: Q) -> Short:
        await ctx.call(deep, Q(text="the incident timeline, in detail. " * 60))
        return await ctx.call(quick, q)

    result = await app.run("both", {"text": "hi"})
    assert result.ok, result.error
    models = {s.name: s.model for s in recorder.spans_of(result.run_id, "model")}
    assert models == {"deep": "sim:large", "quick": "sim:small"}
    routes = [s.output for s in recorder.spans_of(result.run_id, "guard") if s.name == "route"]
    assert [r["tier"] for r in routes] == ["large", "small"]


async def test_budget_degrade_moves_a_routed_tier_one_step_down():
    prices = {"sim:large": ModelPrice(input_per_mtok=Decimal(500), output_per_mtok=Decimal(500))}
    app, recorder, _ = ephemeral_app(
        guards=GuardPolicies(budget=BudgetPolicy(usd=Decimal("0.8"), degrade_at=0.5)),
        prices={**AppConfig().prices, **prices},
    )
    deep = Agent(
        name="deep", instructions="Report.", input=Q, output=Report, model="auto", role="planner"
    )

    long = "the incident timeline, in detail. " * 60

    @app.workflow
    async def twice(ctx: RunContext, q: Q) -> Report:
        await ctx.call(deep, Q(text=long))
        return await ctx.call(deep, Q(text=long + " again"))

    result = await app.run("twice", {"text": "hi"})
    guards = list(recorder.spans_of(result.run_id, "guard"))
    assert [g.name for g in guards][:3] == ["route", "route", "degrade"]
    assert [s.model for s in recorder.spans_of(result.run_id, "model")] == [
        "sim:large",
        "sim:medium",
    ]


def test_thresholds_from_config_move_the_boundaries():
    config = parse_config({"guards": {"router": {"thresholds": [0.05, 0.1]}}})
    policy = config.guards.router
    assert route(policy, "auto", x())[0] == "small"
    assert route(policy, "auto", x(input_tokens=400))[0] == "medium"
    assert route(policy, "auto", x(input_tokens=800))[0] == "large"
    assert route(RouterPolicy(), "auto", x(input_tokens=800))[0] == "small"


def test_tools_and_schema_depth_raise_the_score_and_each_input_is_reported():
    plain = x(input_tokens=1000)
    tooled = x(input_tokens=1000, tools=4, schema_fields=10, schema_depth=3)
    assert default_scorer(tooled) > default_scorer(plain)
    assert route(RouterPolicy(), "auto", plain)[0] == "small"
    tier, reason = route(RouterPolicy(), "auto", tooled)
    assert tier == "medium" and reason is not None
    assert reason["because"] == {
        "input_tokens": 1000,
        "schema_fields": 10,
        "schema_depth": 3,
        "tools": 4,
        "role": None,
        "scorer": "default",
    }


def test_custom_tier_names_are_used_in_order():
    policy = RouterPolicy(tiers=("haiku", "sonnet", "opus"))
    assert route(policy, "auto", x())[0] == "haiku"
    assert route(policy, "auto", x(input_tokens=3000, role="judge"))[0] == "opus"
