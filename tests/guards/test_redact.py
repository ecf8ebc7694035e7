"""The `redact` step: a loaded secret never reaches a provider, and each removal is counted."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from corral import Agent, App, AppConfig, RunContext, tool
from corral.guards import CachePolicy, GuardPolicies
from corral.guards.chain import GuardEvent, Guards, ModelCall
from corral.guards.redact import REDACTED
from corral.model import Message, ModelRequest, ToolCall
from corral.secrets import register_secret
from corral.server.metrics import render
from corral.state.memory import MemoryCache
from corral.store import queries
from corral.testing import FakeClock, FakeModel, reply

KEY = "guarded-key-1f7c3a"


class Events:
    """Records the guard events a call emits."""

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.events: list[GuardEvent] = []

    async def __call__(self, event: GuardEvent) -> None:
        self.kinds.append(event.kind)
        self.events.append(event)


def call_of(g: Guards, events: Events) -> ModelCall:
    return ModelCall(g.run("r1", priority="interactive", tenant=None, user=None), "w", 30.0, events)


class Ask(BaseModel):
    text: str


class Said(BaseModel):
    answer: str


async def test_a_request_without_secrets_goes_out_as_it_is():
    register_secret(KEY)
    model = FakeModel(["ok"], name="fake:a")
    g = Guards(GuardPolicies(), FakeClock())
    sent = ModelRequest(model="fake:a", messages=(Message(role="user", content="plain"),))
    events = Events()
    call = call_of(g, events)
    await call.call([model], sent)
    assert model.requests == [sent] and model.requests[0] is sent
    assert call.secrets_redacted == 0 and events.kinds == []


async def test_loaded_secrets_in_messages_are_replaced_before_cache_and_provider():
    register_secret(KEY)
    model = FakeModel(["ok"], name="fake:a")
    g = Guards(GuardPolicies(cache=CachePolicy(enabled=True)), FakeClock())
    cache = g.cache = MemoryCache()
    events = Events()
    call = call_of(g, events)
    sent = ModelRequest(
        model="fake:a",
        messages=(
            Message(role="system", content="Be brief."),
            Message(role="user", content=f"use {KEY} and again {KEY}"),
            Message(role="tool", content=f'{{"error": "401 for {KEY}"}}', tool_call_id="c1"),
        ),
    )
    assert (await call.call([model], sent)).text == "ok"
    got = model.requests[0].messages
    assert [m.content for m in got] == [
        "Be brief.",
        f"use {REDACTED} and again {REDACTED}",
        f'{{"error": "401 for {REDACTED}"}}',
    ]
    assert got[2].tool_call_id == "c1"
    assert call.secrets_redacted == 3
    assert events.kinds == ["secret_redacted"]
    assert events.events[0].detail == {"secrets": 3, "messages": 2} and events.events[0].alert
    assert KEY not in repr(cache._entries)  # type: ignore[attr-defined]


async def test_the_model_span_and_the_agent_metrics_count_what_was_removed():
    register_secret(KEY)

    @tool
    def account() -> str:
        """The account's key (a tool that leaks it)."""
        return f"key is {KEY}"

    model = FakeModel(
        [
            reply(tool_calls=[ToolCall(id="c1", name="account", arguments={})]),
            {"answer": "done"},
        ]
    )
    app = App(
        AppConfig(database="sqlite:///:memory:", durable=False, tiers={"small": "fake:model"}),
        models={"fake:model": model},
        clock=FakeClock(),
    )
    agent = Agent(name="helper", instructions="Help.", input=Ask, output=Said, tools=(account,))

    @app.workflow
    async def helps(ctx: RunContext, ask: Ask) -> Said:
        return await ctx.call(agent, ask)

    async with app:
        result = await app.run("helps", {"text": f"with {KEY}"})
        assert result.ok, result.error
        spans = await app.spans(result.run_id)
        since = datetime(2000, 1, 1, tzinfo=UTC)
        metrics = await app.store.query(queries.agent_metrics, since)
        exposition, _ = await render(app.store, None, since, "1h")
    assert all(KEY not in m.content for r in model.requests for m in r.messages)
    counts = [s["attrs"]["secrets_redacted"] for s in spans if s["kind"] == "model"]
    assert counts == [1, 2]  # the payload; then the payload and the tool's result
    assert metrics["helper"]["secrets_redacted"] == 3
    line = 'corral_agent_secrets_redacted{agent="helper",window="1h"} 3.0'
    assert line in exposition.decode()
