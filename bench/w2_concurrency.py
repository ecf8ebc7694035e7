"""W2: 1,000 four-agent pipelines started at once, every model call taking 50 ms.

    .venv/bin/python bench/w2_concurrency.py [--runs 1000] [--repeat 5] [--durable]

Two models: `sleep` answers a fixed valid JSON after `asyncio.sleep(0.05)` (exactly "each model
call sleeping 50 ms": what is measured is Corral), and `sim` with 50 ms latency (adds the
simulator's own CPU work generating each answer from the schema).

The ideal wall time is 4 x 50 ms = 0.2 s: every pipeline waits on its model concurrently. The
measured wall time over the ideal is the runtime's concurrency overhead (scheduling, validation,
the simulator, and with `--durable` the journal). Modes run side by side, `--repeat` times each,
alternating; the table reports the median wall time and the process's CPU time per agent step
(`time.process_time`, every thread: the work itself, which the wall time hides once a stage's
work takes less than the 50 ms its model sleeps).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from decimal import Decimal

from pydantic import BaseModel

from corral import Agent, App, AppConfig, ModelPrice, RunContext, SimConfig
from corral.model import ModelRequest, ModelResponse
from corral.trace import NullRecorder


class Doc(BaseModel):
    text: str


STAGES = [Agent(name=f"stage{i}", instructions="Rewrite.", input=Doc, output=Doc) for i in range(4)]
LATENCY_S = 0.05


class Sleeper:
    """A model call that takes 50 ms and returns a fixed valid answer."""

    name = "sleep:50ms"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        await asyncio.sleep(LATENCY_S)
        return ModelResponse(
            text='{"text":"a fixed answer"}', model=self.name, input_tokens=20, output_tokens=6
        )


def build(database: str, *, record: bool, durable: bool, model: str = "sim") -> App:
    config = AppConfig(
        database=database,
        durable=durable,
        sim=SimConfig(latency_s=LATENCY_S),
        tiers={"small": "sleep:50ms" if model == "sleep" else "sim:small"},
        prices={
            "sleep": ModelPrice(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)),
            "sim": ModelPrice(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)),
        },
    )
    app = App(config, recorder=None if record else NullRecorder(), models={"sleep:50ms": Sleeper()})

    @app.workflow
    async def pipeline(ctx: RunContext, doc: Doc) -> Doc:
        for stage in STAGES:
            doc = await ctx.call(stage, doc)
        return doc

    return app


async def wave(app: App, runs: int, durable: bool, tag: str) -> float:
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(app.run("pipeline", {"text": f"{tag} {i}"}, durable=durable) for i in range(runs))
    )
    wall = time.perf_counter() - t0
    failed = [r for r in results if not r.ok]
    assert not failed, failed[0].error
    return wall


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--durable", action="store_true", help="also measure durable runs")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    modes = {
        "ephemeral, sleep model, no recorder": (
            build(f"sqlite:///{tmp}/z.db", record=False, durable=False, model="sleep"),
            False,
        ),
        "ephemeral, sleep model, no recorder, Python's GC threshold (700)": (
            build(f"sqlite:///{tmp}/g.db", record=False, durable=False, model="sleep"),
            False,
        ),
        "ephemeral, sleep model + SQLite spans": (
            build(f"sqlite:///{tmp}/y.db", record=True, durable=False, model="sleep"),
            False,
        ),
        "ephemeral, sim, no recorder": (
            build(f"sqlite:///{tmp}/e.db", record=False, durable=False),
            False,
        ),
        "ephemeral, sim + SQLite spans": (
            build(f"sqlite:///{tmp}/s.db", record=True, durable=False),
            False,
        ),
    }
    if args.durable:
        modes["durable, sleep model (SQLite WAL)"] = (
            build(f"sqlite:///{tmp}/d.db", record=True, durable=True, model="sleep"),
            True,
        )
    walls: dict[str, list[float]] = {name: [] for name in modes}
    cpus: dict[str, list[float]] = {name: [] for name in modes}
    for app, _ in modes.values():
        await app.open()
    for app, durable in modes.values():
        await wave(app, 50, durable, "warm-up")
    # Open apps keep the young-generation threshold at `AppConfig.gc_threshold` (20,000 by
    # default, process-wide); one mode's waves run at Python's own 700 to show what that buys.
    opened = gc.get_threshold()
    for r in range(args.repeat):
        for name, (app, durable) in modes.items():
            threshold = 700 if "(700)" in name else opened[0]
            gc.set_threshold(threshold, *opened[1:])
            c0 = time.process_time()
            walls[name].append(await wave(app, args.runs, durable, f"wave {r}"))
            cpus[name].append(time.process_time() - c0)
    gc.set_threshold(*opened)
    for app, _ in modes.values():
        await app.close()
    ideal = len(STAGES) * LATENCY_S
    print(
        f"| mode | pipelines | median wall s | x ideal ({ideal:.1f} s) | runs/s "
        "| median CPU us per agent step |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, values in walls.items():
        median = statistics.median(values)
        rate = args.runs / median
        step_us = statistics.median(cpus[name]) / (len(STAGES) * args.runs) * 1e6
        print(
            f"| {name} | {args.runs} | {median:.3f} | {median / ideal:.2f}x | {rate:.0f} "
            f"| {step_us:.1f} |"
        )
    if args.durable:
        from corral.engine.dbos import shutdown

        shutdown()


if __name__ == "__main__":
    asyncio.run(main())
