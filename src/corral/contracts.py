"""Payload contracts: every handoff is validated, and the identifiers that travel with a run.

A payload handed to an agent has been validated against the sender's output schema and the
receiver's input schema before the receiver sees it; a payload that fails either check becomes an
`AgentError` and is never delivered.
"""

from __future__ import annotations

import json
from typing import Any, NewType, TypeVar

from pydantic import BaseModel, ValidationError

from corral.errors import AgentError, PayloadError

__all__ = [
    "Json",
    "JsonValue",
    "RunId",
    "dump_payload",
    "model_json",
    "validate_payload",
]

RunId = NewType("RunId", str)
JsonValue = Any
"""A JSON-compatible value (dict, list, str, int, float, bool, None)."""
Json = dict[str, "Json"] | list["Json"] | str | int | float | bool | None
"""A JSON value, typed all the way down (for values handed to users, such as a partial result;
`JsonValue` stays `Any` where Corral passes JSON through)."""

M = TypeVar("M", bound=BaseModel)


def validate_payload(schema: type[M], payload: Any, *, agent: str, code: str, role: str) -> M:
    """Validate `payload` against `schema`, or raise an `AgentError` naming every problem.

    Args:
        schema: The Pydantic model the payload must satisfy.
        payload: A model instance, a dict, or JSON text.
        agent: The agent the check is for (named in the error).
        code: The error code to use (`invalid_input` or `invalid_output`).
        role: Words for the message, e.g. "input of" or "output of".

    Raises:
        AgentError: the payload does not fit; `details["errors"]` lists each problem.
    """
    # pydantic-core's validator and serializer directly: `model_validate` / `model_dump` are
    # Python wrappers that cost more than the work itself for an agent-sized payload, and this
    # runs several times per agent call. Their defaults are the same.
    validator = schema.__pydantic_validator__
    checked: M
    try:
        if type(payload) is str:  # first: agent handoffs and model answers are JSON text
            checked = validator.validate_json(payload)
        elif isinstance(payload, BaseModel):
            # Re-validate a dump even of the schema's own type: an instance can be built with
            # `model_construct` or mutated after validation.
            checked = validator.validate_python(payload.__pydantic_serializer__.to_python(payload))
        elif isinstance(payload, (str, bytes)):  # a tuple: `str | bytes` builds a union per call
            checked = validator.validate_json(payload)
        else:
            checked = validator.validate_python(payload)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False)
        ]
        summary = "; ".join(f"{e['loc'] or '<root>'}: {e['msg']}" for e in errors[:5])
        raise AgentError(
            f"{role} {agent!r} ({schema.__name__}) is invalid: {summary}",
            agent=agent,
            code=code,
            details={"errors": errors},
        ) from exc
    return checked


def model_json(value: BaseModel) -> str:
    """`value.model_dump_json()` without its Python wrapper (the hot paths' JSON form)."""
    return value.__pydantic_serializer__.to_json(value).decode()


def dump_payload(value: Any) -> JsonValue:
    """Turn a payload into plain JSON data, or raise `PayloadError` if it cannot be stored.

    Raises:
        PayloadError: the value is not JSON-serializable (names the offending type).
    """
    try:
        if isinstance(value, BaseModel):
            # JSON text, not Python data: only encoding finds text that UTF-8 cannot hold (a
            # lone surrogate such as "\ud800"), which would otherwise fail the run after its
            # start was written, at the first store or model call.
            text = value.__pydantic_serializer__.to_json(value).decode()
        else:
            text = json.dumps(value, ensure_ascii=False)
            text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(_not_unicode(exc.object, exc.start)) from exc
    except (TypeError, ValueError) as exc:
        if "surrogates not allowed" in str(exc):  # pydantic's wrapping of UnicodeEncodeError
            raise PayloadError(_not_unicode("", 0)) from exc
        raise PayloadError(
            f"payload is not JSON-serializable ({exc}); pass a Pydantic model or plain "
            "dict/list/str/int/float/bool/None values"
        ) from exc
    loaded: JsonValue = json.loads(text)
    return loaded


def _not_unicode(text: str, at: int) -> str:
    where = f" near {text[max(at - 20, 0) : at]!r}" if text[:at] else ""
    return (
        f"payload text is not valid Unicode: it holds a lone surrogate{where}, which no UTF-8 "
        "store or provider accepts; fix the text where it was produced (a half of an emoji "
        "that lost its other half, usually)"
    )
