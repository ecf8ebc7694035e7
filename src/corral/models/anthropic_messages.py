"""Anthropic models through the official `anthropic` SDK (Messages API).

Mapping to Corral's model seam:
- system messages become the `system` parameter; tool results become `tool_result` blocks in a
  user turn; an assistant's tool calls become `tool_use` blocks;
- structured output: the output schema is offered as a tool named `respond` (forced when the
  agent has no other tools). A `respond` call's input *is* the answer, returned as JSON text, so
  Corral validates it like any other answer;
- usage and stop reason come from the response; 429 (with `retry-after`), 5xx and 529
  (overloaded), timeouts and connection errors are retryable, 4xx are not.

The SDK's own retries are off: Corral's guard chain retries. The API key comes from the
environment variable the provider names (default `ANTHROPIC_API_KEY`) and stays inside the client.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic

from corral.errors import ProviderError, ProviderRateLimitError, ProviderTimeoutError
from corral.model import ModelRequest, ModelResponse, ToolCall
from corral.secrets import require_secret

__all__ = ["AnthropicModel", "to_messages"]

RESPOND = "respond"
_RETRYABLE_STATUS = {408, 409, 429, 529}


class AnthropicModel:
    """A Claude model.

    Args:
        name: `anthropic:<model>` (or another prefix configured with kind `anthropic`).
        base_url: The API endpoint (the SDK's default when None).
        api_key_env: Environment variable holding the key.
        timeout_s: Per-request timeout inside the SDK.

    Raises:
        ConfigError: the key's environment variable is not set.
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "ANTHROPIC_API_KEY",
        timeout_s: float = 120.0,
        secrets_file: str | None = None,
    ) -> None:
        self._name = name
        self.provider, _, self.model = name.partition(":")
        key = require_secret(api_key_env, secrets_file, provider=self.provider)
        self.base_url = base_url or "https://api.anthropic.com"
        self.api_key_env = api_key_env
        self._client = anthropic.AsyncAnthropic(
            api_key=key, base_url=base_url, max_retries=0, timeout=timeout_s
        )

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        await self._client.close()

    def __repr__(self) -> str:  # never shows the key
        return f"AnthropicModel({self._name!r}, base_url={self.base_url!r})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        system, messages = to_messages(request)
        tools = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_output_tokens,
            "messages": messages,
        }
        # No sampling parameters: this SDK's Messages API no longer takes `temperature` (current
        # models fix it); answers are steered by the prompt and the forced `respond` tool.
        if system:
            kwargs["system"] = system
        if request.output_schema is not None:
            tools.append(
                {
                    "name": RESPOND,
                    "description": "Give your final answer in exactly this shape.",
                    "input_schema": dict(request.output_schema),
                }
            )
            if not request.tools:
                kwargs["tool_choice"] = {"type": "tool", "name": RESPOND}
        if tools:
            kwargs["tools"] = tools
        t0 = time.monotonic()
        try:
            message = await self._client.messages.create(**kwargs)
        except anthropic.APITimeoutError as exc:
            raise ProviderTimeoutError(
                f"{self.provider} at {self.base_url} did not answer in time", provider=self.provider
            ) from exc
        except anthropic.APIConnectionError as exc:
            raise ProviderError(
                f"cannot reach {self.provider} at {self.base_url} ({exc}); check the base URL",
                retryable=True,
                provider=self.provider,
            ) from exc
        except anthropic.APIStatusError as exc:
            raise self._status_error(exc) from exc
        except (anthropic.APIResponseValidationError, ValueError) as exc:
            raise ProviderError(
                f"{self.provider} returned a body that is not a message ({type(exc).__name__})",
                retryable=True,
                provider=self.provider,
                status=502,
            ) from exc
        return self._response(message, time.monotonic() - t0)

    def _status_error(self, exc: anthropic.APIStatusError) -> ProviderError:
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error", {}) if isinstance(body.get("error"), dict) else {}
        detail = str(error.get("message") or exc.message)
        if status == 429:
            retry = exc.response.headers.get("retry-after")
            try:
                retry_after = float(retry) if retry else None
            except ValueError:
                retry_after = None
            return ProviderRateLimitError(
                f"{self.provider} rate limit: {detail}",
                provider=self.provider,
                retry_after_s=retry_after,
            )
        if status == 401:
            detail = f"{detail}; check the key in {self.api_key_env}"
        elif status == 404:
            detail = f"{detail}; check the model name {self.model!r}"
        return ProviderError(
            f"{self.provider} answered HTTP {status}: {detail}",
            retryable=status >= 500 or status in _RETRYABLE_STATUS,
            provider=self.provider,
            status=status,
        )

    def _response(self, message: Any, latency: float) -> ModelResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        answer: str | None = None
        for block in message.content:
            kind = getattr(block, "type", None)
            if kind == "text":
                texts.append(block.text)
            elif kind == "tool_use":
                if block.name == RESPOND:
                    answer = json.dumps(block.input)
                else:
                    calls.append(
                        ToolCall(id=block.id, name=block.name, arguments=dict(block.input))
                    )
        stop = message.stop_reason
        finish = "length" if stop == "max_tokens" else "stop"
        if calls and answer is None:
            finish = "tool_calls"
        return ModelResponse(
            text=answer if answer is not None else "".join(texts),
            model=self._name,
            tool_calls=tuple(calls) if answer is None else (),
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            latency_s=latency,
            finish_reason=finish,  # type: ignore[arg-type]  # one of the literals above
        )


def to_messages(request: ModelRequest) -> tuple[str, list[dict[str, Any]]]:
    """Corral's conversation as Anthropic's `system` string and `messages` list."""
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    out: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            continue
        if m.role == "assistant" and m.tool_calls:
            content: list[dict[str, Any]] = []
            if m.content:
                content.append({"type": "text", "text": m.content})
            content.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in m.tool_calls
            )
            out.append({"role": "assistant", "content": content})
            continue
        out.append({"role": m.role, "content": m.content})
    return system, out
