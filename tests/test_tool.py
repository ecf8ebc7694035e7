"""Tools: the signature is the JSON schema, side effects are declared, and arguments that do not
fit come back as a structured error without running the function."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from corral import PayloadError, RunContext, Tool, tool
from corral.tool import ArgLimits, ToolArgumentsError
from tests.helpers import ephemeral_app


class Address(BaseModel):
    city: str
    zip_code: str = Field(pattern=r"^\d{5}$")


class Order(BaseModel):
    order: str


class Customer(BaseModel):
    customer: str


@tool
async def ship(order_id: str, address: Address, express: bool = False) -> dict[str, str]:
    """Ship an order to an address.

    Everything after the first paragraph is for the reader, not the model.
    """
    return {"order": order_id, "to": address.city, "speed": "express" if express else "normal"}


# -- schema from the signature --------------------------------------------------------------------


def test_the_signature_is_the_schema():
    spec = ship.spec
    assert spec.name == "ship" and spec.description == "Ship an order to an address."
    params = spec.parameters
    assert params["type"] == "object" and "title" not in params
    assert params["required"] == ["order_id", "address"]
    assert params["properties"]["order_id"]["type"] == "string"
    assert params["properties"]["express"] == {
        "default": False,
        "title": "Express",
        "type": "boolean",
    }
    assert params["additionalProperties"] is False  # a made-up argument is an error, not ignored
    # Nested models travel as JSON-schema definitions, constraints included.
    address = params["$defs"]["Address"]
    assert address["properties"]["zip_code"]["pattern"] == r"^\d{5}$"


def test_literal_and_list_parameters_and_a_chosen_name():
    @tool(name="set_priority")
    def prioritise(ticket: str, level: Literal["low", "high"], labels: list[str]) -> str:
        return ticket

    props = prioritise.spec.parameters["properties"]
    assert prioritise.name == "set_priority" and prioritise.description == "set_priority"
    assert props["level"]["enum"] == ["low", "high"]
    assert props["labels"] == {"items": {"type": "string"}, "title": "Labels", "type": "array"}


def test_the_idempotency_key_is_the_runtimes_not_the_models():
    @tool(side_effect=True)
    def refund(order_id: str, idempotency_key: str) -> str:
        """Refund an order."""
        return idempotency_key

    assert refund.wants_idempotency_key and refund.side_effect
    assert list(refund.spec.parameters["properties"]) == ["order_id"]
    assert not ship.wants_idempotency_key and not ship.side_effect


def test_variadic_parameters_cannot_be_described():
    def anything(*args: str) -> None: ...

    with pytest.raises(TypeError, match=r"\*args and \*\*kwargs"):
        tool(anything)


# -- invalid arguments -> structured error --------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "loc", "msg"),
    [
        pytest.param({"order_id": "o1"}, "address", "Field required", id="missing"),
        pytest.param(
            {"order_id": "o1", "address": {"city": "Oslo", "zip_code": "1"}, "rush": True},
            "rush",
            "Extra inputs are not permitted",
            id="made-up",
        ),
        pytest.param(
            {"order_id": "o1", "address": {"city": "Oslo", "zip_code": "abc"}},
            "address.zip_code",
            "String should match pattern",
            id="nested-constraint",
        ),
        pytest.param(
            {"order_id": "o1", "address": {"city": "Oslo", "zip_code": "12345"}, "express": "no!"},
            "express",
            "valid boolean",
            id="wrong-type",
        ),
        pytest.param(["o1"], "", "expected an object, got list", id="not-an-object"),
    ],
)
async def test_bad_arguments_are_a_structured_error_and_the_tool_does_not_run(arguments, loc, msg):
    ran: list[str] = []

    @tool
    def guarded(order_id: str, address: Address, express: bool = False) -> str:
        ran.append(order_id)
        return "ran"

    with pytest.raises(ToolArgumentsError) as info:
        await guarded.invoke(arguments)
    error = info.value
    assert error.tool == "guarded" and ran == []
    assert any(e["loc"] == loc and msg in e["msg"] for e in error.errors), error.errors
    assert str(error).startswith("invalid arguments for tool 'guarded': ")


async def test_valid_arguments_run_sync_and_async_tools():
    @tool
    def add(a: int, b: int = 1) -> int:
        return a + b

    assert await add.invoke({"a": 2}) == 3
    assert await add.invoke({"a": "2", "b": 5}) == 7  # coerced like any Pydantic field
    shipped = await ship.invoke(
        {"order_id": "o1", "address": {"city": "Oslo", "zip_code": "01234"}}
    )
    assert shipped == {"order": "o1", "to": "Oslo", "speed": "normal"}


async def test_a_workflow_calling_a_tool_with_bad_arguments_gets_a_payload_error():
    app, _, _ = ephemeral_app()
    seen: list[PayloadError] = []

    @app.workflow
    async def send(ctx: RunContext, q: Order) -> None:
        try:
            await ctx.tool(ship, order_id=q.order, address={"city": "Oslo"})
        except PayloadError as exc:
            seen.append(exc)

    result = await app.run("send", {"order": "o1"})
    assert result.ok
    [error] = seen
    assert error.code == "invalid_payload"
    assert error.errors[0]["loc"] == "address.zip_code" and "ship" in str(error)


# -- side effects -----------------------------------------------------------------------------------


async def test_a_side_effecting_tool_receives_the_runs_stable_key():
    keys: list[str] = []

    @tool(side_effect=True)
    async def charge(customer: str, cents: int, idempotency_key: str) -> str:
        """Charge a customer."""
        keys.append(idempotency_key)
        return f"charged {customer}"

    app, _, _ = ephemeral_app()

    @app.workflow
    async def bill(ctx: RunContext, q: Customer) -> None:
        assert await ctx.tool(charge, customer=q.customer, cents=100) == f"charged {q.customer}"
        await ctx.tool(charge, customer=q.customer, cents=200)

    result = await app.run("bill", {"customer": "ada"})
    assert result.ok and keys == [f"{result.run_id}:1", f"{result.run_id}:2"]


async def test_side_effect_arguments_are_sanitized_before_validation_and_limited():
    @tool(side_effect=True, max_arg_chars=20)
    def post(channel: str, body: str) -> str:
        return body

    @tool
    def echo(body: str) -> str:
        return body

    # Control characters are stripped (tab and newline kept) only where the world is changed.
    assert await post.invoke({"channel": "#ops", "body": "a\x00b\tc\nd\x1b"}) == "ab\tc\nd"
    assert await echo.invoke({"body": "a\x00b"}) == "a\x00b"
    with pytest.raises(ToolArgumentsError) as info:
        await post.invoke({"channel": "#ops", "body": "x" * 21})
    assert info.value.errors == [
        {"loc": "body", "msg": "text of 21 characters exceeds the limit 20"}
    ]


async def test_validators_refuse_side_effect_arguments_with_their_name():
    def small_amounts(arguments: BaseModel) -> None:
        if getattr(arguments, "cents", 0) > 10_000:
            raise ValueError("over $100 needs a person")

    @tool(side_effect=True, validators=[small_amounts])
    def refund(order_id: str, cents: int) -> str:
        return order_id

    assert await refund.invoke({"order_id": "o1", "cents": 500}) == "o1"
    with pytest.raises(ToolArgumentsError, match="small_amounts: over \\$100 needs a person"):
        await refund.invoke({"order_id": "o1", "cents": 50_000})


def test_a_tool_is_a_frozen_value():
    assert isinstance(ship, Tool)
    with pytest.raises(AttributeError):
        ship.side_effect = True  # type: ignore[misc]


# -- sanitizing and bounding side-effect arguments (issue #17) -------------------------------------


@tool(side_effect=True)
def post_note(channel: str, body: str, tags: dict[str, str] | None = None) -> str:
    return body


@pytest.mark.parametrize(
    ("smuggled", "char"),
    [
        pytest.param("a\x85b", "\x85", id="c1-next-line"),
        pytest.param("a\x9bb", "\x9b", id="c1-csi"),
        pytest.param("a\u202eb", "\u202e", id="bidi-override"),
        pytest.param("a\u2066b\u2069", "\u2066", id="bidi-isolate"),
        pytest.param("a\u200bb", "\u200b", id="zero-width-space"),
        pytest.param("a\u2060b", "\u2060", id="word-joiner"),
        pytest.param("\ufeffab", "\ufeff", id="bom"),
        pytest.param("a\u2028b", "\u2028", id="line-separator"),
        pytest.param("a\u2029b", "\u2029", id="paragraph-separator"),
        pytest.param("a\x7fb", "\x7f", id="del"),
        pytest.param("a\ud800b", "\ud800", id="lone-surrogate"),
        pytest.param("a\U000e0041b", "\U000e0041", id="tag-character"),
    ],
)
def test_invisible_characters_are_removed_from_side_effect_values_and_keys(smuggled, char):
    parsed = post_note.validate({"channel": "#ops", "body": smuggled, "tags": {smuggled: smuggled}})
    assert char not in parsed.body and "a" in parsed.body and "b" in parsed.body
    assert parsed.tags is not None
    assert all(char not in k and char not in v for k, v in parsed.tags.items())


def test_tab_newline_and_visible_unicode_survive_sanitizing():
    text = "naïve café\tmenu\n日本語 — ok"
    assert post_note.validate({"channel": "#ops", "body": text}).body == text


def test_keys_that_collide_once_cleaned_are_refused():
    with pytest.raises(ToolArgumentsError) as info:
        post_note.validate({"channel": "#ops", "body": "x", "tags": {"to": "a", "t\u200bo": "b"}})
    assert info.value.errors == [
        {"loc": "tags.to", "msg": "two keys are the same once invisible characters go"}
    ]


def test_the_whole_call_is_bounded_not_only_each_string():
    """60 strings of 9,000 characters each passed a per-string limit of 10,000."""

    @tool(side_effect=True)
    def bulk(lines: list[str]) -> int:
        return len(lines)

    with pytest.raises(ToolArgumentsError) as info:
        bulk.validate({"lines": ["x" * 9_000] * 60})
    assert info.value.errors == [
        {"loc": "", "msg": "540005 characters of text in all exceed the limit 100000"}
    ]
    with pytest.raises(ToolArgumentsError, match="1002 items in all exceed the limit 1000"):
        bulk.validate({"lines": ["x"] * 1_001})
    tight = ArgLimits(chars=5, total_chars=12, items=3)
    assert bulk.validate({"lines": ["abc", "de"]}, tight).lines == ["abc", "de"]
    with pytest.raises(
        ToolArgumentsError, match="lines.0: text of 6 characters exceeds the limit 5"
    ):
        bulk.validate({"lines": ["abcdef"]}, tight)
    with pytest.raises(ToolArgumentsError, match="4 items in all exceed the limit 3"):
        bulk.validate({"lines": ["a", "b", "c"]}, tight)


def test_a_tools_own_max_arg_chars_wins_over_the_apps_limit():
    @tool(side_effect=True, max_arg_chars=3)
    def short(text: str) -> str:
        return text

    with pytest.raises(ToolArgumentsError, match="exceeds the limit 3"):
        short.validate({"text": "abcd"}, ArgLimits(chars=100))
    with pytest.raises(ValueError, match="max_arg_chars must be >= 1"):
        tool(side_effect=True, max_arg_chars=0)(lambda text: text)


class Charge(BaseModel):
    cents: float


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"amount": float("nan")}, id="nan"),
        pytest.param({"amount": "NaN"}, id="nan-text"),
        pytest.param({"amount": float("inf")}, id="infinity"),
        pytest.param({"amount": "-Infinity"}, id="minus-infinity-text"),
        pytest.param({"amount": 1, "splits": [1.0, float("nan")]}, id="in-a-list"),
        pytest.param({"amount": 1, "charge": {"cents": float("inf")}}, id="in-a-nested-model"),
    ],
)
def test_side_effect_arguments_refuse_non_finite_numbers(arguments):
    @tool(side_effect=True)
    def pay(amount: float, splits: list[float] | None = None, charge: Charge | None = None) -> str:
        return "paid"

    with pytest.raises(ToolArgumentsError, match="finite number"):
        pay.validate(arguments)

    @tool
    def measure(amount: float, splits: list[float] | None = None, charge: Charge | None = None):
        return amount

    measure.validate(arguments)  # a read-only tool keeps Pydantic's defaults


def test_a_parameter_may_allow_non_finite_numbers_explicitly():
    @tool(side_effect=True)
    def record(reading: Annotated[float, Field(allow_inf_nan=True)], count: float = 0) -> str:
        return "ok"

    assert math.isnan(record.validate({"reading": float("nan")}).reading)
    with pytest.raises(ToolArgumentsError, match="count"):
        record.validate({"reading": 1.0, "count": float("inf")})
