"""Workflows and their run context: types read from the function, and what a workflow body can do
with `ctx` (call, parallel, try_call, subflow, offer/best, the budget view), on fakes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import BaseModel, Field

from corral import Agent, AgentError, RunContext, UnknownNameError, function_agent
from corral.guards import BudgetPolicy, GuardPolicies
from corral.testing import FakeModel
from corral.workflow import CannotAnswer, Workflow
from tests.helpers import ephemeral_app


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    answer: str
    score: int = Field(ge=1, le=5)


@function_agent
def upper(q: Question) -> Answer:
    return Answer(answer=q.text.upper(), score=1)


@function_agent
def broken(q: Question) -> Answer:
    return Answer.model_construct(answer=q.text, score=99)  # bypasses validation: score > 5


# -- Workflow.from_function -----------------------------------------------------------------------


def test_from_function_reads_the_name_and_the_types_at_both_ends():
    async def triage(ctx: RunContext, q: Question) -> Answer:
        return Answer(answer=q.text, score=1)

    wf = Workflow.from_function(triage)
    assert (wf.name, wf.fn, wf.input, wf.output) == ("triage", triage, Question, Answer)
    assert Workflow.from_function(triage, name="sorting").name == "sorting"


def test_a_workflow_returning_plain_data_has_no_output_type():
    async def count(ctx: RunContext, q: Question) -> int:
        return len(q.text)

    async def nothing(ctx: RunContext, q: Question) -> None:
        return None

    assert Workflow.from_function(count).output is None
    assert Workflow.from_function(nothing).output is None


def _sync(ctx: RunContext, q: Question) -> Answer:
    raise AssertionError


async def _one_param(q: Question) -> Answer:
    raise AssertionError


async def _untyped(ctx: RunContext, q: dict) -> Answer:  # type: ignore[type-arg]
    raise AssertionError


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        pytest.param(_sync, "must be an async function", id="sync"),
        pytest.param(_one_param, r"must take \(ctx, payload\)", id="one-parameter"),
        pytest.param(_untyped, "annotate the payload with a Pydantic model", id="untyped"),
    ],
)
def test_from_function_refuses_what_it_cannot_type(fn, message):
    with pytest.raises(TypeError, match=message):
        Workflow.from_function(fn)


def test_registering_goes_through_from_function():
    app, _, _ = ephemeral_app()

    @app.workflow(name="ask")
    async def ask_workflow(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(upper, q)

    wf = app.workflows["ask"]
    assert wf.input is Question and wf.output is Answer
    with pytest.raises(TypeError, match="must be an async function"):
        app.workflow(_sync)


# -- call -------------------------------------------------------------------------------------------


async def test_call_validates_the_payload_and_returns_the_typed_output():
    model = FakeModel([{"answer": "42", "score": 5}])
    app, _, _ = ephemeral_app(models={"fake:model": model}, tiers={"small": "fake:model"})
    agent = Agent(name="answerer", instructions="Answer.", input=Question, output=Answer)
    seen: list[tuple[str, str, str | None, str | None, tuple[str, ...]]] = []

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        seen.append((ctx.run_id, ctx.workflow, ctx.user, ctx.tenant, ctx.tags))
        answer = await ctx.call(agent, {"text": q.text})  # a dict is validated like a model
        assert isinstance(answer, Answer)
        with pytest.raises(AgentError) as info:
            await ctx.call(agent, {"txt": "no"})
        assert info.value.code == "invalid_input" and info.value.agent == "answerer"
        return answer

    result = await app.run("ask", {"text": "q"}, user="ada", tenant="acme", tags=["t1"])
    assert result.ok and result.output == Answer(answer="42", score=5)
    assert seen == [(result.run_id, "ask", "ada", "acme", ("t1",))]
    assert result.usage.calls == 1  # the refused payload never reached the model
    model.assert_done()


async def test_an_output_that_does_not_fit_never_reaches_the_workflow():
    app, _, _ = ephemeral_app()

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        return await ctx.call(broken, q)

    result = await app.run("ask", {"text": "hi"})
    assert result.status == "failed" and result.output is None
    assert result.error["code"] == "invalid_output" and result.error["agent"] == "broken"


# -- try_call ---------------------------------------------------------------------------------------


async def test_try_call_turns_an_agents_failure_into_an_outcome():
    app, _, _ = ephemeral_app()
    outcomes: list[Answer | CannotAnswer] = []

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        outcomes.append(await ctx.try_call(broken, q))
        outcomes.append(await ctx.try_call(upper, q))
        return Answer(answer="handled", score=1)

    result = await app.run("ask", {"text": "hi"})
    assert result.ok
    cannot, fine = outcomes
    assert isinstance(cannot, CannotAnswer) and cannot.agent == "broken"
    assert cannot.code == "invalid_output" and cannot.error["code"] == "invalid_output"
    assert fine == Answer(answer="HI", score=1)


async def test_try_call_does_not_hide_a_guard_stopping_the_run():
    guards = GuardPolicies(budget=BudgetPolicy(agent_turns=1))
    app, _, _ = ephemeral_app(guards=guards)

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        await ctx.try_call(upper, q)
        await ctx.try_call(upper, q)  # the second turn is over the budget: raises, not an outcome
        raise AssertionError("not reached")

    result = await app.run("ask", {"text": "hi"})
    assert result.status == "budget_exhausted" and result.error["dimension"] == "agent_turns"


# -- parallel ---------------------------------------------------------------------------------------


async def test_parallel_keeps_the_order_given():
    app, _, _ = ephemeral_app()

    @app.workflow
    async def fan(ctx: RunContext, q: Question) -> Answer:
        outs = await ctx.parallel(
            *(ctx.call(upper, Question(text=f"{q.text}{i}")) for i in range(5))
        )
        return Answer(answer=",".join(o.answer for o in outs), score=1)

    result = await app.run("fan", {"text": "x"})
    assert result.output.answer == "X0,X1,X2,X3,X4"


async def test_parallel_raises_the_first_agent_error_after_all_settle_or_returns_it():
    app, recorder, _ = ephemeral_app()
    returned: list[object] = []

    @app.workflow
    async def strict(ctx: RunContext, q: Question) -> Answer:
        await ctx.parallel(ctx.call(broken, q), ctx.call(upper, q))
        raise AssertionError("not reached")

    @app.workflow
    async def lenient(ctx: RunContext, q: Question) -> Answer:
        returned.extend(
            await ctx.parallel(ctx.call(broken, q), ctx.call(upper, q), errors="return")
        )
        return Answer(answer="ok", score=1)

    failed = await app.run("strict", {"text": "a"})
    assert failed.error["code"] == "invalid_output" and failed.error["agent"] == "broken"
    # The other branch still ran to the end: both agent steps were recorded.
    assert sorted(s.name for s in recorder.spans_of(failed.run_id, "agent")) == ["broken", "upper"]

    assert (await app.run("lenient", {"text": "a"})).ok
    error, answer = returned
    assert isinstance(error, AgentError) and error.code == "invalid_output"
    assert answer == Answer(answer="A", score=1)


# -- subflow ----------------------------------------------------------------------------------------


async def test_a_subflow_runs_inside_the_run_with_nested_step_ids():
    app, recorder, _ = ephemeral_app()

    @app.workflow
    async def child(ctx: RunContext, q: Question) -> Answer:
        first = await ctx.call(upper, q)
        return await ctx.call(upper, Question(text=first.answer + "!"))

    @app.workflow
    async def parent(ctx: RunContext, q: Question) -> Answer:
        await ctx.call(upper, q)
        got = await ctx.subflow("child", {"text": q.text})
        assert isinstance(got, Answer)
        return got

    result = await app.run("parent", {"text": "go"})
    assert result.ok and result.output.answer == "GO!"
    spans = recorder.spans_of(result.run_id)
    assert [s.step_id for s in spans if s.kind == "agent"] == ["1", "2.1", "2.2"]
    [flow] = [s for s in spans if s.kind == "workflow"]
    assert (flow.step_id, flow.name, flow.status) == ("2", "child", "ok")
    assert flow.output == {"answer": "GO!", "score": 1}


async def test_a_subflows_input_and_output_are_checked_and_names_resolved():
    app, _, _ = ephemeral_app()

    @app.workflow
    async def bad_child(ctx: RunContext, q: Question) -> Answer:
        return Answer.model_construct(answer="x", score=0)

    @app.workflow
    async def parent(ctx: RunContext, q: Question) -> Answer:
        with pytest.raises(AgentError) as wrong_in:
            await ctx.subflow("bad_child", {"nope": 1})
        assert wrong_in.value.code == "invalid_input"
        with pytest.raises(UnknownNameError):
            await ctx.subflow("missing", q)
        return await ctx.subflow("bad_child", q)

    result = await app.run("parent", {"text": "x"})
    assert result.error["code"] == "invalid_output" and result.error["agent"] == "bad_child"


# -- offer / best and the budget view ---------------------------------------------------------------


async def test_best_is_the_latest_valid_output_or_what_the_workflow_offered():
    app, _, _ = ephemeral_app()
    seen: list[object] = []

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        seen.append(ctx.best)
        await ctx.call(upper, q)
        seen.append(ctx.best)
        ctx.offer({"draft": "mine"})
        seen.append(ctx.best)
        ctx.offer(Answer(answer="typed", score=2), source="editor")
        seen.append(ctx.best)
        return Answer(answer="done", score=1)

    assert (await app.run("ask", {"text": "hi"})).ok
    assert seen == [
        None,
        ("upper", {"answer": "HI", "score": 1}),
        ("workflow", {"draft": "mine"}),
        ("editor", {"answer": "typed", "score": 2}),
    ]


async def test_a_budget_stop_returns_the_best_result_as_partial():
    guards = GuardPolicies(budget=BudgetPolicy(agent_turns=2))
    app, _, _ = ephemeral_app(guards=guards)

    @app.workflow
    async def refine(ctx: RunContext, q: Question) -> Answer:
        draft = await ctx.call(upper, q)
        ctx.offer({"draft": draft.answer})
        for _ in range(5):
            draft = await ctx.call(upper, Question(text=draft.answer + "+"))
        return draft

    result = await app.run("refine", {"text": "a"})
    assert result.status == "budget_exhausted" and result.output is None
    assert result.partial == {"answer": "A+", "score": 1}  # the second turn's output came later
    assert result.error["best_result_from"] == "upper"


async def test_the_budget_view_shows_what_is_left():
    model = FakeModel([{"answer": "1", "score": 1}])
    guards = GuardPolicies(budget=BudgetPolicy(usd=None, tokens=1000, model_calls=3))
    app, _, _ = ephemeral_app(
        models={"fake:model": model}, tiers={"small": "fake:model"}, guards=guards
    )
    agent = Agent(name="answerer", instructions="Answer.", input=Question, output=Answer)
    views: list[dict[str, str | None]] = []

    @app.workflow
    async def ask(ctx: RunContext, q: Question) -> Answer:
        views.append(ctx.budget)
        answer = await ctx.call(agent, q)
        views.append(ctx.budget)
        assert ctx.usage.calls == 1 and ctx.usage.input_tokens == 10
        return answer

    assert (await app.run("ask", {"text": "q"})).ok
    before, after = views
    assert before["usd"] is None and before["tokens"] == "1000" and before["model_calls"] == "3"
    # FakeModel reports 10 input and 5 output tokens; what was reserved is released.
    assert after["tokens"] == "985" and after["model_calls"] == "2" and after["usd"] is None
    assert Decimal(0) <= Decimal(after["tokens"]) < Decimal(before["tokens"])
