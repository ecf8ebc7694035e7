"""OpenAI-compatible providers through the official `openai` SDK.

One adapter for OpenAI, Azure OpenAI's v1 endpoint, vLLM, Ollama, llama.cpp's server, `corral sim
serve` and every other server that speaks `/v1/chat/completions`. Structured output is asked for
with `response_format: json_schema`; tools are sent as functions; usage comes from the response.
The SDK's own retries are off (`max_retries=0`): Corral's guard chain retries, with its budget and
limiter in the loop. Every failure becomes a `ProviderError` that says whether a retry can help
and, for 429s, carries the `Retry-After` the server sent.

The API key is read from the environment variable the provider names (default
`OPENAI_API_KEY`) when the model is built; it is kept only inside the SDK client and never
logged, put in a prompt or recorded in a span.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import openai

from corral.errors import ProviderError, ProviderRateLimitError, ProviderTimeoutError
from corral.model import Message, ModelRequest, ModelResponse, ToolCall
from corral.secrets import require_secret

__all__ = ["OpenAIModel"]

log = logging.getLogger(__name__)
_RETRYABLE_STATUS = {408, 409, 425, 429}


class OpenAIModel:
    """A chat model behind an OpenAI-compatible endpoint.

    Args:
        name: Corral's name for it, `provider:model` (`openai:gpt-4o-mini`, `simhttp:small`).
        base_url: The endpoint (`https://api.openai.com/v1` when None).
        api_key_env: Environment variable holding the key.
        timeout_s: Per-request timeout inside the SDK (Corral's call timeout also applies).

    Raises:
        ConfigError: the key's environment variable is not set.
    """

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        secrets_file: str | None = None,
    ) -> None:
        self._name = name
        self.provider, _, self.model = name.partition(":")
        key = require_secret(api_key_env, secrets_file, provider=self.provider)
        self.base_url = base_url or "https://api.openai.com/v1"
        self.api_key_env = api_key_env
        self._client = openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout_s
        )

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIModel({self._name!r}, base_url={self.base_url!r})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [_message(m) for m in request.messages],
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
        }
        if request.output_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": dict(request.output_schema)},
            }
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        t0 = time.monotonic()
        try:
            raw = await self._client.chat.completions.with_raw_response.create(**kwargs)
            completion = raw.parse()
        except openai.APITimeoutError as exc:
            raise ProviderTimeoutError(
                f"{self.provider} at {self.base_url} did not answer in time", provider=self.provider
            ) from exc
        except openai.APIConnectionError as exc:
            raise ProviderError(
                f"cannot reach {self.provider} at {self.base_url} ({exc}); check the base URL "
                "and that the server is running",
                retryable=True,
                provider=self.provider,
            ) from exc
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from exc
        except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as exc:
            raise ProviderError(
                f"{self.provider} at {self.base_url} returned a body that is not a chat "
                f"completion ({type(exc).__name__})",
                retryable=True,
                provider=self.provider,
                status=502,
            ) from exc
        response = self._response(completion, request, time.monotonic() - t0)
        headers = raw.headers
        return dataclasses.replace(
            response,
            remaining_requests=_int(headers.get("x-ratelimit-remaining-requests")),
            remaining_tokens=_int(headers.get("x-ratelimit-remaining-tokens")),
        )

    def _status_error(self, exc: openai.APIStatusError) -> ProviderError:
        status = exc.status_code
        detail = _detail(exc)
        if status == 429:
            return ProviderRateLimitError(
                f"{self.provider} rate limit: {detail}",
                provider=self.provider,
                retry_after_s=_retry_after(exc.response.headers),
            )
        if status == 401:
            message = (
                f"{self.provider} rejected the API key from {self.api_key_env} ({detail}); "
                "check the key"
            )
        elif status == 404:
            message = (
                f"{self.provider} at {self.base_url} has no model {self.model!r} or no such "
                f"endpoint ({detail}); check the model name and the base URL"
            )
        else:
            message = f"{self.provider} answered HTTP {status}: {detail}"
        return ProviderError(
            message,
            retryable=status >= 500 or status in _RETRYABLE_STATUS,
            provider=self.provider,
            status=status,
        )

    def _response(self, completion: Any, request: ModelRequest, latency: float) -> ModelResponse:
        if not getattr(completion, "choices", None):
            raise ProviderError(
                f"{self.provider} returned no choices", retryable=True, provider=self.provider
            )
        choice = completion.choices[0]
        message = choice.message
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=_arguments(c.function.arguments))
            for c in (message.tool_calls or [])
            if getattr(c, "function", None) is not None
        )
        usage = getattr(completion, "usage", None)
        if usage is None:
            # Charge conservatively: the whole prompt plus the maximum output.
            log.warning(
                "%s returned no usage; charging the worst case",
                self.provider,
                extra={"model": self._name},
            )
            input_tokens = sum(len(m.content) for m in request.messages) // 4 + 1
            output_tokens = request.max_output_tokens
        else:
            input_tokens, output_tokens = usage.prompt_tokens, usage.completion_tokens
        finish = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}.get(
            choice.finish_reason or "stop", "stop"
        )
        return ModelResponse(
            text=message.content or "",
            model=self._name,
            tool_calls=calls,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=latency,
            finish_reason=finish,  # type: ignore[arg-type]  # one of the literals above
        )


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _arguments(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {"_unparsed": text}
    return value if isinstance(value, dict) else {"_value": value}


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value else None
    except ValueError:
        return None


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                continue
    return None


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return exc.message
