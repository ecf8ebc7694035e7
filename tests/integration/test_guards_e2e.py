"""One end-to-end test per production failure mode, on `sim`, in virtual time (no sleeps).

Each story is the one from issue #3: a loop that never ends, a provider failing forever, an
outage, a 429 storm, a budget running out mid-pipeline; plus the kill switch and daily limits.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel

from corral import Agent, App, AppConfig, FunctionAgent, ModelPrice, RunContext, SimConfig
from corral.errors import LoopDetectedError
from corral.guards import (
    BreakerPolicy,
    BudgetPolicy,
    DailyLimit,
    GuardPolicies,
    LoopPolicy,
    RateLimit,
    RetryPolicy,
)
from corral.models.sim import SimModel
from corral.testing import CountingModel, SpanRecorder, VirtualClock

D = Decimal


class Task(BaseModel):
    text: str


class Draft(BaseModel):
    text: str


class Review(BaseModel):
    verdict: Literal["revise"]
    notes: str


def app_with(
    clock: VirtualClock,
    *,
    guards: GuardPolicies | None = None,
    sim: SimConfig | None = None,
    models: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[App, SpanRecorder]:
    recorder = SpanRecorder()
    counter = iter(range(1, 100_000))
    app = App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            guards=guards or GuardPolicies(),
            sim=sim or SimConfig(),
            **config,
        ),
        clock=clock,
        recorder=recorder,
        models=models,
        id_factory=lambda: f"run-{next(counter)}",
    )
    return app, recorder


def guard_events(recorder: SpanRecorder, run_id: str | None = None) -> list[Any]:
    return [
        s for s in recorder.spans if s.kind == "guard" and (run_id is None or s.run_id == run_id)
    ]


async def test_two_agents_ping_ponging_forever_are_stopped_with_the_cycle_named():
    clock = VirtualClock()
    app, recorder = app_with(clock)
    writer = Agent(name="writer", instructions="Write.", input=Review, output=Draft)
    critic = Agent(name="critic", instructions="Criticize.", input=Draft, output=Review)

    @app.workflow
    async def write(ctx: RunContext, task: Task) -> Draft:
        draft = Draft(text=task.text)
        while True:  # a critic that is never satisfied
            review = await ctx.call(critic, draft)
            draft = await ctx.call(writer, review)

    result = await app.run("write", {"text": "a haiku about queues"})
    assert result.status == "failed"
    assert result.error["code"] == "loop_detected" and result.error["kind"] == "ping_pong"
    assert set(result.error["cycle"]) == {"writer", "critic"}
    # The outputs settle into a cycle after a few rounds; it is stopped on its second lap,
    # long before the run's turn limit (200).
    assert result.usage.calls <= 30


async def test_a_provider_failing_forever_costs_at_most_3_attempts_and_10_percent_retries():
    clock = VirtualClock()
    sim = CountingModel(SimModel("sim:small", SimConfig(error_rate=1.0), clock=clock))
    guards = GuardPolicies(
        breaker=BreakerPolicy(minimum_calls=10_000, window_size=10_000),  # isolate the retries
    )
    app, recorder = app_with(clock, guards=guards, models={"sim:small": sim})
    agent = Agent(name="summarizer", instructions="Summarize.", input=Task, output=Draft)

    @app.workflow
    async def summarize(ctx: RunContext, task: Task) -> Draft:
        return await ctx.call(agent, task)

    results = [await app.run("summarize", {"text": f"ticket {i}"}) for i in range(300)]
    assert all(r.error["code"] == "provider_error" for r in results)
    first_attempts = len(results)
    retries = sim.calls - first_attempts
    assert retries <= 0.10 * first_attempts + RetryPolicy().budget_min_retries
    attempts_per_run = Counter(
        s.run_id for s in recorder.spans if s.kind == "guard" and s.name == "retry"
    )
    assert max(attempts_per_run.values()) + 1 <= 3
    assert app.guards.retry_budget.denied > 0


async def test_same_error_streak_stops_the_agent_and_raises_an_alert():
    clock = VirtualClock()
    sim = CountingModel(SimModel("sim:small", SimConfig(error_rate=1.0), clock=clock))
    app, recorder = app_with(clock, models={"sim:small": sim})
    agent = Agent(name="flaky", instructions="x", input=Task, output=Draft)

    @app.workflow
    async def persist(ctx: RunContext, task: Task) -> Draft:
        for _ in range(10):  # a workflow that keeps asking
            outcome = await ctx.try_call(agent, task.model_copy(update={"text": f"{_}"}))
            if not hasattr(outcome, "code"):
                return outcome  # type: ignore[return-value]
        return Draft(text="gave up")

    result = await app.run("persist", {"text": "x"})
    assert result.error["code"] == "loop_detected" and result.error["kind"] == "error_streak"
    stops = [s for s in guard_events(recorder) if s.name == "agent_stopped"]
    assert len(stops) == 1 and stops[0].status == "alert"
    assert sim.calls == 5  # the streak, then every later call is refused without a request
    # The alert is an alert like the others (stored, sent to the webhook), not only a log line.
    assert app.alerts is not None
    await app.alerts.drain()
    [alert] = [a for a in app.alerts.delivered if a.kind == "agent_stopped"]
    assert (alert.subject, alert.metric, alert.run_id) == ("flaky", "error_streak", result.run_id)


async def test_an_outage_opens_the_breaker_the_fallback_answers_then_it_closes():
    clock = VirtualClock()
    primary = CountingModel(
        SimModel("sim:primary", SimConfig(outages=((10.0, 40.0),)), clock=clock)
    )
    backup = CountingModel(SimModel("simb:backup", SimConfig(), clock=clock))
    guards = GuardPolicies(
        breaker=BreakerPolicy(
            window_size=10, minimum_calls=5, wait_in_open_s=15, permitted_in_half_open=2
        ),
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.1),
    )
    app, recorder = app_with(
        clock,
        guards=guards,
        models={"sim:primary": primary, "simb:backup": backup},
        tiers={"small": "sim:primary"},
        fallbacks={"small": ("simb:backup",)},
        prices={"simb": ModelPrice(input_per_mtok=D(1), output_per_mtok=D(1))},
    )
    agent = Agent(name="answerer", instructions="Answer.", input=Task, output=Draft)

    @app.workflow
    async def answer(ctx: RunContext, task: Task) -> Draft:
        return await ctx.call(agent, task)

    results = []
    for i in range(80):  # one request a second for 80 s; the outage is 10-40 s
        results.append(await app.run("answer", {"text": f"q{i}"}))
        await clock.sleep(1)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:1]
    states = [
        s.output["state"]
        for s in guard_events(recorder)
        if s.name == "breaker" and s.output["key"] == "model:sim:primary"
    ]
    assert states[:3] == ["OPEN", "HALF_OPEN", "OPEN"] or "OPEN" in states
    assert states[-1] == "CLOSED"
    assert app.guards.breakers.get("model:sim:primary").state == "CLOSED"
    assert backup.calls >= 30, "the fallback provider answered during the outage"
    # Once open, the primary was not hammered: far fewer calls than requests in the outage.
    during = primary.errors["ProviderError"]
    assert during < 30


async def test_a_429_storm_is_queued_by_the_limiter_and_every_run_completes():
    clock = VirtualClock()
    sim = CountingModel(SimModel("sim:small", SimConfig(rpm=60), clock=clock))
    guards = GuardPolicies(limits={"model:sim:small": RateLimit(rpm=60, burst_s=1)})
    app, _ = app_with(clock, guards=guards, models={"sim:small": sim})
    agent = Agent(name="triage", instructions="Triage.", input=Task, output=Draft)

    @app.workflow
    async def triage(ctx: RunContext, task: Task) -> Draft:
        return await ctx.call(agent, task)

    results = await asyncio.gather(
        *(app.run("triage", {"text": f"ticket {i}"}, priority="batch") for i in range(120))
    )
    assert all(r.ok for r in results)
    assert sim.calls == 120 and sim.errors["ProviderRateLimitError"] == 0
    assert clock.monotonic() >= 119  # 120 calls at one a second: queued, not dropped


async def test_without_the_limiter_the_same_storm_loses_runs():
    """The control for the test above: the provider's 429s exhaust retries."""
    clock = VirtualClock()
    sim = CountingModel(SimModel("sim:small", SimConfig(rpm=60), clock=clock))
    app, _ = app_with(clock, models={"sim:small": sim})
    agent = Agent(name="triage", instructions="Triage.", input=Task, output=Draft)

    @app.workflow
    async def triage(ctx: RunContext, task: Task) -> Draft:
        return await ctx.call(agent, task)

    results = await asyncio.gather(*(app.run("triage", {"text": f"t{i}"}) for i in range(120)))
    assert sim.errors["ProviderRateLimitError"] > 0
    assert not all(r.ok for r in results)


