"""The simulator: schema-valid, deterministic output, and every fault reaching the workflow as a
structured error."""

from __future__ import annotations

import random

import pytest
from pydantic import BaseModel, Field

from corral import Agent, RunContext, SimConfig, tool
from corral.errors import ProviderError, ProviderRateLimitError, ProviderTimeoutError
from corral.model import Message, ModelRequest
from corral.models.sim import SimModel, value_for_schema
from corral.testing import FakeClock
from tests.helpers import ephemeral_app


class Inner(BaseModel):
    name: str = Field(max_length=12)
    tags: list[str] = Field(min_length=2)


class Rich(BaseModel):
    kind: str
    level: int = Field(ge=1, le=3)
    ratio: float = Field(ge=0, le=1)
    ok: bool
    inner: Inner
    maybe: Inner | None = None


class Ticket(BaseModel):
    text: str


def request(text: str = "the printer is on fire", schema: dict | None = None) -> ModelRequest:
    return ModelRequest(
        model="sim:small",
        messages=(Message(role="system", content="x"), Message(role="user", content=text)),
        output_schema=schema or Rich.model_json_schema(),
    )


@pytest.mark.parametrize("seed", range(20))
def test_generated_values_satisfy_the_schema(seed):
    schema = Rich.model_json_schema()
    value = value_for_schema(schema, random.Random(seed), ["printer", "fire", "smoke"], schema)
    Rich.model_validate(value)


async def test_same_seed_same_answers_different_seed_different_answers():
    a = SimModel(config=SimConfig(seed=1), clock=FakeClock())
    b = SimModel(config=SimConfig(seed=1), clock=FakeClock())
    c = SimModel(config=SimConfig(seed=2), clock=FakeClock())
    first = [(await a.complete(request(f"t{i}"))).text for i in range(5)]
    assert first == [(await b.complete(request(f"t{i}"))).text for i in range(5)]
    assert first != [(await c.complete(request(f"t{i}"))).text for i in range(5)]


async def test_latency_is_spent_on_the_injected_clock():
    clock = FakeClock()
    sim = SimModel(config=SimConfig(latency_s=2.0), clock=clock)
    response = await sim.complete(request())
    assert clock.monotonic() == pytest.approx(2.0) and response.latency_s == pytest.approx(2.0)
    assert response.input_tokens > 0 and response.output_tokens > 0


@pytest.mark.parametrize(
    ("config", "error"),
    [
        pytest.param(SimConfig(error_rate=1.0), ProviderError, id="500"),
        pytest.param(SimConfig(rate_limit_rate=1.0), ProviderRateLimitError, id="429"),
        pytest.param(SimConfig(timeout_rate=1.0), ProviderTimeoutError, id="timeout"),
    ],
)
async def test_fault_raises_a_retryable_provider_error(config, error):
    sim = SimModel(config=config, clock=FakeClock())
    with pytest.raises(error) as info:
        await sim.complete(request())
    assert info.value.retryable is True
    if error is ProviderRateLimitError:
        assert 1 <= info.value.retry_after_s <= 5


async def test_outage_window_follows_the_clock():
    clock = FakeClock()
    sim = SimModel(config=SimConfig(outages=((10.0, 20.0),)), clock=clock)
    await sim.complete(request())
    clock.advance(15)
    with pytest.raises(ProviderError) as info:
        await sim.complete(request())
    assert info.value.status == 503
    clock.advance(10)
    await sim.complete(request())


async def test_error_rate_is_roughly_honoured():
    sim = SimModel(config=SimConfig(error_rate=0.3, seed=3), clock=FakeClock())
    failures = 0
    for i in range(400):
        try:
            await sim.complete(request(f"ticket {i}"))
        except ProviderError:
            failures += 1
    assert 80 <= failures <= 160


@tool
def search(query: str, limit: int = 3) -> list[str]:
    """Search."""
    return [query] * limit


@pytest.mark.parametrize(
    ("sim", "code"),
    [
        pytest.param(SimConfig(error_rate=1.0), "provider_error", id="500"),
        pytest.param(SimConfig(rate_limit_rate=1.0), "provider_error", id="429"),
        pytest.param(SimConfig(timeout_rate=1.0), "provider_error", id="timeout"),
        pytest.param(SimConfig(malformed_rate=1.0), "invalid_output", id="malformed-json"),
        pytest.param(SimConfig(outages=((0.0, 99.0),)), "provider_error", id="outage"),
    ],
)
async def test_each_fault_reaches_the_workflow_as_a_structured_error(sim, code):
    app, _, _ = ephemeral_app(sim=sim)
    agent = Agent(name="a", instructions="x", input=Ticket, output=Rich)

    @app.workflow
    async def wf(ctx: RunContext, t: Ticket) -> Rich:
        return await ctx.call(agent, t)

    result = await app.run("wf", {"text": "help"})
    assert result.status == "failed" and result.output is None
    assert result.error["code"] == code and result.error["agent"] == "a"


async def test_hallucinated_tool_arguments_are_caught_and_counted():
    app, recorder, _ = ephemeral_app(sim=SimConfig(hallucinated_args_rate=1.0))
    agent = Agent(name="a", instructions="x", input=Ticket, output=Inner, tools=(search,))

    @app.workflow
    async def wf(ctx: RunContext, t: Ticket) -> Inner:
        return await ctx.call(agent, t)

    result = await app.run("wf", {"text": "find owls"})
    tool_spans = recorder.spans_of(result.run_id, "tool")
    assert tool_spans and all(s.status == "invalid_args" for s in tool_spans)
    assert "confidence_threshold" in str(tool_spans[0].error)
