"""The guard chain: its order, and each step's acquire/settle on success, failure and
cancellation (FakeModel + FakeClock; no sleeps)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from pydantic import BaseModel

from corral import Agent, RunContext
from corral.clock import Clock
from corral.errors import (
    BudgetExhaustedError,
    CircuitOpenError,
    KilledError,
    LimitError,
    LoopDetectedError,
    ProviderError,
    ProviderRateLimitError,
    UsageError,
)
from corral.guards import BreakerPolicy, BudgetPolicy, GuardPolicies, LoopPolicy, RateLimit
from corral.guards.chain import Guards, RunGuards
from corral.guards.policy import CachePolicy, RetryPolicy
from corral.guards.step import STEP_NAMES, GuardEvent, ModelCall, Next
from corral.model import Message, ModelRequest, ModelResponse
from corral.state.memory import MemoryCache
from corral.testing import FakeClock, FakeModel, VirtualClock
from corral.testing._model import reply
from tests.helpers import ephemeral_app

D = Decimal
WORST, INPUT, PRICE = D("0.10"), D("0.01"), D("0.04")


class FlatPricer:
    """Every call's worst case is $0.10, its input $0.01, and every answer costs $0.04."""

    def call_costs(self, model: str, input_tokens: int, max_output_tokens: int) -> tuple[D, D]:
        return WORST, INPUT

    def price(self, model: str, response: ModelResponse) -> D:
        return PRICE


def request(model: str = "fake:a") -> ModelRequest:
    return ModelRequest(model=model, messages=(Message(role="user", content="x" * 40),))


def guards(clock: Clock | None = None, **policies: object) -> Guards:
    return Guards(GuardPolicies(**policies), clock or FakeClock(), pricer=FlatPricer())  # type: ignore[arg-type]


class Events:
    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.events: list[GuardEvent] = []

    async def __call__(self, event: GuardEvent) -> None:
        self.kinds.append(event.kind)
        self.events.append(event)


def call_of(run: RunGuards, events: Events | None = None, **options: bool) -> ModelCall:
    return ModelCall(run, "writer", 30.0, events or Events(), **options)


def run_of(g: Guards, priority: str = "interactive") -> RunGuards:
    return g.run("r1", priority=priority, tenant="acme", user=None)


class Hanging:
    """A provider that never answers until the test lets it (to cancel calls in flight)."""

    name = "fake:a"

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


# -- the order --------------------------------------------------------------------------------


class Trace:
    """A custom step that notes when the call passes it."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    async def __call__(self, call: ModelCall, next: Next) -> ModelResponse:
        self.seen.append(self.name)
        return await next(call)


async def test_steps_run_in_the_documented_order():
    g = guards(limits={"model:fake:a": RateLimit(rpm=600)}, cache=CachePolicy(enabled=True))
    g.cache = MemoryCache()
    seen: list[str] = []
    for name in STEP_NAMES:
        g.add(Trace(name, seen), before=name)
    assert [n for n, _ in g.steps() if not n.startswith("custom:")] == list(STEP_NAMES)

    await call_of(run_of(g)).call([FakeModel(["ok"], name="fake:a")], request())

    assert seen == list(STEP_NAMES)


def test_optional_steps_leave_the_chain_when_unconfigured():
    names = [n for n, _ in guards().steps()]
    assert "cache" not in names
    assert "limiter" not in names
    assert names[:2] == ["redact", "agent_breaker"]
    assert names[-1] == "provider"


def test_adding_before_an_unknown_step_is_refused():
    with pytest.raises(UsageError, match="unknown guard step"):
        guards().add(Trace("x", []), before="nowhere")  # type: ignore[arg-type]


class OutsideHoursError(LimitError):
    code = "outside_hours"


class OfficeHours:
    """Refuses `batch` runs' calls (the docstring example of `corral.guards.step`)."""

    async def __call__(self, call: ModelCall, next: Next) -> ModelResponse:
        if call.run.priority == "batch":
            raise OutsideHoursError("batch work runs 9-17 only", agent=call.agent)
        return await next(call)


