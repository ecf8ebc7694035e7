"""Type-checked, never run: the public API as a user writes it (mypy --strict checks this file).

If a change to a public signature breaks this file, it breaks users: change it on purpose.
"""

from __future__ import annotations

from pydantic import BaseModel

from corral import (
    Agent,
    AgentError,
    App,
    AppConfig,
    Approval,
    Escalation,
    HumanPolicy,
    Model,
    ModelRequest,
    ModelResponse,
    Rejection,
    RunContext,
    RunResult,
    SystemClock,
    above,
    function_agent,
    run,
    tool,
)
from corral.contracts import Json
from corral.patterns import Pipeline, Stage
from corral.testing import FakeClock, SpanRecorder


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    category: str


@tool
def search_kb(query: str, limit: int = 3) -> list[str]:
    """Search the knowledge base."""
    return [query][:limit]


@function_agent
def screen(ticket: Ticket) -> Ticket:
    return Ticket(text=ticket.text.strip())


triage: Agent[Ticket, Triage] = Agent(
    name="triage",
    instructions="Classify the ticket.",
    input=Ticket,
    output=Triage,
    tools=(search_kb,),
    model="small",
)


class MyModel:
    @property
    def name(self) -> str:
        return "mine:v1"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return ModelResponse(text="{}", model=self.name)


@tool(side_effect=True, approval=above("amount_usd", 100))
def refund(order_id: str, amount_usd: float, idempotency_key: str) -> dict[str, str]:
    """Refund an order."""
    return {"receipt": idempotency_key}


@tool(side_effect=True, approval=Approval(when=lambda a: a.to.endswith(".gov"), timeout_s=60))
def email(to: str, body: str) -> str:
    """Send an e-mail."""
    return "sent"


careful: Agent[Ticket, Triage] = Agent(
    name="careful",
    instructions="Classify.",
    input=Ticket,
    output=Triage,
    escalation=Escalation(min_confidence=0.6, on_guard_stop=True),
)


def models() -> dict[str, Model]:
    return {"mine:v1": MyModel()}


app = App(
    AppConfig(durable=False, humans=HumanPolicy(review_rate=0.05)),
    models=models(),
    clock=SystemClock(),
)
test_app = App(AppConfig(durable=False), clock=FakeClock(), recorder=SpanRecorder())


@app.workflow
async def support(ctx: RunContext, ticket: Ticket) -> Triage:
    cleaned: Ticket = await ctx.call(screen, ticket)
    first: Triage = await ctx.call(triage, cleaned)
    both: list[Triage | AgentError] = await ctx.parallel(
        ctx.call(triage, cleaned), ctx.call(triage, ticket), errors="return"
    )
    found = await ctx.tool(search_kb, query=first.category)
    assert found is not None and both
    await ctx.tool(refund, order_id="o1", amount_usd=250.0)
    redone: Triage = await ctx.call(
        triage, cleaned, rejections=[Rejection(answer=first, reason="not a category we use")]
    )
    assert redone and ctx.has_inbox
    answered: Triage = await ctx.escalate(careful, cleaned, reason="policy case")
    approved: Triage = await ctx.approve(answered, title="send it?")
    return approved


@app.workflow(name="triage-only")
async def triage_only(ctx: RunContext, ticket: Ticket) -> Triage:
    return await ctx.call(triage, ticket)


def decorated_functions_keep_their_types(ctx: RunContext) -> None:
    # `@app.workflow` returns the function itself, typed as written.
    direct: Triage = run(triage_only(ctx, Ticket(text="x")))
    assert direct


async def use() -> None:
    result: RunResult[Triage] = await app.run("support", {"text": "hi"}, user="u1", tags=["a"])
    if result.ok:
        triaged: Triage | None = result.output
        assert triaged is not None
    handle = await app.start("support", Ticket(text="hi"))
    await app.start("support", {"text": "x"}, user="u1", priority="batch", deadline_s=30.0)
    if result.status == "budget_exhausted" and isinstance(result.partial, dict):
        best: Json = result.partial.get("category")
        assert best is None or best
    done: RunResult[Triage] = await handle.result()
    assert done.run_id == handle.run_id
    pipeline = Pipeline([Stage(triage)])
    assert pipeline
    await app.cancel(handle.run_id, by="oncall", reason="runaway")
    await app.control("pause", "agent", "triage", by="oncall")
    row = await app.decide("run-1:2.h", "edit", by="alice", value={"amount_usd": 90})
    assert row["status"] == "edited"


def main() -> None:
    # `corral.run` returns what the coroutine returns, like `asyncio.run`.
    triaged: Triage | None = run(first_output())
    assert triaged is None or triaged.category


async def first_output() -> Triage | None:
    result: RunResult[Triage] = await app.run("support", {"text": "hi"})
    return result.output
