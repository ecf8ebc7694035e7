"""How fast operator actions and human decisions take effect (issue #6: within 1 s in one process).

Each case is repeated; medians and p99 in milliseconds:

- cancel, in process: `app.cancel(run)` while the run's model call is in flight, until the run has
  ended `killed`.
- cancel, other process: the control written through a second connection (what `corral cancel`
  does), until the run has ended; bounded by `humans.poll_s`.
- resume after pause: `app.control("resume", ...)` until the held run's model call starts.
- approval, in process / other process: the decision recorded, until the approved tool runs.

Usage: python -m bench.operate [--repeat 20] [--poll 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from corral import Agent, App, AppConfig, HumanPolicy, RunContext, tool
from corral.model import ModelRequest, ModelResponse
from corral.store.ops import Ops
from corral.store.sql import SqlStore


class Ask(BaseModel):
    text: str


class Answer(BaseModel):
    text: str


class Gate:
    """A model that signals when a call starts and then takes `hold_s` to answer."""

    name = "bench:gate"

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.started: asyncio.Event = asyncio.Event()
        self.started_at = 0.0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.started_at = time.perf_counter()
        self.started.set()
        await asyncio.sleep(self.hold_s)
        return ModelResponse(
            text='{"text": "ok"}', model=self.name, input_tokens=5, output_tokens=3
        )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(repeat: int, poll_s: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="corral-bench-operate-"))
    db = f"sqlite:///{workdir / 'c.db'}"
    gate = Gate(hold_s=30)
    ran: asyncio.Event = asyncio.Event()
    ran_at = [0.0]

    @tool(side_effect=True, approval="always")
    def act(text: str) -> str:
        """Do it."""
        ran_at[0] = time.perf_counter()
        ran.set()
        return "done"

    app = App(
        AppConfig(
            database=db,
            durable=False,
            humans=HumanPolicy(poll_s=poll_s),
            tiers={"small": "bench:gate", "medium": "sim:medium", "large": "sim:large"},
        ),
        models={"bench:gate": gate},
    )
    agent = Agent(name="slow", instructions="x", input=Ask, output=Answer)

    @app.workflow
    async def slow(ctx: RunContext, a: Ask) -> Answer:
        return await ctx.call(agent, a)

    @app.workflow
    async def approve(ctx: RunContext, a: Ask) -> Answer:
        await ctx.tool(act, text=a.text)
        return Answer(text="ok")

    results: dict[str, list[float]] = {}
    async with app:
        assert app.ops is not None
        assert app.humans is not None
        other_store = await SqlStore.open(db)
        other = Ops(other_store)
        for _ in range(repeat):
            for where in ("in process", "other process"):
                gate.started.clear()
                handle = await app.start("slow", {"text": "x"})
                await gate.started.wait()
                t0 = time.perf_counter()
                if where == "in process":
                    await app.cancel(handle.run_id, by="bench")
                else:
                    await other.add_control(
                        "halt", "run", handle.run_id, by="bench", at=datetime.now(UTC)
                    )
                result = await handle.result()
                assert result.status == "killed", result.error
                results.setdefault(f"cancel, {where}", []).append(time.perf_counter() - t0)

            await app.control("pause", "agent", "slow", by="bench")
            gate.started.clear()
            handle = await app.start("slow", {"text": "x"})
            await app.guards.kill.until_held(handle.run_id)
            t0 = time.perf_counter()
            await app.control("resume", "agent", "slow", by="bench")
            await gate.started.wait()
            results.setdefault("resume after pause, in process", []).append(gate.started_at - t0)
            await app.cancel(handle.run_id, by="bench")
            await handle.result()

            for where in ("in process", "other process"):
                queue = app.humans.subscribe()
                ran.clear()
                handle = await app.start("approve", {"text": "x"})
                request = await queue.get()
                app.humans.unsubscribe(queue)
                t0 = time.perf_counter()
                if where == "in process":
                    await app.decide(request.id, "approve", by="bench")
                else:
                    await other.decide(request.id, "approve", by="bench", at=datetime.now(UTC))
                await ran.wait()
                results.setdefault(f"approval to tool run, {where}", []).append(ran_at[0] - t0)
                assert (await handle.result()).ok
        await other_store.close()
    print(f"repeat={repeat} poll_s={poll_s}")
    print("| case | median ms | p99 ms | max ms |")
    print("| --- | --- | --- | --- |")
    for case, values in results.items():
        ms = [v * 1000 for v in values]
        print(f"| {case} | {statistics.median(ms):.1f} | {pct(ms, 0.99):.1f} | {max(ms):.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--poll", type=float, default=0.5)
    args: Any = parser.parse_args()
    asyncio.run(main(args.repeat, args.poll))
