"""Budgets under load and with other tokenizers (issue #17, 0d and 19): a call that does not
fit waits for the run's calls in flight to settle before it is refused; each model's count of
input tokens is learned, so a tokenizer that counts 4x the estimate cannot overspend a run;
a cheaper tier is tried before a call is refused."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from corral import Agent, App, AppConfig, ModelPrice, RunContext
from corral.guards import BudgetPolicy, GuardPolicies
from corral.guards.step import estimate_input_tokens
from corral.model import Message, ModelRequest, ModelResponse
from corral.testing import VirtualClock

D = Decimal


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    answer: str


class Slow:
    """A model that takes a second of virtual time and answers with few output tokens; it
    counts `ratio` x Corral's estimate of the input (another tokenizer)."""

    def __init__(self, name: str, clock: VirtualClock, ratio: float = 1.0) -> None:
        self.name = name
        self.clock = clock
        self.ratio = ratio
        self.calls = 0
        self.in_flight = self.most_in_flight = 0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.clock.sleep(1)
        finally:
            self.in_flight -= 1
        counted = int(estimate_input_tokens(request) * self.ratio)
        return ModelResponse(
            text='{"answer": "a"}', model=self.name, input_tokens=counted, output_tokens=10
        )


def _app(budget: BudgetPolicy, models: dict[str, Slow], tiers: dict[str, str]) -> App:
    clock = next(iter(models.values())).clock
    return App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            tiers=tiers,
            # $100 per million output tokens: 512 tokens of worst case are $0.0512 a call;
            # the 10 a call really writes are $0.001.
            prices={m: ModelPrice(input_per_mtok=D(100), output_per_mtok=D(100)) for m in models},
            guards=GuardPolicies(budget=budget),
        ),
        models=dict(models),
        clock=clock,
    )


async def test_parallel_calls_wait_for_reservations_in_flight_instead_of_being_refused():
    """50 parallel calls on $1 stopped at $0.59: those that did not fit at once were refused
    although the calls in flight settled for a fraction of their worst case."""
    clock = VirtualClock()
    model = Slow("fake:m", clock)
    app = _app(BudgetPolicy(usd=D("1")), {"fake:m": model}, {"small": "fake:m"})
    agent = Agent(name="a", instructions="x", input=Question, output=Answer)

    @app.workflow
    async def fan_out(ctx: RunContext, q: Question) -> Answer:
        answers = await ctx.parallel(*(ctx.call(agent, Question(text=f"{i}")) for i in range(50)))
        return answers[0]

    async with app:
        result = await app.run("fan_out", {"text": "go"})
    assert result.ok, result.error
    assert model.calls == 50
    assert model.most_in_flight < 50, "some calls waited for room"
    assert result.cost_usd <= D("1")


async def test_a_tokenizer_that_counts_4x_cannot_overspend_a_run():
    """A provider that counts 4x Corral's estimate of the input billed a $1 run $2.04."""
    clock = VirtualClock()
    model = Slow("fake:m", clock, ratio=4.0)
    app = _app(
        BudgetPolicy(usd=D("0.5"), tokens=None, model_calls=None),
        {"fake:m": model},
        {"small": "fake:m"},
    )
    agent = Agent(name="a", instructions="x", input=Question, output=Answer)
    text = "a long question " * 200  # ~800 estimated tokens, 3,200 counted: $0.32 a call

    @app.workflow
    async def many(ctx: RunContext, q: Question) -> Answer:
        answers = await ctx.parallel(
            *(ctx.call(agent, Question(text=f"{i} {text}")) for i in range(8))
        )
        return answers[0]

    async with app:
        result = await app.run("many", {"text": "go"})
    first_call_error = D(3 * 800 + 100) * D(100) / D(1_000_000)  # one call's input, 3x under
    assert result.cost_usd <= D("0.5") + first_call_error
    assert result.status == "budget_exhausted"


def test_input_is_estimated_per_script():
    def tokens(text: str) -> int:
        return estimate_input_tokens(
            ModelRequest(model="m", messages=[Message(role="user", content=text)])
        )

    assert tokens("hello world " * 100) < 320  # about 4 characters a token
    assert tokens("你好世界" * 100) >= 400  # one token a CJK character at least
    assert tokens("Привет мир " * 100) >= 500  # other scripts: about 2 characters a token


async def test_a_call_that_does_not_fit_tries_a_cheaper_tier_before_it_is_refused():
    """A $0.02 run stopped at 63% spent without trying the cheaper tier."""
    clock = VirtualClock()
    big, small = Slow("fake:big", clock), Slow("fake:small", clock)
    app = App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            tiers={"medium": "fake:big", "small": "fake:small"},
            prices={
                "fake:big": ModelPrice(input_per_mtok=D(10), output_per_mtok=D(40)),
                "fake:small": ModelPrice(input_per_mtok=D(1), output_per_mtok=D(2)),
            },
            guards=GuardPolicies(budget=BudgetPolicy(usd=D("0.02"), degrade_at=0.8)),
        ),
        models={"fake:big": big, "fake:small": small},
        clock=clock,
    )
    agent = Agent(name="a", instructions="x", input=Question, output=Answer, model="medium")

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(agent, q)

    async with app:
        # 512 output tokens at $40 per million: $0.0205 of worst case on `medium`, over $0.02.
        result = await app.run("ask", {"text": "q"})
    assert result.ok, result.error
    assert (big.calls, small.calls) == (0, 1)
