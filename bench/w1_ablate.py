"""W1 ablation: where an ephemeral agent step's time goes, by switching pieces off.

    .venv/bin/python bench/w1_ablate.py [--rounds 5] [--runs 1500]

The 4-agent pipeline of `w1_pipeline.py` with the constant model (the runtime alone), run with
one guard step at a time left out of the chain (`Guards.steps` filtered, for measurement only:
Corral has no such switches), modes interleaved; median microseconds per agent step.
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

from corral import App
from corral.guards.chain import Guards
from corral.guards.step import ModelCall
from corral.model import Model, ModelRequest

STEPS = Guards.steps
CALL = ModelCall.call


def _direct(self: ModelCall, models: list[Model], request: ModelRequest) -> Any:
    return models[0].complete(request)


def _without(*names: str) -> Callable[[], None]:
    """A variant whose chain lacks the named steps (the chain is a list: drop them from it)."""

    def apply() -> None:
        def steps(self: Guards) -> list[tuple[str, Any]]:
            return [(n, s) for n, s in STEPS(self) if n not in names]

        Guards.steps = steps  # type: ignore[method-assign]

    return apply


VARIANTS: dict[str, Callable[[], None]] = {
    "everything on": lambda: None,
    "no guard chain (model called directly)": lambda: setattr(ModelCall, "call", _direct),
    "no budget step": _without("budget"),
    "no provider/model breakers": _without("breaker"),
    "no agent breaker": _without("agent_breaker"),
    "no retry / error-streak steps": _without("retry", "error_streak"),
}


def _reset(app: App) -> None:
    Guards.steps = STEPS  # type: ignore[method-assign]
    ModelCall.call = CALL  # type: ignore[method-assign]
    app.guards._chain = None  # composed again on the next call


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
                _reset(app)
                apply()
                results[name].append(await _measure(app, runs))
        _reset(app)
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