class Stage(BaseModel):
    text: str


async def test_a_budget_running_out_mid_pipeline_degrades_tier_by_tier_to_finish():
    """Past the degrade point calls go one tier cheaper; when even that tier's worst case no
    longer fits, the next cheaper one is tried before anything is refused."""
    clock = VirtualClock()
    prices = {
        "sim:large": ModelPrice(input_per_mtok=D(300), output_per_mtok=D(300)),
        "sim:medium": ModelPrice(input_per_mtok=D(100), output_per_mtok=D(100)),
        "sim:small": ModelPrice(input_per_mtok=D(3), output_per_mtok=D(3)),
    }
    guards = GuardPolicies(budget=BudgetPolicy(usd=D("0.60"), degrade_at=0.8))
    app, recorder = app_with(clock, guards=guards, prices=prices)
    stages = [
        Agent(
            name=f"stage{i}",
            instructions="Improve the text.",
            input=Stage,
            output=Stage,
            model="large",
            max_output_tokens=200,
        )
        for i in range(40)
    ]

    @app.workflow
    async def pipeline(ctx: RunContext, doc: Stage) -> Stage:
        for stage in stages:
            doc = await ctx.call(stage, doc)
        return doc

    result = await app.run("pipeline", {"text": "a long document " * 20})
    assert result.ok, result.error
    assert result.cost_usd <= D("0.60")
    degrades = [s.output for s in guard_events(recorder, result.run_id) if s.name == "degrade"]
    assert degrades[0]["from"] == "large" and "reason" not in degrades[0]  # the degrade point
    assert {"from": "medium", "to": "small", "reason": "does_not_fit"}.items() <= next(
        d for d in degrades if d.get("reason") == "does_not_fit"
    ).items()
    models = [s.model for s in recorder.spans_of(result.run_id, "model")]
    assert models[0] == "sim:large" and models[-1] == "sim:small"
    assert "sim:medium" in models


