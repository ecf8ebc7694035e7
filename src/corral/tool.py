"""Typed tools: a function whose signature is its JSON schema.

Arguments a model proposes are validated before the tool runs. A hallucinated parameter, a missing
one or a wrong type yields a `ToolArgumentsError` that the agent loop returns to the model as a
structured tool result; the function itself never sees bad arguments.

A tool that changes the world declares `side_effect=True`. It then receives a stable
`idempotency_key` (`run_id:step_id`) if its signature asks for one, and the runtime records each
executed effect so a step re-run after a crash returns the recorded result instead of repeating it.

Arguments bound for a side-effecting tool are sanitized after schema validation: control
characters (other than tab and newline) are stripped from every string, a string longer than
`max_arg_chars` is refused, and the tool's own `validators` run last. A refusal is the same
structured `ToolArgumentsError` a schema failure is: the tool does not run. A tool may also require
a human's approval (`approval=`, see `corral.humans.Approval`).
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from corral.contracts import JsonValue, dump_payload
from corral.humans import Approval
from corral.model import ToolSpec

__all__ = ["Tool", "ToolArgumentsError", "tool"]

ApprovalSpec = Literal["never", "always"] | Approval | Callable[[Any], bool] | None
Validator = Callable[[Any], None]
"""Called with the validated arguments (a Pydantic model); raises `ValueError` to refuse them."""
_RESERVED = ("idempotency_key",)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
DEFAULT_MAX_ARG_CHARS = 10_000


def _approval(spec: ApprovalSpec) -> Approval | None:
    if spec is None or spec == "never":
        return None
    if spec == "always":
        return Approval()
    if isinstance(spec, Approval):
        return spec
    if callable(spec):
        return Approval(when=spec)
    raise TypeError(f"approval must be 'never', 'always', an Approval or a predicate, got {spec!r}")


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _CONTROL.sub("", value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _too_long(value: Any, limit: int, loc: str = "") -> list[dict[str, str]]:
    if isinstance(value, str) and len(value) > limit:
        return [{"loc": loc, "msg": f"text of {len(value)} characters exceeds the limit {limit}"}]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _too_long(v, limit, f"{loc}.{k}".strip("."))]
    if isinstance(value, list):
        return [
            e for i, v in enumerate(value) for e in _too_long(v, limit, f"{loc}.{i}".strip("."))
        ]
    return []


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
    approval: Approval | None = None
    """When a call must wait for a human's yes (None: never)."""
    wants_idempotency_key: bool = False
    validators: tuple[Validator, ...] = ()
    """Extra checks on a side-effecting tool's validated arguments (raise `ValueError`)."""
    max_arg_chars: int = DEFAULT_MAX_ARG_CHARS
    """Longest text a side-effecting tool accepts in one argument."""

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
        if self.side_effect:
            arguments = _clean(arguments)
            too_long = _too_long(arguments, self.max_arg_chars)
            if too_long:
                raise ToolArgumentsError(self.name, too_long)
        try:
            parsed = self.arguments.model_validate(arguments)
        except ValidationError as exc:
            errors = [
                {"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"]}
                for err in exc.errors(include_url=False)
            ]
            raise ToolArgumentsError(self.name, errors) from exc
        for check in self.validators:
            try:
                check(parsed)
            except ValueError as exc:
                raise ToolArgumentsError(
                    self.name,
                    [{"loc": "", "msg": f"{getattr(check, '__name__', 'validator')}: {exc}"}],
                ) from exc
        return parsed

    def arguments_of(self, parsed: BaseModel) -> dict[str, JsonValue]:
        """The validated (and sanitized) arguments as JSON data: what runs and what is audited."""
        data: dict[str, JsonValue] = parsed.model_dump(mode="json")
        return data

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
    approval: ApprovalSpec = "never",
    validators: Sequence[Validator] = (),
    max_arg_chars: int = DEFAULT_MAX_ARG_CHARS,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    side_effect: bool = False,
    approval: ApprovalSpec = "never",
    validators: Sequence[Validator] = (),
    max_arg_chars: int = DEFAULT_MAX_ARG_CHARS,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a typed function (sync or async) into a `Tool`.

    The docstring's first paragraph becomes the description the model sees. A parameter named
    `idempotency_key` is filled by the runtime, not the model.

    Args:
        name: The name the model sees (default: the function's).
        side_effect: The tool changes the world: it gets an idempotency key, its effect is
            recorded (never repeated after a crash), its arguments are sanitized and every call
            is written to the audit log.
        approval: `never`, `always`, a predicate over the validated arguments, or an
            `Approval` (with a timeout and a default); `corral.above("amount_usd", 100)`.
        validators: Extra checks of a side-effecting tool's arguments; raise `ValueError`.
        max_arg_chars: Longest text a side-effecting tool accepts in one argument.

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
            approval=_approval(approval),
            wants_idempotency_key=wants_key,
            validators=tuple(validators),
            max_arg_chars=max_arg_chars,
        )

    if fn is not None:
        return build(fn)
    return build
