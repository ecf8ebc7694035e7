"""The model seam: one async call from a request to a response.

Every provider (`sim`, `local`, `openai`, `anthropic`) implements `Model`; the guard chain
(`corral.guards.chain`) calls it and prices its answers through a `Pricer`. Requests and
responses are plain frozen values so they can be journaled, hashed and compared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Literal, Protocol

from corral._dataclass import quick_init

__all__ = [
    "UNPRICED",
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "Pricer",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "error"]


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A tool invocation proposed by the model; `arguments` are unvalidated."""

    id: str
    name: str
    arguments: dict[str, Any]


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One chat message. `tool_calls` on assistant messages, `tool_call_id` on tool results."""

    _new: ClassVar[Callable[..., Message]]
    """`Message(...)` without the class call's keyword dict (see `corral._dataclass`)."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    """What the model is told about a tool: its name, purpose and JSON schema of arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRequest:
    """Everything a provider needs for one call."""

    _new: ClassVar[Callable[..., ModelRequest]]
    """`ModelRequest(...)` without the class call's keyword dict (see `corral._dataclass`)."""

    model: str
    messages: tuple[Message, ...]
    output_schema: Mapping[str, Any] | None = None
    """JSON schema the answer must satisfy; providers that support it constrain decoding."""
    tools: tuple[ToolSpec, ...] = ()
    max_output_tokens: int = 512
    temperature: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict)
    """Free-form tags (run id, agent, step) for providers and guards; never sent as prompt."""


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Tokens and money for one call or a sum of calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            calls=self.calls + other.calls,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": str(self.cost_usd),
            "calls": self.calls,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            cost_usd=Decimal(str(data.get("cost_usd", "0"))),
            calls=int(data.get("calls", 0)),
        )


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ModelResponse:
    """A provider's answer: text (JSON text when an output schema was given) and/or tool calls."""

    _new: ClassVar[Callable[..., ModelResponse]]
    """`ModelResponse(...)` without the class call's keyword dict (see `corral._dataclass`)."""

    text: str
    model: str
    tool_calls: tuple[ToolCall, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: FinishReason = "stop"
    cost_usd: Decimal | None = None
    """Set by the pricing layer; providers leave it `None`."""
    remaining_requests: int | None = None
    """What the provider's rate-limit headers said is left (fed to Corral's limiter)."""
    remaining_tokens: int | None = None
    cached: bool = False
    """Served from the response cache: no provider call, $0."""

    def with_cost(self, cost_usd: Decimal) -> ModelResponse:
        """This response priced: the same answer with `cost_usd` set."""
        return ModelResponse._new(
            text=self.text,
            model=self.model,
            tool_calls=self.tool_calls,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            latency_s=self.latency_s,
            finish_reason=self.finish_reason,
            cost_usd=cost_usd,
            remaining_requests=self.remaining_requests,
            remaining_tokens=self.remaining_tokens,
            cached=self.cached,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (journal, cache)."""
        return {
            "text": self.text,
            "model": self.model,
            "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ],
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_s": self.latency_s,
            "finish_reason": self.finish_reason,
            "cost_usd": str(self.cost_usd or 0),
            "cached": self.cached,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelResponse:
        """The inverse of `to_dict`."""
        return cls(
            text=data["text"],
            model=data["model"],
            tool_calls=tuple(
                ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"])
                for c in data["tool_calls"]
            ),
            input_tokens=data["input_tokens"],
            output_tokens=data["output_tokens"],
            latency_s=data["latency_s"],
            finish_reason=data["finish_reason"],
            cost_usd=Decimal(data["cost_usd"]),
            cached=bool(data.get("cached", False)),
        )


class Model(Protocol):
    """Anything that answers a `ModelRequest`.

    Raises:
        ProviderError: the backend failed; `retryable` tells whether trying again can help.
    """

    @property
    def name(self) -> str:
        """The concrete model id, e.g. `sim:default` or `local:smollm2-135m`."""
        ...

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer one request."""
        ...


class Pricer(Protocol):
    """What model calls cost, by concrete model name: what the budget reserves before a call
    and charges after it (`corral.models.pricing.PriceTable` is the app's)."""

    def call_costs(
        self, model: str, input_tokens: int, max_output_tokens: int
    ) -> tuple[Decimal, Decimal]:
        """(the worst case, the input alone) in USD of a call to `model`: what a budget reserves
        before it, and what a call that fails after it was sent is charged."""
        ...

    def price(self, model: str, response: ModelResponse) -> Decimal:
        """What `response`, answered by `model`, cost in USD."""
        ...


class _Unpriced:
    """The pricer of an app with no price table: reserves nothing up front and charges what
    the provider reported (`ModelResponse.cost_usd`, else nothing)."""

    def call_costs(
        self, model: str, input_tokens: int, max_output_tokens: int
    ) -> tuple[Decimal, Decimal]:
        return _ZERO, _ZERO

    def price(self, model: str, response: ModelResponse) -> Decimal:
        return response.cost_usd or _ZERO


_ZERO = Decimal(0)
UNPRICED: Pricer = _Unpriced()
"""A `Pricer` for models priced by nobody (tests, benchmarks of the chain alone)."""