async def test_fifty_parallel_calls_racing_for_the_last_dollar_in_a_real_run():
    clock = VirtualClock()
    guards = GuardPolicies(budget=BudgetPolicy(usd=D("0.05"), degrade_at=1.0))
    sim = SimConfig(latency_s=0.5)
    app, _ = app_with(
        clock,
        guards=guards,
        sim=sim,
        prices={"sim": ModelPrice(input_per_mtok=D(100), output_per_mtok=D(100))},
    )
    agent = Agent(name="w", instructions="x", input=Task, output=Draft, max_output_tokens=50)

    @app.workflow
    async def fan(ctx: RunContext, task: Task) -> Draft:
        outcomes = await ctx.parallel(
            *(ctx.call(agent, Task(text=f"part {i}")) for i in range(50)), errors="return"
        )
        return Draft(text=str(len(outcomes)))

    result = await app.run("fan", {"text": "x"})
    assert result.status == "budget_exhausted"
    assert result.cost_usd <= D("0.05")


async def test_halting_a_run_cancels_its_model_call_and_ends_it_killed():
    clock = VirtualClock()
    app, _ = app_with(clock, sim=SimConfig(latency_s=30))
    agent = Agent(name="slow", instructions="x", input=Task, output=Draft)

    @app.workflow
    async def slow(ctx: RunContext, task: Task) -> Draft:
        return await ctx.call(agent, task)

    async with app:
        handle = await app.start("slow", {"text": "x"})
        await clock.sleep(1)  # the model call is in flight (30 s of latency)
        cancelled = app.guards.kill.halt(run_id=handle.run_id, reason="runaway")
        result = await handle.result()
    assert cancelled == 1
    assert result.status == "killed" and "runaway" in result.error["message"]
    assert clock.monotonic() < 30


