"""Typed tools: a function whose signature is its JSON schema.

Arguments a model proposes are validated before the tool runs. A hallucinated parameter, a missing
one or a wrong type yields a `ToolArgumentsError` that the agent loop returns to the model as a
structured tool result; the function itself never sees bad arguments.

A tool that changes the world declares `side_effect=True`. It then receives a stable
`idempotency_key` (`run_id:step_id`) if its signature asks for one, and the runtime records each
executed effect so a step re-run after a crash returns the recorded result instead of repeating it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from corral.contracts import JsonValue, dump_payload
from corral.model import ToolSpec

__all__ = ["Tool", "ToolArgumentsError", "tool"]

ApprovalPolicy = Literal["never", "always"]
_RESERVED = ("idempotency_key",)


class ToolArgumentsError(Exception):
    """Arguments proposed for a tool do not fit its signature (an outcome, not a Corral failure).

    The agent loop turns this into a tool result for the model and counts it; it never escapes
    the agent as an exception.
    """

    def __init__(self, tool: str, errors: list[dict[str, str]]) -> None:
        summary = "; ".join(f"{e['loc'] or '<root>'}: {e['msg']}" for e in errors)
        super().__init__(f"invalid arguments for tool {tool!r}: {summary}")
        self.tool = tool
        self.errors = errors


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """A typed function an agent may call.

    Build one with the `@tool` decorator rather than directly.
    """

    name: str
    description: str
    fn: Callable[..., Any]
    arguments: type[BaseModel]
    side_effect: bool = False
    approval: ApprovalPolicy = "never"
    """`always`: a human must approve each call (enforced once approvals land; recorded now)."""
    wants_idempotency_key: bool = False

    @property
    def spec(self) -> ToolSpec:
        """What the model is told about this tool."""
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        return ToolSpec(name=self.name, description=self.description, parameters=schema)

    def validate(self, arguments: Any) -> BaseModel:
        """Check model-proposed arguments.

        Raises:
            ToolArgumentsError: an unknown, missing or mistyped argument.
        """
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(
                self.name,
                [{"loc": "", "msg": f"expected an object, got {type(arguments).__name__}"}],
            )
        try:
            return self.arguments.model_validate(arguments)
        except ValidationError as exc:
            errors = [
                {"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"]}
                for err in exc.errors(include_url=False)
            ]
            raise ToolArgumentsError(self.name, errors) from exc

    async def invoke(self, arguments: Any, *, idempotency_key: str | None = None) -> JsonValue:
        """Validate `arguments` and run the tool; returns its result as JSON data.

        Raises:
            ToolArgumentsError: the arguments do not fit; the function did not run.
        """
        parsed = self.validate(arguments)
        kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        if self.wants_idempotency_key:
            kwargs["idempotency_key"] = idempotency_key or ""
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(**kwargs)
        else:
            result = await asyncio.to_thread(self.fn, **kwargs)
        return dump_payload(result)


def _arguments_model(fn: Callable[..., Any], name: str) -> tuple[type[BaseModel], bool]:
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    wants_key = False
    for param in inspect.signature(fn).parameters.values():
        if param.name in _RESERVED:
            wants_key = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {name!r}: *args and **kwargs cannot be described to a model")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    model: type[BaseModel] = create_model(
        f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model, wants_key


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    side_effect: bool = False,
    approval: ApprovalPolicy = "never",
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    side_effect: bool = False,
    approval: ApprovalPolicy = "never",
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a typed function (sync or async) into a `Tool`.

    The docstring's first paragraph becomes the description the model sees. A parameter named
    `idempotency_key` is filled by the runtime, not the model.

    Example:
        ```python
        @tool(side_effect=True)
        async def refund(order_id: str, amount_usd: float, idempotency_key: str) -> dict:
            "Refund an order."
            return await payments.refund(order_id, amount_usd, key=idempotency_key)
        ```
    """

    def build(func: Callable[..., Any]) -> Tool:
        tool_name = name or func.__name__
        arguments, wants_key = _arguments_model(func, tool_name)
        doc = inspect.getdoc(func) or tool_name
        return Tool(
            name=tool_name,
            description=doc.split("\n\n")[0].strip(),
            fn=func,
            arguments=arguments,
            side_effect=side_effect,
            approval=approval,
            wants_idempotency_key=wants_key,
        )

    if fn is not None:
        return build(fn)
    return build
