"""Agent calls: validation at both ends, the bounded repair, tools, fallbacks (offline, FakeModel)."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest
from pydantic import BaseModel, Field

from corral import (
    Agent,
    AgentError,
    AgentLimits,
    FunctionAgent,
    ModelPrice,
    RunContext,
    function_agent,
    tool,
)
from corral.errors import ProviderError
from corral.guards import GuardPolicies, LoopPolicy
from corral.model import ModelResponse, ToolCall
from corral.testing import FakeModel, reply
from tests.helpers import ephemeral_app


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    answer: str
    score: int = Field(ge=1, le=5)


def make(model: FakeModel, **agent_kw: object):
    app, recorder, _ = ephemeral_app(models={"fake:model": model}, tiers={"small": "fake:model"})
    agent = Agent(
        name="answerer", instructions="Answer.", input=Question, output=Answer, **agent_kw
    )

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(agent, q)

    return app, recorder, agent


async def test_valid_output_is_returned_typed_with_usage_and_spans():
    model = FakeModel([{"answer": "42", "score": 5}])
    app, recorder, _ = make(model)
    result = await app.run("ask", {"text": "meaning of life?"})
    assert result.ok and result.output == Answer(answer="42", score=5)
    assert result.usage.calls == 1 and result.usage.input_tokens == 10
    # fake:model has no price anywhere: charged conservatively ($15 / $75 per million tokens).
    assert result.cost_usd == Decimal("0.000525")
    kinds = [(s.kind, s.step_id, s.status) for s in recorder.spans_of(result.run_id)]
    assert ("model", "1.1", "ok") in kinds and ("agent", "1", "ok") in kinds
    request = model.requests[0]
    assert request.output_schema == Answer.model_json_schema()
    assert json.loads(request.messages[-1].content) == {"text": "meaning of life?"}
    model.assert_done()


async def test_an_answer_is_priced_by_the_model_the_provider_says_it_used():
    """The guard chain prices the provider's answer itself: by the exact model the response
    names, into the result, the budget and the spans; the provider's object stays unpriced."""
    answered = ModelResponse(
        text='{"answer": "42", "score": 4}',
        model="fake:model-2025",
        input_tokens=100,
        output_tokens=10,
    )
    model = FakeModel([answered])
    app, recorder, _ = ephemeral_app(
        models={"fake:model": model},
        tiers={"small": "fake:model"},
        prices={
            "fake:model-2025": ModelPrice(input_per_mtok=Decimal(2), output_per_mtok=Decimal(4))
        },
    )
    agent = Agent(name="answerer", instructions="Answer.", input=Question, output=Answer)

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        answer = await ctx.call(agent, q)
        left = ctx.budget["usd"]
        assert left is not None and Decimal(left) == Decimal(5) - Decimal("0.00024")
        return answer

    result = await app.run("ask", {"text": "q"})
    assert result.ok, result.error
    assert result.cost_usd == Decimal("0.00024")  # 100 x $2 + 10 x $4 per million tokens
    model_span = next(s for s in recorder.spans_of(result.run_id, "model"))
    assert model_span.cost_usd == Decimal("0.00024") and model_span.model == "fake:model-2025"
    assert answered.cost_usd is None


async def test_invalid_output_gets_exactly_one_repair_with_the_error_fed_back():
    model = FakeModel([{"answer": "x", "score": 9}, {"answer": "x", "score": 4}])
    app, _, _ = make(model)
    result = await app.run("ask", {"text": "q"})
    assert result.ok and result.output.score == 4
    repair = model.requests[1].messages[-1].content
    assert "score" in repair and "less than or equal to 5" in repair
    model.assert_done()


async def test_still_invalid_after_repair_is_a_structured_agent_error_never_garbage():
    model = FakeModel(["not json at all", '{"answer": "x"}'])
    app, recorder, _ = make(model)
    result = await app.run("ask", {"text": "q"})
    assert result.status == "failed" and result.output is None
    assert result.error["code"] == "invalid_output"
    assert result.error["agent"] == "answerer"
    assert result.error["details"]["errors"][0]["loc"] == "score"
    assert result.usage.calls == 2  # the repair attempt is charged
    agent_span = next(s for s in recorder.spans_of(result.run_id, "agent"))
    assert agent_span.status == "error"