async def test_a_custom_step_refuses_a_call_with_a_structured_error_before_the_budget():
    g = guards()
    g.add(OfficeHours(), before="budget")
    model = FakeModel(["ok"], name="fake:a")
    batch = run_of(g, priority="batch")

    with pytest.raises(OutsideHoursError) as refused:
        await call_of(batch).call([model], request())

    assert refused.value.to_dict() == {
        "code": "outside_hours",
        "message": "batch work runs 9-17 only",
        "agent": "writer",
    }
    assert model.requests == []  # never reached the provider
    assert batch.budget.account.reserved["usd"] == 0
    assert batch.budget.account.spent["model_calls"] == 0
    # The same step lets other runs through, in its place.
    answered = await call_of(run_of(g)).call([model], request())
    assert answered.text == "ok"


# -- budget -----------------------------------------------------------------------------------


async def test_budget_settles_a_success_at_its_price():
    g = guards()
    run = run_of(g)
    call = call_of(run)
    await call.call([FakeModel([reply("ok", input_tokens=10, output_tokens=5)])], request())
    assert call.cost == PRICE
    assert run.budget.account.spent == {
        "usd": PRICE,
        "tokens": 15,
        "model_calls": 1,
        "agent_turns": 0,
    }
    assert run.budget.account.reserved == {
        "usd": 0,
        "tokens": 0,
        "model_calls": 0,
        "agent_turns": 0,
    }


async def test_budget_keeps_the_input_of_a_failed_call_and_refunds_the_rest():
    g = guards()
    run = run_of(g)
    model = FakeModel([ProviderError("bad request", retryable=False, status=400)])
    with pytest.raises(ProviderError):
        await call_of(run).call([model], request())
    assert run.budget.account.spent["usd"] == INPUT
    assert run.budget.account.reserved["usd"] == 0


async def test_budget_refuses_before_the_provider_when_the_worst_case_does_not_fit():
    g = guards(budget=BudgetPolicy(usd=D("0.05")))
    run = run_of(g)
    events = Events()
    model = FakeModel([], name="fake:a")
    with pytest.raises(BudgetExhaustedError):
        await call_of(run, events).call([model], request())
    assert events.kinds == ["refused"]
    assert model.requests == []