async def test_a_daily_limit_pauses_a_batch_run_until_an_operator_raises_it(caplog):
    clock = VirtualClock(start=datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    guards = GuardPolicies(daily={"tenant:*": DailyLimit(usd=D("0.0001"))})
    app, recorder = app_with(clock, guards=guards)
    agent = Agent(name="a", instructions="x", input=Task, output=Draft)

    @app.workflow
    async def once(ctx: RunContext, task: Task) -> Draft:
        return await ctx.call(agent, task)

    async with app:
        critical = await app.run("once", {"text": "x"}, tenant="acme", priority="critical")
        assert critical.status == "budget_exhausted"  # critical work is refused, not parked
        handle = await app.start("once", {"text": "y"}, tenant="acme", priority="batch")
        await clock.sleep(60)
        assert not handle.done(), "paused, not failed"
        # Not silently: the log says why, and that only an operator can help this one.
        assert "paused: the daily limit of tenant:acme" in caplog.text
        assert "a new day will not help" in caplog.text
        app.guards.daily.raise_limit("tenant:*", DailyLimit(usd=D("10")))
        result = await handle.result()
        assert clock.monotonic() < 900  # woke by the raise, not by the next day
    assert result.ok
    assert any(s.name == "paused" for s in guard_events(recorder, handle.run_id))


async def test_loop_guards_stop_a_runaway_agent_loop():
    clock = VirtualClock()
    app, _ = app_with(clock)
    agent = Agent(name="again", instructions="x", input=Task, output=Draft)

    @app.workflow
    async def forever(ctx: RunContext, task: Task) -> Draft:
        while True:
            await ctx.call(agent, task)  # same agent, same input

    result = await app.run("forever", {"text": "x"})
    assert result.error["code"] == "loop_detected"
    assert result.error["kind"] == "repeated_call"


def test_loop_detected_error_is_exported_for_workflows_that_catch_it():
    assert issubclass(LoopDetectedError, Exception)


async def test_a_result_predicate_counts_bad_answers_as_breaker_failures():
    clock = VirtualClock()
    guards = GuardPolicies(
        breaker=BreakerPolicy(
            window_size=2,
            minimum_calls=2,
            failure_predicate=lambda response: response.finish_reason == "length",
        )
    )
    app, _ = app_with(clock, guards=guards)
    agent = Agent(name="terse", instructions="x", input=Task, output=Draft, max_output_tokens=1)

    @app.workflow
    async def ask(ctx: RunContext, task: Task) -> Draft:
        return await ctx.call(agent, task)

    for i in range(2):
        await app.run("ask", {"text": f"{i}"})  # truncated answers: HTTP 200, but failures
    assert app.guards.breakers.get("model:sim:small").state == "OPEN"
    refused = await app.run("ask", {"text": "again"})
    assert refused.error["code"] == "circuit_open"


async def test_sub_workflows_share_the_parent_budget_and_recursion_is_bounded():
    clock = VirtualClock()
    guards = GuardPolicies(budget=BudgetPolicy(usd=None, tokens=None, model_calls=3))
    app, recorder = app_with(clock, guards=guards)
    agent = Agent(name="summarize", instructions="x", input=Task, output=Draft)

    @app.workflow
    async def child(ctx: RunContext, task: Task) -> Draft:
        first = await ctx.call(agent, task)
        return await ctx.call(agent, Task(text=first.text + " more"))

    @app.workflow
    async def parent(ctx: RunContext, task: Task) -> Draft:
        draft = await ctx.subflow("child", task)
        await ctx.call(agent, Task(text=f"after the child: {draft.text}"))
        return await ctx.call(agent, Task(text="one too many"))  # the 4th model call

    result = await app.run("parent", {"text": "go"})
    assert result.status == "budget_exhausted" and result.error["dimension"] == "model_calls"
    steps = [s.step_id for s in recorder.spans_of(result.run_id, "agent")]
    assert steps[:2] == ["1.1", "1.2"]  # the child's calls are numbered under its step

    @app.workflow
    async def recurse(ctx: RunContext, task: Task) -> Draft:
        return await ctx.subflow("recurse", task)

    looped = await app.run("recurse", {"text": "x"})
    assert looped.error["code"] == "loop_detected" and looped.error["kind"] == "recursion"

    # Agent calls nested inside agent calls (code running inside a function agent) count too.
    context: list[RunContext] = []

    async def nest(task: Task) -> Draft:
        return await context[0].call(nested, Task(text=task.text + "."))

    nested = FunctionAgent(name="nest", fn=nest, input=Task, output=Draft)

    @app.workflow
    async def nesting(ctx: RunContext, task: Task) -> Draft:
        context.append(ctx)
        return await ctx.call(nested, task)

    deep = await app.run("nesting", {"text": "x"})
    assert deep.error["code"] == "loop_detected" and deep.error["kind"] == "recursion"
    assert deep.error["depth"] == LoopPolicy().max_depth + 1

    @app.workflow
    async def lost(ctx: RunContext, task: Task) -> Draft:
        return await ctx.subflow("no_such_workflow", task)

    missing = await app.run("lost", {"text": "x"})
    assert missing.error["code"] == "unknown_name" and "child" in missing.error["known"]
