"""`corral.run`: run a coroutine on the fastest event loop installed.

Corral works on any asyncio event loop; the loop belongs to whoever starts it. Where Corral
starts it (its CLI, the examples) or where a program hands it over (`corral.run(main())` in
place of `asyncio.run(main())`), it picks uvloop when it is installed (`pip install
'corral[fast]'`), as uvicorn does: with hundreds of runs in flight uvloop's C event loop
spends ~13% fewer instructions per agent step than asyncio's Python one (bench W2). The
environment variable `CORRAL_LOOP` chooses instead: `auto` (the default), `asyncio` or
`uvloop`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from corral.errors import ConfigError

__all__ = ["loop_name", "run"]

T = TypeVar("T")

_CHOICES = ("auto", "asyncio", "uvloop")


def loop_name() -> str:
    """The event loop `run` uses here: `uvloop` or `asyncio` (from `CORRAL_LOOP`).

    Raises:
        ConfigError: `CORRAL_LOOP` is not one of auto, asyncio, uvloop, or asks for uvloop where
            it is not installed.
    """
    wanted = os.environ.get("CORRAL_LOOP", "auto").strip().lower() or "auto"
    if wanted not in _CHOICES:
        raise ConfigError(
            f"must be one of {', '.join(_CHOICES)}, got {wanted!r}", key="CORRAL_LOOP"
        )
    installed = importlib.util.find_spec("uvloop") is not None
    if wanted == "uvloop" and not installed:
        raise ConfigError(
            "asks for uvloop, which is not installed: pip install 'corral[fast]' "
            "(or set CORRAL_LOOP=auto)",
            key="CORRAL_LOOP",
        )
    return "uvloop" if installed and wanted != "asyncio" else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to its end on a new event loop and return its result, like `asyncio.run`:
    on uvloop's loop when it is installed, else asyncio's (see `CORRAL_LOOP`).

    Raises:
        ConfigError: a bad `CORRAL_LOOP` (see `loop_name`); `main` is closed unrun.
    """
    try:
        name = loop_name()
    except ConfigError:
        main.close()
        raise
    if name == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