async def test_cancelled_in_flight_keeps_the_input_and_releases_every_guard():
    g = guards(limits={"model:fake:a": RateLimit(tpm=60_000)})
    run = run_of(g)
    model = Hanging()
    task = asyncio.ensure_future(call_of(run).call([model], request()))
    await model.entered.wait()
    assert run.budget.account.reserved["model_calls"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    account = run.budget.account
    assert account.reserved == {"usd": 0, "tokens": 0, "model_calls": 0, "agent_turns": 0}
    assert account.spent["usd"] == INPUT  # it was sent: the provider may bill the input
    assert g.breakers.states() == {
        "agent:writer": "CLOSED",
        "model:fake:a": "CLOSED",
        "provider:fake": "CLOSED",
    }
    assert g.limiter.queue_depth == 0


async def test_cancelled_while_queued_costs_nothing():
    clock = VirtualClock()  # many sleepers (the queue's expiry, its timer): each at its time
    g = guards(clock, limits={"model:fake:a": RateLimit(rpm=1, burst_s=1)})
    run = run_of(g)
    await call_of(run).call([FakeModel(["ok"], name="fake:a")], request())  # the only request
    spent = run.budget.account.spent["usd"]
    model = FakeModel([], name="fake:a")
    task = asyncio.ensure_future(call_of(run).call([model], request()))
    for _ in range(10):
        await asyncio.sleep(0)
    assert g.limiter.queue_depth == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert model.requests == []
    assert run.budget.account.spent["usd"] == spent  # never sent: released whole
    assert run.budget.account.reserved["usd"] == 0
    assert g.limiter.queue_depth == 0


# -- breakers ---------------------------------------------------------------------------------


async def test_breakers_count_failures_and_then_refuse_without_calling():
    g = guards(
        breaker=BreakerPolicy(window_size=2, minimum_calls=2),
        retry=RetryPolicy(max_attempts=1),
    )
    run = run_of(g)
    boom = ProviderError("down", retryable=True, status=503)
    model = FakeModel([boom, boom], name="fake:a")
    events = Events()
    for _ in range(2):
        with pytest.raises(ProviderError):
            await call_of(run, events).call([model], request())
    assert "breaker" in events.kinds
    with pytest.raises(CircuitOpenError):
        await call_of(run).call([model], request())
    model.assert_done()


async def test_client_errors_do_not_move_breakers():
    g = guards(breaker=BreakerPolicy(window_size=2, minimum_calls=2))
    run = run_of(g)
    bad = ProviderError("bad", retryable=False, status=400)
    model = FakeModel([bad, bad, "ok"], name="fake:a")
    for _ in range(2):
        with pytest.raises(ProviderError):
            await call_of(run).call([model], request())
    assert (await call_of(run).call([model], request())).text == "ok"
    assert set(g.breakers.states().values()) == {"CLOSED"}


# -- limiter ----------------------------------------------------------------------------------


async def test_a_429_blocks_the_key_for_its_retry_after():
    clock = VirtualClock()
    g = guards(
        clock, limits={"model:fake:a": RateLimit(rpm=600)}, retry=RetryPolicy(max_attempts=1)
    )
    model = FakeModel([ProviderRateLimitError("slow down", retry_after_s=5)], name="fake:a")
    with pytest.raises(ProviderRateLimitError):
        await call_of(run_of(g)).call([model], request())
    model.push("ok")
    events = Events()
    await call_of(run_of(g), events).call([model], request())
    assert events.kinds == ["queued"]
    assert events.events[0].detail["waited_s"] >= 5


# -- retry, error streak, fallback ------------------------------------------------------------


async def test_retries_wait_on_the_clock_and_then_answer():
    clock = FakeClock()
    g = guards(clock)
    flaky = ProviderError("flaky", retryable=True, status=502)
    model = FakeModel([flaky, flaky, "ok"], name="fake:a")
    events = Events()
    call = call_of(run_of(g), events)
    assert (await call.call([model], request())).text == "ok"
    assert events.kinds == ["retry", "retry"]
    assert call.attempt == 3
    assert clock.monotonic() == pytest.approx(
        sum(e.detail["delay_s"] for e in events.events), abs=0.01
    )


async def test_an_error_streak_stops_the_agent_without_more_retries():
    g = guards(loops=LoopPolicy(error_streak=2), retry=RetryPolicy(max_attempts=5))
    flaky = ProviderError("flaky", retryable=True, status=502)
    model = FakeModel([flaky, flaky], name="fake:a")
    events = Events()
    run = run_of(g)
    with pytest.raises(ProviderError):
        await call_of(run, events).call([model], request())
    assert events.kinds == ["retry", "agent_stopped"]
    assert "writer" in run.loops.stopped
    model.assert_done()


class Alarms:
    """Collects what the guards raise through `Guards.alarm`."""

    def __init__(self) -> None:
        self.raised: list[dict[str, object]] = []

    def guard_alert(self, **alert: object) -> None:
        self.raised.append(alert)


async def test_an_agent_stopped_by_an_error_streak_is_not_served_by_the_fallback_model():
    """The streak used to stop the agent and then let the tier's next model answer for it."""
    g = guards(loops=LoopPolicy(error_streak=2), retry=RetryPolicy(max_attempts=5))
    g.alarm = alarms = Alarms()
    flaky = ProviderError("flaky", retryable=True, status=502)
    primary = FakeModel([flaky, flaky], name="fake:a")
    backup = FakeModel(["from b"], name="fake:b")
    events = Events()
    run = run_of(g)
    with pytest.raises(ProviderError):
        await call_of(run, events).call([primary, backup], request())
    assert events.kinds == ["retry", "agent_stopped"]
    assert backup.requests == []
    assert alarms.raised == [
        {
            "kind": "agent_stopped",
            "subject": "writer",
            "metric": "error_streak",
            "value": 2.0,
            "limit": 2.0,
            "run_id": "r1",
            "message": "agent writer stopped for the rest of run r1: the same error from fake:a "
            "2 times in a row (provider_error:502)",
        }
    ]
    # A call of the stopped agent already past the loop guard (a parallel branch) is refused at
    # its next attempt, on any model.
    with pytest.raises(LoopDetectedError, match="was stopped in this run"):
        await call_of(run, events).call([backup], request("fake:b"))
    assert backup.requests == []


async def test_fallback_tries_the_next_model_after_retryable_failures():
    g = guards(retry=RetryPolicy(max_attempts=1))
    primary = FakeModel([ProviderError("down", retryable=True, status=503)], name="fake:a")
    backup = FakeModel(["from b"], name="fake:b")
    events = Events()
    answer = await call_of(run_of(g), events).call([primary, backup], request())
    assert answer.text == "from b"
    assert backup.requests[0].model == "fake:b"
    assert events.events[0].detail == {
        "from": "fake:a",
        "to": "fake:b",
        "because": "provider_error",
    }


async def test_a_non_retryable_failure_skips_the_fallback():
    g = guards()
    primary = FakeModel([ProviderError("bad", retryable=False, status=400)], name="fake:a")
    backup = FakeModel([], name="fake:b")
    with pytest.raises(ProviderError):
        await call_of(run_of(g)).call([primary, backup], request())
    assert backup.requests == []


# -- kill switch ------------------------------------------------------------------------------


async def test_a_halt_refuses_new_calls_and_cancels_calls_in_flight():
    g = guards()
    run = run_of(g)
    model = Hanging()
    task = asyncio.ensure_future(call_of(run).call([model], request()))
    await model.entered.wait()
    assert g.kill.halt(run_id="r1", reason="runaway") == 1
    with pytest.raises(KilledError):
        await task
    assert run.budget.account.reserved["usd"] == 0
    with pytest.raises(KilledError):
        await call_of(run).call([FakeModel([], name="fake:a")], request())


# -- cache ------------------------------------------------------------------------------------


async def test_a_cache_hit_costs_nothing_and_skips_the_steps_below():
    clock = FakeClock()
    g = guards(clock, cache=CachePolicy(enabled=True))
    g.cache = MemoryCache()
    model = FakeModel(["ok"], name="fake:a")
    run = run_of(g)
    first = call_of(run)
    await first.call([model], request())
    second = call_of(run)
    events = Events()
    second = call_of(run, events)
    hit = await second.call([model], request())
    assert hit.cached and hit.text == "ok"
    assert second.cost == 0
    assert events.kinds == ["cache_hit"]
    assert run.budget.account.spent["model_calls"] == 1
    model.assert_done()


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    answer: str


async def test_an_app_runs_a_custom_step_and_ends_the_run_with_its_structured_refusal():
    app, _, _ = ephemeral_app(
        models={"fake:a": FakeModel([{"answer": "yes"}], name="fake:a")},
        tiers={"small": "fake:a"},
    )
    app.guards.add(OfficeHours(), before="budget")
    agent = Agent(name="writer", instructions="x", input=Question, output=Answer)

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(agent, q)

    refused = await app.run("ask", {"text": "q"}, priority="batch")
    assert refused.error is not None
    assert refused.error["code"] == "outside_hours"
    assert refused.error["agent"] == "writer"
    answered = await app.run("ask", {"text": "q"})
    assert answered.ok and answered.output.answer == "yes"
