"""Typed tools: a function whose signature is its JSON schema.

Arguments a model proposes are validated before the tool runs. A hallucinated parameter, a missing
one or a wrong type yields a `ToolArgumentsError` that the agent loop returns to the model as a
structured tool result; the function itself never sees bad arguments.

A tool that changes the world declares `side_effect=True`. It then receives a stable
`idempotency_key` (`run_id:step_id`) if its signature asks for one, and the runtime records each
executed effect so a step re-run after a crash returns the recorded result instead of repeating it.

Arguments bound for a side-effecting tool are sanitized before schema validation, in keys and
values alike: control characters (C0 other than tab and newline, DEL, C1), format characters
(bidi overrides such as U+202E, zero-width characters, the BOM) and the line and paragraph
separators U+2028/U+2029 are removed, because they make what a person reads in an approval or an
audit entry differ from what runs. The arguments are then bounded (`ArgLimits`, from `[humans]`:
the longest string, the total text, the number of items), validated against the schema (NaN and
Infinity refused unless a parameter says `Field(allow_inf_nan=True)`), and the tool's own
`validators` run last. A refusal is the same structured `ToolArgumentsError` a schema failure is:
the tool does not run (and the run's audit log records the refusal). A tool may also require a
human's approval (`approval=`, see `corral.humans.Approval`).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from corral.contracts import JsonValue, dump_payload
from corral.humans import Approval, HumanPolicy
from corral.model import ToolSpec

__all__ = ["ArgLimits", "Tool", "ToolArgumentsError", "tool"]

ApprovalSpec = Literal["never", "always"] | Approval | Callable[[Any], bool] | None
Validator = Callable[[Any], None]
"""Called with the validated arguments (a Pydantic model); raises `ValueError` to refuse them."""
_RESERVED = ("idempotency_key",)
_INVISIBLE = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
"""Unicode categories removed from side-effect arguments: control, format (bidi, zero-width),
lone surrogates (JSON can carry them; they are not text), line and paragraph separators."""
_KEPT = frozenset("\t\n")
DEFAULT_MAX_ARG_CHARS = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ArgLimits:
    """How much a model may put into one side-effecting tool call (`[humans]` in the config).

    A per-string limit alone let 60 strings of 9,000 characters through; the total and the item
    count bound the call as a whole.
    """

    chars: int = DEFAULT_MAX_ARG_CHARS
    """Longest text in one string (a key or a value)."""
    total_chars: int = 100_000
    """All the text of the call together: every key and every string value."""
    items: int = 1_000
    """List items and object entries, counted over every level."""

    @classmethod
    def of(cls, policy: HumanPolicy) -> ArgLimits:
        """The limits the `[humans]` table sets."""
        return cls(
            chars=policy.max_arg_chars,
            total_chars=policy.max_arg_total_chars,
            items=policy.max_arg_items,
        )


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


def _clean_text(text: str) -> str:
    if text.isprintable():  # the common case, checked in C: nothing to remove
        return text
    return "".join(c for c in text if c in _KEPT or unicodedata.category(c) not in _INVISIBLE)


def _clean(value: Any, errors: list[dict[str, str]], loc: str = "") -> Any:
    """`value` with invisible characters removed from every string, keys included; two keys that
    become one are refused (which of them would run is not for the sanitizer to pick)."""
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            clean_key = _clean_text(key) if isinstance(key, str) else key
            where = f"{loc}.{clean_key}".strip(".")
            if clean_key in out:
                errors.append(
                    {"loc": where, "msg": "two keys are the same once invisible characters go"}
                )
                continue
            out[clean_key] = _clean(item, errors, where)
        return out
    if isinstance(value, list):
        return [_clean(v, errors, f"{loc}.{i}".strip(".")) for i, v in enumerate(value)]
    return value


def _over_limits(value: Any, limits: ArgLimits, chars: int) -> list[dict[str, str]]:
    """What in `value` exceeds `limits` (each string against `chars`)."""
    errors: list[dict[str, str]] = []
    total = items = 0

    def text(s: str, loc: str) -> None:
        nonlocal total
        total += len(s)
        if len(s) > chars:
            errors.append(
                {"loc": loc, "msg": f"text of {len(s)} characters exceeds the limit {chars}"}
            )

    def walk(node: Any, loc: str) -> None:
        nonlocal items
        if isinstance(node, str):
            text(node, loc)
        elif isinstance(node, dict):
            items += len(node)
            for key, item in node.items():
                where = f"{loc}.{key}".strip(".")
                if isinstance(key, str):
                    text(key, where)
                walk(item, where)
        elif isinstance(node, list):
            items += len(node)
            for i, item in enumerate(node):
                walk(item, f"{loc}.{i}".strip("."))

    walk(value, "")
    if total > limits.total_chars:
        errors.append(
            {
                "loc": "",
                "msg": f"{total} characters of text in all exceed the limit {limits.total_chars}",
            }
        )
    if items > limits.items:
        errors.append({"loc": "", "msg": f"{items} items in all exceed the limit {limits.items}"})
    return errors


def _allows_inf_nan(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields[name]
    return any(getattr(m, "allow_inf_nan", None) is True for m in field.metadata)


def _non_finite(value: Any, loc: str = "") -> list[dict[str, str]]:
    """Where a validated value holds NaN or an infinity that its field did not explicitly allow:
    models nested in the arguments have their own configuration, so they are walked here."""
    if isinstance(value, float) and not math.isfinite(value):
        return [{"loc": loc, "msg": f"{value} is not a finite number"}]
    if isinstance(value, Decimal) and not value.is_finite():
        return [{"loc": loc, "msg": f"{value} is not a finite number"}]
    if isinstance(value, BaseModel):
        model = type(value)
        return [
            e
            for name in model.model_fields
            if not _allows_inf_nan(model, name)
            for e in _non_finite(getattr(value, name), f"{loc}.{name}".strip("."))
        ]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _non_finite(v, f"{loc}.{k}".strip("."))]
    if isinstance(value, list | tuple | set | frozenset):
        return [e for i, v in enumerate(value) for e in _non_finite(v, f"{loc}.{i}".strip("."))]
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
    max_arg_chars: int | None = None
    """Longest text a side-effecting tool accepts in one string (None: `[humans] max_arg_chars`)."""

    @property
    def spec(self) -> ToolSpec:
        """What the model is told about this tool."""
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        return ToolSpec(name=self.name, description=self.description, parameters=schema)

    def validate(self, arguments: Any, limits: ArgLimits | None = None) -> BaseModel:
        """Check model-proposed arguments (a side-effecting tool's sanitized and bounded first).

        Args:
            arguments: The proposed arguments (JSON data).
            limits: The app's limits (`ArgLimits.of(config.humans)`; default: `ArgLimits()`);
                the tool's own `max_arg_chars`, when set, wins for the longest string.

        Raises:
            ToolArgumentsError: an unknown, missing or mistyped argument, or (side effects) one
                over the limits, a non-finite number, or refused by a validator.
        """
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(
                self.name,
                [{"loc": "", "msg": f"expected an object, got {type(arguments).__name__}"}],
            )
        if self.side_effect:
            limits = limits or ArgLimits()
            problems: list[dict[str, str]] = []
            arguments = _clean(arguments, problems)
            problems += _over_limits(arguments, limits, self.max_arg_chars or limits.chars)
            if problems:
                raise ToolArgumentsError(self.name, problems)
        try:
            parsed = self.arguments.model_validate(arguments)
        except ValidationError as exc:
            errors = [
                {"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"]}
                for err in exc.errors(include_url=False)
            ]
            raise ToolArgumentsError(self.name, errors) from exc
        if self.side_effect and (non_finite := _non_finite(parsed)):
            raise ToolArgumentsError(self.name, non_finite)
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

    async def invoke(
        self,
        arguments: Any,
        *,
        idempotency_key: str | None = None,
        limits: ArgLimits | None = None,
    ) -> JsonValue:
        """Validate `arguments` (within `limits`) and run the tool; returns its result as JSON.

        Raises:
            ToolArgumentsError: the arguments do not fit; the function did not run.
        """
        parsed = self.validate(arguments, limits)
        kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        if self.wants_idempotency_key:
            kwargs["idempotency_key"] = idempotency_key or ""
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(**kwargs)
        else:
            result = await asyncio.to_thread(self.fn, **kwargs)
        return dump_payload(result)


def _arguments_model(
    fn: Callable[..., Any], name: str, *, side_effect: bool
) -> tuple[type[BaseModel], bool]:
    hints = get_type_hints(fn, include_extras=True)  # keep `Annotated[..., Field(...)]`
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
    # A side effect's numbers are finite unless a parameter says otherwise
    # (`Annotated[float, Field(allow_inf_nan=True)]`): `NaN > 100` is false, so a NaN amount
    # would pass every threshold check written as a comparison.
    config = ConfigDict(extra="forbid", allow_inf_nan=not side_effect)
    model: type[BaseModel] = create_model(f"{name}_arguments", __config__=config, **fields)
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
    max_arg_chars: int | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    side_effect: bool = False,
    approval: ApprovalSpec = "never",
    validators: Sequence[Validator] = (),
    max_arg_chars: int | None = None,
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
        max_arg_chars: Longest text a side-effecting tool accepts in one string (default:
            `[humans] max_arg_chars`, 10,000).

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
        if max_arg_chars is not None and max_arg_chars < 1:
            raise ValueError(f"tool {tool_name!r}: max_arg_chars must be >= 1, got {max_arg_chars}")
        arguments, wants_key = _arguments_model(func, tool_name, side_effect=side_effect)
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