async def test_invalid_payload_is_rejected_before_any_model_call():
    model = FakeModel([])
    app, _, agent = make(model)

    @app.workflow
    async def bad(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(agent, {"txt": q.text})

    result = await app.run("bad", {"text": "q"})
    assert result.error["code"] == "invalid_input"
    assert "text" in result.error["message"] and "Field required" in result.error["message"]
    assert model.requests == []


async def test_an_instance_of_the_input_model_is_checked_again_at_the_handoff():
    """The usual handoff passes a model instance of the receiver's own input type; it is
    validated from its JSON, so one built without validation (or mutated) still cannot pass."""
    model = FakeModel([{"answer": "ok", "score": 3}])
    app, _, agent = make(model)

    @app.workflow
    async def unchecked(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(agent, Question.model_construct())  # no `text`

    @app.workflow
    async def checked(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(agent, q)

    result = await app.run("unchecked", {"text": "q"})
    assert result.error["code"] == "invalid_input"
    assert "text" in result.error["message"] and "Field required" in result.error["message"]
    assert model.requests == []
    result = await app.run("checked", {"text": "what is 6 x 7?"})
    assert result.ok
    # The prompt carries the JSON the check validated.
    assert json.loads(model.requests[0].messages[-1].content) == {"text": "what is 6 x 7?"}


async def test_provider_error_reaches_the_workflow_as_agent_error():
    """After its retries (3 attempts by default, each recorded as a guard event)."""
    model = FakeModel([ProviderError("boom", retryable=True, provider="fake", status=503)] * 3)
    app, recorder, _ = make(model)
    result = await app.run("ask", {"text": "q"})
    assert len(model.requests) == 3
    retries = [s for s in recorder.spans_of(result.run_id, "guard") if s.name == "retry"]
    assert [s.output["attempt"] for s in retries] == [2, 3]
    assert result.error["code"] == "provider_error"
    assert result.error["retryable"] is True
    assert result.error["details"]["status"] == 503


async def test_fallback_agent_answers_when_the_primary_fails():
    primary = FakeModel(
        [ProviderError("down", retryable=True, status=503)] * 3, name="fake:primary"
    )
    backup = FakeModel([{"answer": "from backup", "score": 3}], name="fake:backup")
    app, _, _ = ephemeral_app(models={"fake:primary": primary, "fake:backup": backup})
    general = Agent(
        name="generalist", instructions="x", input=Question, output=Answer, model="fake:backup"
    )
    special = Agent(
        name="specialist",
        instructions="x",
        input=Question,
        output=Answer,
        model="fake:primary",
        fallback=general,
    )

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(special, q)

    result = await app.run("ask", {"text": "q"})
    assert result.ok and result.output.answer == "from backup"


@tool
def lookup(topic: str, limit: int = 1) -> list[str]:
    """Look a topic up."""
    return [f"fact about {topic}"] * limit


async def test_tool_call_runs_and_its_result_goes_back_to_the_model():
    model = FakeModel(
        [
            reply(
                tool_calls=[
                    ToolCall(id="c1", name="lookup", arguments={"topic": "owls", "limit": 2})
                ]
            ),
            {"answer": "owls", "score": 2},
        ]
    )
    app, recorder, _ = make(model, tools=(lookup,))
    result = await app.run("ask", {"text": "owls?"})
    assert result.ok
    tool_msg = model.requests[1].messages[-1]
    assert tool_msg.role == "tool" and json.loads(tool_msg.content) == {
        "result": ["fact about owls"] * 2
    }
    assert model.requests[0].tools[0].parameters["required"] == ["topic"]
    tool_span = recorder.spans_of(result.run_id, "tool")[0]
    assert tool_span.status == "ok" and tool_span.parent_id == "1"


@pytest.mark.parametrize(
    ("arguments", "name", "expect"),
    [
        pytest.param(
            {"topic": "owls", "made_up": 1},
            "lookup",
            "made_up: Extra inputs",
            id="hallucinated-parameter",
        ),
        pytest.param({"limit": 2}, "lookup", "topic", id="missing-parameter"),
        pytest.param({"topic": "owls", "limit": "many"}, "lookup", "limit", id="wrong-type"),
        pytest.param({"topic": "owls"}, "delete_everything", "unknown_tool", id="unknown-tool"),
    ],
)
async def test_bad_tool_arguments_never_run_the_tool_and_are_reported_to_the_model(
    arguments, name, expect
):
    calls: list[str] = []

    @tool(name="lookup")
    def spy(topic: str, limit: int = 1) -> str:
        """Look a topic up."""
        calls.append(topic)
        return "ran"

    model = FakeModel(
        [
            reply(tool_calls=[ToolCall(id="c1", name=name, arguments=arguments)]),
            {"answer": "ok", "score": 1},
        ]
    )
    app, recorder, _ = make(model, tools=(spy,))
    result = await app.run("ask", {"text": "q"})
    assert result.ok and calls == []
    fed_back = model.requests[1].messages[-1].content
    assert expect in fed_back
    assert recorder.spans_of(result.run_id, "tool")[0].status == "invalid_args"


async def test_too_many_invalid_tool_calls_fail_the_agent():
    bad = reply(tool_calls=[ToolCall(id="c", name="lookup", arguments={})])
    model = FakeModel([bad, bad])
    app, _, _ = make(model, tools=(lookup,), limits=AgentLimits(max_invalid_tool_calls=1))
    result = await app.run("ask", {"text": "q"})
    assert result.error["code"] == "tool_error"


async def test_function_agent_is_validated_like_any_agent():
    @function_agent
    def shout(q: Question) -> Answer:
        return Answer(answer=q.text.upper(), score=1)

    @function_agent
    def broken(q: Question) -> Answer:
        return Answer.model_construct(answer="x", score=99)

    app, recorder, _ = ephemeral_app()

    @app.workflow
    async def wf(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(shout, q)

    @app.workflow
    async def wf_bad(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(broken, q)

    assert (await app.run("wf", {"text": "hi"})).output.answer == "HI"
    bad = await app.run("wf_bad", {"text": "hi"})
    assert bad.error["code"] == "invalid_output" and bad.error["agent"] == "broken"


@function_agent
def divide(q: Question) -> Answer:
    return Answer(answer=str(1 / len(q.text.strip())), score=1)


async def test_a_function_agent_that_raises_fails_with_a_structured_agent_error(caplog):
    """It used to end the run `workflow_error: ZeroDivisionError`, past any fallback."""
    app, recorder, _ = ephemeral_app()

    @app.workflow
    async def wf(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(divide, q)

    @app.workflow
    async def caught(ctx: RunContext, q: Question) -> Answer:
        try:
            return await ctx.call(divide, q)
        except AgentError as exc:
            return Answer(answer=f"{exc.agent}:{exc.code}", score=2)

    result = await app.run("wf", {"text": " "})
    assert result.status == "failed"
    assert result.error["code"] == "function_error" and result.error["agent"] == "divide"
    assert result.error["details"] == {"type": "ZeroDivisionError", "message": "division by zero"}
    assert "the function raised ZeroDivisionError: division by zero" in result.error["message"]
    [span] = recorder.spans_of(result.run_id, "agent")
    assert span.status == "error" and span.error["code"] == "function_error"
    # The traceback is in the log, once, with the run's id.
    [line] = [r for r in caplog.records if r.getMessage().startswith("function agent divide")]
    assert line.exc_info is not None and line.exc_info[0] is ZeroDivisionError
    assert (await app.run("caught", {"text": " "})).output.answer == "divide:function_error"


async def test_a_raising_function_agent_hands_over_to_its_fallback_but_not_a_refusal():
    """A guard's refusal inside a function agent (its nested call hit the loop guard) stops the
    run as that refusal: it is not the agent's failure, and the fallback may not hide it."""

    @function_agent
    def steady(q: Question) -> Answer:
        return Answer(answer="fallback", score=3)

    inner = Agent(name="inner", instructions="x", input=Question, output=Answer)
    holder: dict[str, RunContext] = {}

    async def call_inner(q: Question) -> Answer:
        return await holder["ctx"].call(inner, q)

    fragile = FunctionAgent(name="fragile", fn=divide.fn, input=Question, output=Answer)
    nests = FunctionAgent(name="nests", fn=call_inner, input=Question, output=Answer)
    app, _, _ = ephemeral_app(guards=GuardPolicies(loops=LoopPolicy(max_depth=1)))

    @app.workflow
    async def wf(ctx: RunContext, q: Question) -> Answer:
        holder["ctx"] = ctx
        agent = fragile if q.text == "" else nests
        return await ctx.call(replace(agent, fallback=steady), q)

    assert (await app.run("wf", {"text": ""})).output.answer == "fallback"
    refused = await app.run("wf", {"text": "q"})
    assert refused.error["code"] == "loop_detected" and refused.error["kind"] == "recursion"


async def test_a_function_agent_whose_nested_agent_fails_fails_with_that_error():
    model = FakeModel([ProviderError("bad request", retryable=False, status=400)])
    app, recorder, agent = make(model)
    holder: dict[str, RunContext] = {}

    async def delegate(q: Question) -> Answer:
        return await holder["ctx"].call(agent, q)

    outer = FunctionAgent(name="outer", fn=delegate, input=Question, output=Answer)

    @app.workflow
    async def wf(ctx: RunContext, q: Question) -> Answer:
        holder["ctx"] = ctx
        return await ctx.call(outer, q)

    result = await app.run("wf", {"text": "q"})
    assert result.error["code"] == "provider_error" and result.error["agent"] == "answerer"
    spans = {s.name: s for s in recorder.spans_of(result.run_id, "agent")}
    # The function agent's span says it failed, not that it answered badly.
    assert spans["outer"].status == "error" and spans["answerer"].status == "error"


async def test_parallel_returns_results_in_call_order_and_structured_errors_when_asked():
    model = FakeModel([{"answer": "a", "score": 1}, "garbage", "garbage"])
    app, _, agent = make(model)

    @app.workflow
    async def fan(ctx: RunContext, q: Question) -> Answer:
        outcomes = await ctx.parallel(ctx.call(agent, q), ctx.call(agent, q), errors="return")
        assert isinstance(outcomes[1], AgentError)
        return outcomes[0]

    result = await app.run("fan", {"text": "q"})
    assert result.ok and result.output.answer == "a"


async def test_a_model_call_that_hangs_times_out_and_is_retried():
    class Hanging:
        """Answers after a second of the app's (fake) clock: the 0.02 s timeout fires first."""

        name = "hang:model"
        calls = 0

        async def complete(self, request):
            Hanging.calls += 1
            await clock.sleep(1)
            raise AssertionError("the call should have timed out")

    app, recorder, clock = ephemeral_app(
        models={"hang:model": Hanging()}, tiers={"small": "hang:model"}, call_timeout_s=0.02
    )
    agent = Agent(name="slow", instructions="x", input=Question, output=Answer)

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(agent, q)

    result = await app.run("ask", {"text": "q"})
    assert result.error["code"] == "provider_error"
    assert result.error["details"]["code"] == "provider_timeout"
    assert Hanging.calls == 3  # each attempt timed out, then retried


async def test_a_refused_call_leaves_its_agent_and_model_spans_as_parents_of_the_guard_spans():
    from corral.guards import BudgetPolicy, GuardPolicies

    model = FakeModel([{"answer": "never", "score": 1}])
    app, recorder, _ = ephemeral_app(
        models={"fake:model": model},
        tiers={"small": "fake:model"},
        guards=GuardPolicies(budget=BudgetPolicy(usd=Decimal("0.000001"))),
    )
    agent = Agent(name="answerer", instructions="Answer.", input=Question, output=Answer)

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(agent, q)

    result = await app.run("ask", {"text": "too dear"})
    assert result.status == "budget_exhausted"
    assert model.requests == []  # refused before the provider
    spans = {s.step_id: s for s in recorder.spans_of(result.run_id)}
    guards = [s for s in spans.values() if s.kind == "guard"]
    assert guards and {s.name for s in guards} == {"refused"}
    for guard in guards:  # every guard span has its whole chain of parents
        step = spans[guard.parent_id]
        assert step.kind == "model" and step.status == "error"
        assert step.error is not None and step.error["code"] == "budget_exhausted"
        call = spans[step.parent_id]
        assert call.kind == "agent" and call.name == "answerer" and call.status == "error"
        assert call.error is not None and call.error["code"] == "budget_exhausted"


async def test_a_deadline_in_a_retry_backoff_leaves_the_retry_span_its_model_and_agent_spans():
    from corral import App, AppConfig, SimConfig
    from corral.guards import BreakerPolicy, GuardPolicies
    from corral.models.sim import SimModel
    from corral.testing import SpanRecorder, VirtualClock

    clock = VirtualClock()
    recorder = SpanRecorder()
    app = App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            guards=GuardPolicies(breaker=BreakerPolicy(minimum_calls=10_000, window_size=10_000)),
        ),
        clock=clock,
        recorder=recorder,
        models={"sim:small": SimModel("sim:small", SimConfig(error_rate=1.0), clock=clock)},
    )
    agent = Agent(name="answerer", instructions="Answer.", input=Question, output=Answer)

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(agent, q)

    async with app:  # the provider fails; the deadline ends the run in the first backoff
        result = await app.run("ask", {"text": "x"}, deadline_s=0.05)
    assert result.status == "deadline_exceeded"
    spans = {s.step_id: s for s in recorder.spans_of(result.run_id)}
    [retry] = [s for s in spans.values() if s.kind == "guard"]
    assert retry.name == "retry"
    step = spans[retry.parent_id]
    assert step.kind == "model" and step.error is not None and step.error["code"] == "cancelled"
    call = spans[step.parent_id]
    assert call.kind == "agent" and call.status == "error" and call.parent_id is None
