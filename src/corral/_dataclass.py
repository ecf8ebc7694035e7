"""A cheaper `__init__` for the frozen, slotted dataclasses built on every model call.

A frozen dataclass's generated `__init__` stores each field with `object.__setattr__` (the
class's own `__setattr__` refuses), looked up and called once per field: ModelResponse's twelve
fields cost 4.4 us on our 2-core machine against 1.2 us for the same class unfrozen, and an agent
step builds five such objects. `quick_init` generates the same keyword-only `__init__` (same
parameters, defaults and default factories) storing each field through its slot descriptor,
which is 40% cheaper; the instances stay exactly as immutable, hashable and comparable as before.
The standard library offers no switch for this, so it is generated here the way `dataclasses`
generates its own methods.

It also generates `cls._new(...)`, a plain function with the same keyword-only signature that
builds an instance: calling a class with keyword arguments (Python 3.11) packs them into a
dict for `__init__` and unpacks them again, calling a function does not, which makes `_new`
2x faster than `cls(...)` for these classes. Corral's per-call code uses `_new`; everything
else (and users) call the class as usual.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["quick_init"]

T = TypeVar("T")
_NOTHING = object()


def quick_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted, keyword-only dataclass without `__post_init__` a faster
    `__init__` with the same signature. Apply it on top of `@dataclass(...)`."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: quick_init needs a frozen dataclass with slots=True")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: quick_init does not run __post_init__")
    env: dict[str, Any] = {"_NOTHING": _NOTHING}
    signature, body = [], []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # a dataclass, checked above
        if not f.kw_only:
            raise TypeError(f"{cls.__name__}: quick_init needs keyword-only fields")
        env[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        value = f.name
        if f.default is not dataclasses.MISSING:
            env[f"_default_{f.name}"] = f.default
            signature.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            signature.append(f"{f.name}=_NOTHING")
            value = f"_factory_{f.name}() if {f.name} is _NOTHING else {f.name}"
        else:
            signature.append(f.name)
        body.append(f"    _set_{f.name}(self, {value})")
    params = ", ".join(signature)
    env["_object_new"], env["_cls"] = object.__new__, cls
    source = (
        f"def __init__(self, *, {params}):\n" + "\n".join(body) + "\n"
        f"def _new(*, {params}):\n    self = _object_new(_cls)\n" + "\n".join(body) + "\n"
        "    return self\n"
    )
    exec(source, env)  # generated from the class's own field names only
    for name in ("__init__", "_new"):
        fn = env[name]
        fn.__qualname__ = f"{cls.__qualname__}.{name}"
        fn.__module__ = cls.__module__
    cls.__init__ = env["__init__"]  # type: ignore[method-assign]
    cls._new = staticmethod(env["_new"])  # type: ignore[attr-defined]
    return cls
