"""W1: a 4-agent pipeline on `sim` with zero latency; microseconds per agent step.

    .venv/bin/python bench/w1_pipeline.py [--runs 2000] [--block 50]

Modes, measured side by side in one process and interleaved in blocks of `--block` runs (the
machine is noisy: interleaving spreads the noise over every mode instead of one):

- ephemeral, constant model: the runtime alone (input/output validation, envelopes, prompt,
  JSON parsing, usage and pricing) with a model that returns a fixed valid answer;
- ephemeral, no recorder: the same plus the simulator generating each answer from the schema;
- ephemeral + SQLite spans: the same with every span written to the store;
- durable: DBOS run + Corral's step journal + spans on SQLite WAL;
- raw DBOS: the baseline the durable target is measured against: a plain DBOS workflow with four
  `DBOS.run_step_async` steps, each doing the same model call and output validation by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from dbos import DBOS
from pydantic import BaseModel

from corral import Agent, App, AppConfig, RunContext
from corral.clock import SystemClock
from corral.config import ModelPrice
from corral.model import ModelRequest, ModelResponse
from corral.models.sim import SimModel
from corral.trace import NullRecorder


class Doc(BaseModel):
    text: str


STAGES = [Agent(name=f"stage{i}", instructions="Rewrite.", input=Doc, output=Doc) for i in range(4)]
_raw_model = SimModel("sim:small", clock=SystemClock())


@DBOS.workflow(name="bench.raw_pipeline")
async def raw_pipeline(text: str) -> str:
    """The same four model calls as plain DBOS steps (registered before launch)."""
    doc = Doc(text=text)
    for stage in STAGES:

        async def call(stage: Agent[Doc, Doc] = stage, doc: Doc = doc) -> str:
            request = ModelRequest(
                model="sim:small",
                messages=tuple(stage.messages(doc)),
                output_schema=stage.output_schema(),
            )
            response = await _raw_model.complete(request)
            return Doc.model_validate_json(response.text).model_dump_json()

        doc = Doc.model_validate_json(await DBOS.run_step_async({"name": stage.name}, call))
    return doc.text


class Constant:
    """A model that costs nothing: isolates Corral's own per-step work."""

    name = "const:fixed"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return ModelResponse(
            text='{"text":"a fixed answer"}', model=self.name, input_tokens=20, output_tokens=6
        )


def build(config: AppConfig, *, record: bool, models: dict[str, Any] | None = None) -> App:
    app = App(config, recorder=None if record else NullRecorder(), models=models)

    @app.workflow
    async def pipeline(ctx: RunContext, doc: Doc) -> Doc:
        for stage in STAGES:
            doc = await ctx.call(stage, doc)
        return doc

    return app


def runtime_app() -> App:
    """The W1 pipeline on the constant model with alerts off: Corral's per-step runtime alone
    (shared by `w1_ablate.py` and `langgraph_side_by_side.py`)."""
    from corral.observe import AlertPolicy

    config = AppConfig(
        database=f"sqlite:///{tempfile.mkdtemp()}/runtime.db",
        durable=False,
        alerts=AlertPolicy(enabled=False),
        tiers={"small": "const:fixed", "medium": "const:fixed", "large": "const:fixed"},
        prices={"const": ModelPrice(input_per_mtok=Decimal("0.5"), output_per_mtok=Decimal(2))},
    )
    return build(config, record=False, models={"const:fixed": Constant()})


Runner = Callable[[int], Awaitable[None]]


def corral_runner(app: App, durable: bool) -> Runner:
    async def one(i: int) -> None:
        result = await app.run("pipeline", {"text": f"document number {i}"}, durable=durable)
        assert result.ok, result.error

    return one


async def raw_dbos(i: int) -> None:
    handle = await DBOS.start_workflow_async(raw_pipeline, f"document number {i}")
    await handle.get_result()


def summary(name: str, samples: list[float], base: float | None = None) -> str:
    samples = sorted(samples)
    p99 = samples[max(0, int(len(samples) * 0.99) - 1)]
    median = statistics.median(samples)
    ratio = f"{median / base:.2f}x" if base else ""
    return f"| {name} | {len(samples)} | {median:.0f} | {p99:.0f} | {ratio} |"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000, help="measured runs per mode")
    parser.add_argument("--block", type=int, default=50, help="runs per mode before switching")
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    ephemeral = build(AppConfig(database=f"sqlite:///{tmp}/e.db", durable=False), record=False)
    constant = build(
        AppConfig(
            database=f"sqlite:///{tmp}/c.db",
            durable=False,
            tiers={"small": "const:fixed"},
            prices={"const": ModelPrice(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2))},
        ),
        record=False,
        models={"const:fixed": Constant()},
    )
    spans = build(AppConfig(database=f"sqlite:///{tmp}/s.db", durable=False), record=True)
    durable = build(AppConfig(database=f"sqlite:///{tmp}/d.db", durable=True), record=True)
    modes: dict[str, Runner] = {
        "ephemeral, constant model (runtime only)": corral_runner(constant, False),
        "ephemeral, no recorder": corral_runner(ephemeral, False),
        "ephemeral + SQLite spans": corral_runner(spans, False),
        "durable (DBOS + journal + spans, SQLite WAL)": corral_runner(durable, True),
        "raw DBOS, 4 steps, same model calls": raw_dbos,
    }
    samples: dict[str, list[float]] = {name: [] for name in modes}
    async with constant, ephemeral, spans, durable:
        for run in modes.values():
            for i in range(args.warmup):
                await run(-i - 1)
        n = 0
        while n < args.runs:
            block = min(args.block, args.runs - n)
            for name, run in modes.items():
                for i in range(n, n + block):
                    t0 = time.perf_counter()
                    await run(i)
                    samples[name].append((time.perf_counter() - t0) / len(STAGES) * 1e6)
            n += block
    raw = statistics.median(samples["raw DBOS, 4 steps, same model calls"])
    eph = statistics.median(samples["ephemeral, no recorder"])
    print("| mode | runs | median us/step | p99 us/step | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in samples.items():
        base = raw if name.startswith("durable") else None
        print(summary(name, values, base))
    print(f"\nraw DBOS alone (minus the same model work run ephemerally): {raw - eph:.0f} us/step")
    from corral.engine.dbos import shutdown

    shutdown()


if __name__ == "__main__":
    asyncio.run(main())
