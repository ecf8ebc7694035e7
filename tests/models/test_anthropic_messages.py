"""The Anthropic adapter against recorded Messages API fixtures, replayed over loopback HTTP.

The real `anthropic` SDK talks to a tiny local server that answers each request with the next
fixture (tests/fixtures/anthropic/) and keeps the request bodies, so the test checks both what the
adapter sends (system prompt, tools, tool results, the forced `respond` tool) and how it reads the
answers and errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

pytest.importorskip("anthropic", reason="install corral[anthropic] for the Anthropic provider")
pytest.importorskip("uvicorn", reason="install corral[server] for the fixture server")

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from corral import Agent, App, AppConfig, ModelPrice, RunContext, tool
from corral.config import ProviderConfig
from corral.testing import FakeClock, SpanRecorder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"
KEY = "sk-ant-test-planted"


@pytest.fixture
def replay(serve: Callable[[Any], Any]) -> Callable[..., Any]:
    """Serve the named fixtures, one per request; returns (base URL, requests seen)."""

    async def start(*names: str) -> tuple[str, list[dict[str, Any]]]:
        queue = [json.loads((FIXTURES / f"{n}.json").read_text()) for n in names]
        seen: list[dict[str, Any]] = []
        app = FastAPI()

        @app.post("/v1/messages")
        async def messages(request: Request) -> JSONResponse:
            seen.append({"body": await request.json(), "headers": dict(request.headers)})
            fixture = queue.pop(0)
            return JSONResponse(
                fixture["body"], status_code=fixture["status"], headers=fixture.get("headers")
            )

        return await serve(app), seen

    return start


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    category: str
    urgent: bool
    summary: str


def make_app(base_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[App, SpanRecorder]:
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", KEY)
    recorder = SpanRecorder()
    app = App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            tiers={"small": "claude:claude-sonnet-5-5"},
            providers={
                "claude": ProviderConfig(
                    kind="anthropic", base_url=base_url, api_key_env="ANTHROPIC_TEST_KEY"
                )
            },
            prices={"claude": ModelPrice(input_per_mtok=Decimal(3), output_per_mtok=Decimal(15))},
        ),
        clock=FakeClock(),
        recorder=recorder,
    )
    return app, recorder


triage = Agent(name="triage", instructions="Classify the ticket.", input=Ticket, output=Triage)


async def test_structured_output_through_the_forced_respond_tool(replay, monkeypatch):
    base_url, seen = await replay("respond")
    app, _ = make_app(base_url, monkeypatch)

    @app.workflow
    async def classify(ctx: RunContext, ticket: Ticket) -> Triage:
        return await ctx.call(triage, ticket)

    async with app:
        result = await app.run("classify", {"text": "I was charged twice in March"})
    assert result.ok, result.error
    assert result.output == Triage(
        category="billing", urgent=True, summary="Charged twice in March."
    )
    assert result.usage.input_tokens == 412 and result.usage.output_tokens == 38
    assert result.cost_usd == Decimal(412 * 3 + 38 * 15) / 1_000_000
    sent = seen[0]["body"]
    assert sent["system"].startswith("Classify the ticket.")
    assert sent["tool_choice"] == {"type": "tool", "name": "respond"}
    assert sent["tools"][0]["input_schema"]["required"] == ["category", "urgent", "summary"]
    assert sent["messages"] == [
        {"role": "user", "content": '{"text":"I was charged twice in March"}'}
    ]
    assert KEY in json.dumps(seen[0]["headers"]), seen[0]["headers"]


async def test_tool_use_then_tool_result_then_answer(replay, monkeypatch):
    base_url, seen = await replay("tool_use", "respond")
    app, _ = make_app(base_url, monkeypatch)

    @tool
    def lookup_order(order_id: str) -> dict[str, str]:
        """Find an order."""
        return {"status": "shipped", "order_id": order_id}

    agent = Agent(
        name="agent", instructions="Help.", input=Ticket, output=Triage, tools=(lookup_order,)
    )

    @app.workflow
    async def help_(ctx: RunContext, ticket: Ticket) -> Triage:
        return await ctx.call(agent, ticket)

    async with app:
        result = await app.run("help_", {"text": "where is order 42"})
    assert result.ok, result.error
    first, second = seen[0]["body"], seen[1]["body"]
    assert "tool_choice" not in first  # other tools: the model may pick `respond` or a tool
    assert {t["name"] for t in first["tools"]} == {"lookup_order", "respond"}
    assistant, tool_turn = second["messages"][1], second["messages"][2]
    assert assistant["content"][1] == {
        "type": "tool_use",
        "id": "toolu_02",
        "name": "lookup_order",
        "input": {"order_id": "42"},
    }
    assert tool_turn["content"][0]["type"] == "tool_result"
    assert tool_turn["content"][0]["tool_use_id"] == "toolu_02"
    assert "shipped" in tool_turn["content"][0]["content"]


async def test_429_and_529_are_retried_with_retry_after(replay, monkeypatch):
    base_url, seen = await replay("rate_limited", "overloaded", "respond")
    app, recorder = make_app(base_url, monkeypatch)

    @app.workflow
    async def classify(ctx: RunContext, ticket: Ticket) -> Triage:
        return await ctx.call(triage, ticket)

    async with app:
        result = await app.run("classify", {"text": "x"})
    assert result.ok, result.error
    retries = [s.output for s in recorder.spans_of(result.run_id, "guard") if s.name == "retry"]
    assert retries[0]["error"] == "rate_limited" and retries[0]["delay_s"] >= 12
    assert retries[1]["status"] == 529
    assert len(seen) == 3


async def test_a_bad_key_is_not_retried_and_says_where_the_key_comes_from(replay, monkeypatch):
    base_url, seen = await replay("invalid_key")
    app, _ = make_app(base_url, monkeypatch)

    @app.workflow
    async def classify(ctx: RunContext, ticket: Ticket) -> Triage:
        return await ctx.call(triage, ticket)

    async with app:
        result = await app.run("classify", {"text": "x"})
    assert result.error["details"]["status"] == 401
    assert "ANTHROPIC_TEST_KEY" in result.error["message"]
    assert len(seen) == 1
