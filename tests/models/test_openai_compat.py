"""Corral's OpenAI provider end to end over loopback HTTP against `corral sim serve`.

Real HTTP, the real `openai` SDK, the real server (uvicorn on an ephemeral port in this process).
The app under test uses a fake clock, so retry backoff and Retry-After waits cost no real time;
the server's faults are scripted per request so every path is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

pytest.importorskip("openai", reason="install corral[openai] for the OpenAI provider")
pytest.importorskip("uvicorn", reason="install corral[server] for the simulator server")


from corral import Agent, App, AppConfig, ModelPrice, RunContext, SimConfig, tool
from corral.config import ProviderConfig
from corral.errors import ConfigError
from corral.server.sim_server import SimServerConfig, create_sim_app
from corral.testing import FakeClock, SpanRecorder

KEY = "sk-test-planted-0123456789"


@pytest.fixture
def sim_server(serve: Callable[[Any], Any]) -> Callable[..., Any]:
    """Start `corral sim serve`'s app on a free loopback port; returns a starter."""

    async def start(**options: Any) -> tuple[str, Any]:
        app = create_sim_app(SimServerConfig(api_keys=frozenset({KEY}), **options))
        return f"{await serve(app)}/v1", app.state.sim

    return start


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    category: str
    urgent: bool
    summary: str


def make_app(
    base_url: str, monkeypatch: pytest.MonkeyPatch, **config: Any
) -> tuple[App, SpanRecorder]:
    monkeypatch.setenv("SIM_HTTP_KEY", KEY)
    recorder = SpanRecorder()
    app = App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            tiers={"small": "simhttp:small"},
            providers={
                "simhttp": ProviderConfig(
                    base_url=base_url, api_key_env="SIM_HTTP_KEY", timeout_s=5
                )
            },
            prices={"simhttp": ModelPrice(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2))},
            **config,
        ),
        clock=FakeClock(),
        recorder=recorder,
    )
    agent = Agent(name="triage", instructions="Classify.", input=Ticket, output=Triage)

    @app.workflow
    async def classify(ctx: RunContext, ticket: Ticket) -> Triage:
        return await ctx.call(agent, ticket)

    return app, recorder


async def test_structured_output_over_http_with_usage_and_cost(sim_server, monkeypatch):
    base_url, state = await sim_server()
    app, recorder = make_app(base_url, monkeypatch)
    async with app:
        result = await app.run("classify", {"text": "My invoice is wrong, please fix it today"})
    assert result.ok, result.error
    assert isinstance(result.output, Triage)
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.cost_usd > 0
    [model_span] = recorder.spans_of(result.run_id, "model")
    assert model_span.model == "simhttp:small"
    assert state.requests == 1


async def test_tool_calls_round_trip(sim_server, monkeypatch):
    base_url, state = await sim_server()
    app, _ = make_app(base_url, monkeypatch)
    looked_up: list[str] = []

    @tool
    def lookup_order(order_id: str) -> dict[str, str]:
        """Find an order."""
        looked_up.append(order_id)
        return {"status": "shipped"}

    agent = Agent(
        name="agent", instructions="Use tools.", input=Ticket, output=Triage, tools=(lookup_order,)
    )

    @app.workflow
    async def with_tools(ctx: RunContext, ticket: Ticket) -> Triage:
        return await ctx.call(agent, ticket)

    async with app:
        result = await app.run("with_tools", {"text": "where is order 42"})
    assert result.ok, result.error
    assert len(looked_up) == 1 and state.requests == 2  # tool call, then the answer


async def test_429_retry_after_is_honoured(sim_server, monkeypatch):
    base_url, state = await sim_server(script=("429",), retry_after_s=7)
    app, recorder = make_app(base_url, monkeypatch)
    async with app:
        result = await app.run("classify", {"text": "hello"})
    assert result.ok, result.error
    [retry] = [s for s in recorder.spans_of(result.run_id, "guard") if s.name == "retry"]
    assert retry.output["error"] == "rate_limited" and retry.output["delay_s"] >= 7
    assert state.requests == 2


@pytest.mark.parametrize("fault", ["500", "503", "malformed"])
async def test_server_errors_and_garbage_bodies_are_retried(sim_server, monkeypatch, fault):
    base_url, state = await sim_server(script=(fault,))
    app, recorder = make_app(base_url, monkeypatch)
    async with app:
        result = await app.run("classify", {"text": "hello"})
    assert result.ok, result.error
    assert state.requests == 2
    assert [s.name for s in recorder.spans_of(result.run_id, "guard")] == ["retry"]


async def test_a_hanging_server_times_out_and_the_retry_succeeds(sim_server, monkeypatch):
    base_url, state = await sim_server(script=("timeout",), hang_s=30)
    app, recorder = make_app(base_url, monkeypatch, call_timeout_s=0.5)
    async with app:
        result = await app.run("classify", {"text": "hello"})
    assert result.ok, result.error
    [retry] = [s for s in recorder.spans_of(result.run_id, "guard") if s.name == "retry"]
    assert retry.output["error"] == "provider_timeout"


