"""`quick_init`: the faster generated `__init__` keeps the dataclass's contract exactly."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from corral._dataclass import quick_init
from corral.model import Message, ModelRequest, ModelResponse


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    x: int
    y: int = 2
    tags: list[str] = field(default_factory=list)


def test_same_signature_defaults_and_factories():
    a, b = Point(x=1), Point(x=1)
    assert a == b == Point(x=1, y=2, tags=[])
    assert a.tags is not b.tags  # a fresh default per instance
    assert Point(x=1, y=5, tags=["t"]).tags == ["t"]
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1)  # type: ignore[misc]


def test_new_builds_the_same_instance_as_the_class_call():
    made = Point._new(x=1)  # type: ignore[attr-defined]
    assert type(made) is Point and made == Point(x=1)
    assert made.tags is not Point._new(x=1).tags  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.x = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'x'"):
        Point._new()  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        Point._new(1)  # type: ignore[attr-defined]
    response = ModelResponse._new(text="{}", model="m", input_tokens=3)
    assert response == ModelResponse(text="{}", model="m", input_tokens=3)
    assert hash(Message._new(role="user", content="hi")) == hash(Message(role="user", content="hi"))


def test_instances_stay_frozen_and_hashable():
    p = ModelResponse(text="{}", model="sim:small")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.text = "changed"  # type: ignore[misc]
    assert dataclasses.replace(p, text="x").text == "x"
    one, same = Message(role="user", content="hi"), Message(role="user", content="hi")
    assert one == same and hash(one) == hash(same) and len({one, same}) == 1
    assert one != Message(role="user", content="hi!")
    assert ModelRequest(model="m", messages=(one,)).metadata == {}


def test_refuses_classes_it_would_change():
    @dataclass(slots=True, kw_only=True)
    class Mutable:
        x: int

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class Positional:
        x: int

    for cls in (Mutable, Checked, Positional):
        with pytest.raises(TypeError, match="quick_init"):
            quick_init(cls)
