"""A scripted model for tests."""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from corral.model import ModelRequest, ModelResponse, ToolCall

Step = (
    ModelResponse | BaseException | Callable[[ModelRequest], ModelResponse] | str | dict[str, Any]
)


def reply(
    value: str | dict[str, Any] | None = None,
    *,
    tool_calls: Iterable[ToolCall] = (),
    input_tokens: int = 10,
    output_tokens: int = 5,
    model: str = "fake:model",
) -> ModelResponse:
    """A canned response; a dict becomes its JSON text."""
    text = json.dumps(value) if isinstance(value, dict) else (value or "")
    return ModelResponse(
        text=text,
        model=model,
        tool_calls=tuple(tool_calls),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        finish_reason="tool_calls" if tool_calls else "stop",
    )


class FakeModel:
    """Each call pops the next scripted step: a response, a str/dict (wrapped with `reply`), an
    exception to raise, or a function of the request. Fails loudly when the script runs out."""

    def __init__(self, script: Iterable[Step] = (), *, name: str = "fake:model") -> None:
        self._script: deque[Step] = deque(script)
        self._name = name
        self.requests: list[ModelRequest] = []
        self.responses: list[ModelResponse] = []
        """Every answer, with the usage the provider reported."""

    @property
    def name(self) -> str:
        return self._name

    def push(self, *steps: Step) -> None:
        """Add steps to the end of the script."""
        self._script.extend(steps)

    def assert_done(self) -> None:
        """Fail if scripted steps were left unused."""
        assert not self._script, f"{len(self._script)} scripted model steps were not used"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        if not self._script:
            raise AssertionError(f"FakeModel script ran out at call {len(self.requests)}")
        step = self._script.popleft()
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, ModelResponse):
            return step
        if isinstance(step, (str, dict)):
            return reply(step, model=self._name)
        return step(request)


class CountingModel:
    """Wraps any model and counts what reached it: `calls`, and `errors` by exception type
    (what a provider would have billed or refused)."""

    def __init__(self, inner: Any, *, name: str | None = None) -> None:
        self.inner = inner
        self._name = name
        self.calls = 0
        self.errors: Counter[str] = Counter()
        self.requests: list[ModelRequest] = []
        self.responses: list[ModelResponse] = []
        """Every answer, with the usage the provider reported."""

    @property
    def name(self) -> str:
        return self._name or str(self.inner.name)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        self.requests.append(request)
        try:
            response: ModelResponse = await self.inner.complete(request)
        except Exception as exc:
            self.errors[type(exc).__name__] += 1
            raise
        self.responses.append(response)
        return response