async def test_a_bad_key_is_not_retried_and_names_the_variable(sim_server, monkeypatch):
    base_url, state = await sim_server()
    app, _ = make_app(base_url, monkeypatch)
    monkeypatch.setenv("SIM_HTTP_KEY", "sk-wrong")  # the key is read when the model is built
    async with app:
        result = await app.run("classify", {"text": "hello"})
    assert result.error["details"]["status"] == 401
    assert "SIM_HTTP_KEY" in result.error["message"]
    assert state.requests == 1, "a 401 is not retried"


@pytest.mark.slow  # a real connection, refused by a closed loopback port
async def test_a_wrong_base_url_says_which_url(monkeypatch):
    app, _ = make_app("http://127.0.0.1:9/v1", monkeypatch)  # discard port: nothing listens
    async with app:
        result = await app.run("classify", {"text": "hello"})
    assert result.error["code"] == "provider_error"
    assert "127.0.0.1:9" in result.error["message"] and "base URL" in result.error["message"]


def test_a_missing_key_is_a_config_error_naming_the_variable(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    app = App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            providers={"hosted": ProviderConfig(api_key_env="NO_SUCH_KEY_VAR")},
        )
    )
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
        app.model("hosted:some-model")


async def test_the_key_never_reaches_spans_or_runs(sim_server, monkeypatch):
    base_url, _ = await sim_server()
    app, recorder = make_app(base_url, monkeypatch)
    async with app:
        await app.run("classify", {"text": "hello"})
        shown = repr(app.model("small").inner)  # type: ignore[attr-defined]
    stored = repr(recorder.spans) + repr(recorder.runs) + shown
    assert KEY not in stored


async def test_rate_limit_headers_shrink_the_local_allowance(sim_server, monkeypatch):
    from corral.guards import GuardPolicies, RateLimit
    from corral.state.memory import MemoryLimiterBackend

    base_url, _ = await sim_server(sim=SimConfig(rpm=5))
    generous = GuardPolicies(limits={"model:simhttp:small": RateLimit(rpm=6000)})
    app, _ = make_app(base_url, monkeypatch, guards=generous)
    async with app:
        result = await app.run("classify", {"text": "hello"})
        assert result.ok, result.error
        backend = app.guards.limiter.backend
        assert isinstance(backend, MemoryLimiterBackend)
        bucket = backend._keys["model:simhttp:small"].requests
        assert bucket is not None and bucket.level <= 4  # the server said 4 requests are left


async def test_a_planted_key_is_in_no_stored_byte_and_no_log_line(
    sim_server, monkeypatch, tmp_path, caplog
):
    import logging

    base_url, _ = await sim_server(script=("500", "ok", "429"))
    monkeypatch.setenv("SIM_HTTP_KEY", KEY)
    db = tmp_path / "runs.db"
    app = App(
        AppConfig(
            database=f"sqlite:///{db}",
            durable=False,
            tiers={"small": "simhttp:small"},
            providers={"simhttp": ProviderConfig(base_url=base_url, api_key_env="SIM_HTTP_KEY")},
        ),
        clock=FakeClock(),
    )
    agent = Agent(name="triage", instructions="Classify.", input=Ticket, output=Triage)

    @app.workflow
    async def classify(ctx: RunContext, ticket: Ticket) -> Triage:
        return await ctx.call(agent, ticket)

    caplog.set_level(logging.DEBUG)
    async with app:
        for text in ("first", "second"):  # a 500 then a success, then a 429 then a success
            assert (await app.run("classify", {"text": text})).ok
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("runs.db"))
    assert stored and KEY.encode() not in stored
    assert caplog.records and KEY not in caplog.text


async def test_the_key_can_come_from_a_secrets_file(sim_server, monkeypatch, tmp_path):
    base_url, state = await sim_server()
    monkeypatch.delenv("SIM_FILE_KEY", raising=False)
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"SIM_FILE_KEY={KEY}\n", encoding="utf-8")
    app = App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            tiers={"small": "simhttp:small"},
            providers={"simhttp": ProviderConfig(base_url=base_url, api_key_env="SIM_FILE_KEY")},
            secrets_file=str(secrets),
        ),
        clock=FakeClock(),
    )
    agent = Agent(name="triage", instructions="Classify.", input=Ticket, output=Triage)

    @app.workflow
    async def classify(ctx: RunContext, ticket: Ticket) -> Triage:
        return await ctx.call(agent, ticket)

    async with app:
        result = await app.run("classify", {"text": "hello"})
    assert result.ok, result.error  # the server only accepts KEY


async def test_a_response_without_usage_is_charged_the_worst_case(sim_server, monkeypatch):
    base_url, _ = await sim_server(omit_usage=True)
    app, _ = make_app(base_url, monkeypatch)
    async with app:
        result = await app.run("classify", {"text": "hello"})
    assert result.ok, result.error
    assert result.usage.output_tokens == 512  # the agent's max_output_tokens
    assert result.usage.input_tokens > 0 and result.cost_usd > 0


async def test_an_unknown_model_names_the_model_and_the_url(sim_server, monkeypatch):
    base_url, state = await sim_server(models=frozenset({"medium"}))
    app, _ = make_app(base_url, monkeypatch)
    async with app:
        result = await app.run("classify", {"text": "hello"})
    assert result.error["details"]["status"] == 404
    assert "'small'" in result.error["message"] and base_url in result.error["message"]
    assert state.requests == 1, "a 404 is not retried"
