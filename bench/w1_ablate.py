"""W1 ablation: where an ephemeral agent step's time goes, by switching pieces off.

    .venv/bin/python bench/w1_ablate.py [--rounds 5] [--runs 1500]

The 4-agent pipeline of `w1_pipeline.py` with the constant model (the runtime alone), run with
one piece at a time replaced by a no-op through monkeypatching (for measurement only: Corral has
no such switches), modes interleaved; median microseconds per agent step.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.w1_pipeline import runtime_app

import corral.guards.chain as chain
from corral import App
from corral.guards.kill import KillSwitch
from corral.model import Model, ModelRequest, ModelResponse


class _Noop:
    """Stands in for a reservation, a limiter ticket and a breaker permit."""

    keys = ()

    def settle(self, *args: Any) -> None:
        return None

    def settle_failed(self) -> None:
        return None

    def settle_usage(self, *args: Any) -> None:
        return None


NOOP = _Noop()
ORIGINAL = {
    "call": chain.ModelCaller.call,
    "_try_reserve": chain.ModelCaller._try_reserve,
}
ACQUIRE = chain._acquire
TRY_ADMIT = chain.RateLimiter.try_admit
WATCH = KillSwitch.watch, KillSwitch.unwatch


async def _direct(self: Any, models: list[Model], request: ModelRequest) -> ModelResponse:
    return await models[0].complete(request)


def _unwatched() -> None:
    KillSwitch.watch = lambda self, *args: []  # type: ignore[method-assign]
    KillSwitch.unwatch = lambda self, watch: None  # type: ignore[method-assign]


VARIANTS: dict[str, Callable[[], None]] = {
    "everything on": lambda: None,
    "no guard chain (model called directly)": lambda: setattr(chain.ModelCaller, "call", _direct),
    "no budget reservation": lambda: setattr(
        chain.ModelCaller, "_try_reserve", lambda self, *a: NOOP
    ),
    "no rate limiter": lambda: setattr(chain.RateLimiter, "try_admit", lambda self, *a, **k: NOOP),
    "no provider/model breakers": lambda: setattr(chain, "_acquire", lambda breakers: []),
    "no kill switch / timeout": _unwatched,
}


def _reset() -> None:
    for name, fn in ORIGINAL.items():
        setattr(chain.ModelCaller, name, fn)
    KillSwitch.watch, KillSwitch.unwatch = WATCH  # type: ignore[method-assign]
    chain._acquire = ACQUIRE
    chain.RateLimiter.try_admit = TRY_ADMIT  # type: ignore[method-assign]


async def _measure(app: App, runs: int) -> float:
    t0 = time.perf_counter()
    for i in range(runs):
        result = await app.run("pipeline", {"text": f"doc {i}"}, durable=False)
        assert result.ok, result.error
    return (time.perf_counter() - t0) / runs / 4 * 1e6


async def main(rounds: int, runs: int) -> None:
    app = runtime_app()
    async with app:
        await _measure(app, 300)
        results: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(rounds):
            for name, apply in VARIANTS.items():
                _reset()
                apply()
                results[name].append(await _measure(app, runs))
        _reset()
    print("| variant | median us/step | rounds |\n| --- | --- | --- |")
    for name, values in results.items():
        rounds_text = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {name} | {statistics.median(values):.1f} | {rounds_text} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1500)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.runs))
