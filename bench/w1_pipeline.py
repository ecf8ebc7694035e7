"""W1: a 4-agent pipeline on `sim` with zero latency; microseconds per agent step.

    .venv/bin/python bench/w1_pipeline.py [--runs 2000]

Modes, measured side by side in one process:
- ephemeral, no recorder: the runtime itself (validation, prompt, sim, parsing, envelopes);
- ephemeral + SQLite spans: the same with every span written to the store;
- durable (DBOS + journal on SQLite WAL): every model call journaled.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from pydantic import BaseModel

from corral import Agent, App, AppConfig, RunContext
from corral.trace import NullRecorder


class Doc(BaseModel):
    text: str


STAGES = [Agent(name=f"stage{i}", instructions="Rewrite.", input=Doc, output=Doc) for i in range(4)]


def build(config: AppConfig, *, record: bool) -> App:
    app = App(config, recorder=None if record else NullRecorder())

    @app.workflow
    async def pipeline(ctx: RunContext, doc: Doc) -> Doc:
        for stage in STAGES:
            doc = await ctx.call(stage, doc)
        return doc

    return app


async def measure(app: App, runs: int, durable: bool) -> list[float]:
    per_step = []
    async with app:
        for i in range(50):
            await app.run("pipeline", {"text": f"warm up {i}"}, durable=durable)
        for i in range(runs):
            t0 = time.perf_counter()
            result = await app.run("pipeline", {"text": f"document number {i}"}, durable=durable)
            per_step.append((time.perf_counter() - t0) / 4 * 1e6)
            assert result.ok
    return per_step


def summary(name: str, samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[int(len(samples) * 0.99) - 1]
    return f"| {name} | {statistics.median(samples):.0f} | {p99:.0f} |"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    rows = []
    eph = AppConfig(database=f"sqlite:///{tmp}/e.db", durable=False)
    rows.append(
        summary("ephemeral, no recorder", await measure(build(eph, record=False), args.runs, False))
    )
    rows.append(
        summary(
            "ephemeral + SQLite spans", await measure(build(eph, record=True), args.runs, False)
        )
    )
    dur = AppConfig(database=f"sqlite:///{tmp}/d.db", durable=True)
    rows.append(
        summary(
            "durable (DBOS + journal, SQLite WAL)",
            await measure(build(dur, record=True), args.runs, True),
        )
    )
    print("| mode | median us/step | p99 us/step |\n| --- | --- | --- |")
    print("\n".join(rows))
    from corral.engine.dbos import shutdown

    shutdown()


if __name__ == "__main__":
    asyncio.run(main())
