"""Issue #3 benchmarks: guard-chain overhead, limiter goodput, runaway containment.

    .venv/bin/python bench/guards.py [--calls 20000] [--seconds 60]

1. Overhead: one model call through the whole chain (kill switch, budget reserve + settle with a
   daily limit, agent/provider/model breakers, a rate-limit key with room, retry bookkeeping)
   against the same constant model called directly, interleaved in blocks; median us per call.
2. Limiter goodput: `sim` enforcing 600 RPM / 100k TPM itself (429 above it), Corral's limiter
   set just under it, offered load 10x the limit for `--seconds` of virtual time: `batch` floods,
   a trickle of `interactive` calls must still get through quickly. Reports admitted / limit,
   429s that reached the provider, interactive p99 wait.
3. Runaway containment: for each failure story of issue #3, tokens and dollars spent before the
   guards stop it, against the same workflow with the guards relaxed to "off".
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel

from corral import Agent, App, AppConfig, ModelPrice, RunContext, SimConfig
from corral.guards import (
    BreakerPolicy,
    BudgetPolicy,
    DailyLimit,
    GuardPolicies,
    LoopPolicy,
    RateLimit,
    RetryPolicy,
)
from corral.guards.chain import GuardEvent, Guards, ModelCall
from corral.model import Message, ModelRequest, ModelResponse
from corral.models.pricing import Priced, PriceTable
from corral.models.sim import SimModel
from corral.testing import CountingModel, SpanRecorder, VirtualClock

D = Decimal
PRICES = {"const": ModelPrice(input_per_mtok=D(1), output_per_mtok=D(2))}


class Constant:
    name = "const:fixed"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return ModelResponse(
            text='{"text":"ok"}', model=self.name, input_tokens=20, output_tokens=6
        )


async def overhead(calls: int, block: int = 500) -> None:
    from corral.clock import SystemClock

    clock = SystemClock()
    policies = GuardPolicies(
        budget=BudgetPolicy(usd=D("1000000"), tokens=None, model_calls=None),
        daily={"tenant:*": DailyLimit(usd=D("1000000"))},
        limits={"model:const:fixed": RateLimit(rpm=10**9, tpm=10**12)},
        loops=LoopPolicy(max_turns=10**9, max_agent_turns=10**9, repeat_limit=10**9),
    )
    guards = Guards(policies, clock, pricer=PriceTable(PRICES))
    provider = Constant()
    model = Priced(provider, PRICES)
    request = ModelRequest(
        model=model.name,
        messages=(Message(role="system", content="x" * 400), Message(role="user", content="hi")),
        max_output_tokens=100,
    )

    async def emit(event: GuardEvent) -> None:
        return None

    direct: list[float] = []
    chained: list[float] = []
    for _ in range(max(1, calls // block)):
        t0 = time.perf_counter()
        for _ in range(block):
            await model.complete(request)
        direct.append((time.perf_counter() - t0) / block * 1e6)
        run = guards.run("bench", priority="interactive", tenant="acme", user=None)
        caller = ModelCall(run, agent="a", timeout_s=60, emit=emit)
        t0 = time.perf_counter()
        for _ in range(block):
            await caller.call([provider], request)
        chained.append((time.perf_counter() - t0) / block * 1e6)
    d, c = statistics.median(direct), statistics.median(chained)
    print("| measure | median us/call |\n| --- | --- |")
    print(f"| model called directly | {d:.1f} |")
    print(f"| through the whole guard chain | {c:.1f} |")
    print(f"| guard-chain overhead | {c - d:.1f} |")


class Doc(BaseModel):
    text: str


async def goodput(seconds: float) -> None:
    clock = VirtualClock()
    sim = SimModel("sim:small", SimConfig(rpm=600, tpm=100_000), clock=clock)
    # Just under the provider's sliding-window limit: the bucket's burst plus its rate must not
    # exceed 600 in any 60 s.
    limits = {"model:sim:small": RateLimit(rpm=590, tpm=98_000, burst_s=1)}
    app = App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            guards=GuardPolicies(limits=limits, limiter=LimiterPolicyLong()),
        ),
        clock=clock,
        recorder=SpanRecorder(),
        models={"sim:small": sim},
    )
    agent = Agent(name="a", instructions="x", input=Doc, output=Doc, max_output_tokens=100)

    @app.workflow
    async def one(ctx: RunContext, doc: Doc) -> Doc:
        return await ctx.call(agent, doc)

    waits: dict[str, list[float]] = {"interactive": [], "batch": []}
    done_at: list[float] = []

    async def call(i: int, priority: Literal["interactive", "batch"]) -> None:
        t0 = clock.monotonic()
        result = await app.run("one", {"text": f"{priority} {i}"}, priority=priority)
        if result.ok:
            waits[priority].append(clock.monotonic() - t0)
            done_at.append(clock.monotonic())

    tasks: list[asyncio.Task[None]] = []
    offered_per_s = 100  # 10x the 10/s limit
    async with app:
        for tick in range(int(seconds * 10)):
            for j in range(offered_per_s // 10 - 1):
                tasks.append(asyncio.ensure_future(call(tick * 10 + j, "batch")))
            if tick % 5 == 0:  # two interactive calls a second
                tasks.append(asyncio.ensure_future(call(tick, "interactive")))
            await clock.sleep(0.1)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    in_window = sum(1 for t in done_at if t <= seconds)
    limit = 600 * seconds / 60
    inter = sorted(waits["interactive"])
    p99 = inter[max(0, int(len(inter) * 0.99) - 1)] if inter else float("nan")
    print("| measure | value |\n| --- | --- |")
    print(f"| offered calls | {len(tasks)} over {seconds:g} s (10x the limit) |")
    print(f"| admitted and answered | {in_window} = {in_window / limit:.1%} of the 600 RPM limit |")
    print(f"| 429s that reached the provider | {sim.rejected} |")
    print(f"| interactive calls | {len(inter)}, p99 wait {p99:.2f} s |")


def LimiterPolicyLong() -> Any:  # a policy factory read like a class
    from corral.guards import LimiterPolicy

    return LimiterPolicy(max_wait_s=3600)


class Review(BaseModel):
    verdict: Literal["revise"]
    notes: str


async def contain() -> None:
    """Spend before each failure mode is stopped, guards on vs. (practically) off."""
    off = GuardPolicies(
        budget=BudgetPolicy(usd=None, tokens=None, model_calls=None),
        loops=LoopPolicy(
            max_turns=400,
            max_agent_turns=400,
            repeat_limit=400,
            ping_pong_cycles=400,
            error_streak=10**6,
        ),
        retry=RetryPolicy(max_attempts=10, budget_ratio=100, budget_min_retries=10**6),
        breaker=BreakerPolicy(minimum_calls=10**6, window_size=10**6),
    )
    rows = []
    stories = (
        ("ping-pong (writer <-> critic)", _ping_pong),
        ("provider failing every call (100 calls)", _failing),
        ("outage of the primary, 60 s (1 call/s)", _outage),
        ("429 storm: 120 calls at once, provider 60 RPM", _storm),
        ("40-stage pipeline, $0.60 budget", _budget),
    )
    for story, runner in stories:
        for label, policies in (("guards on", GuardPolicies()), ("guards off", off)):
            usage = await runner(policies)
            rows.append(
                f"| {story} | {label} | {usage.calls} | "
                f"{usage.input_tokens + usage.output_tokens} | {usage.cost_usd:.4f} |"
            )
    print(
        "| story | guards | requests to the provider | tokens | USD |\n"
        "| --- | --- | --- | --- | --- |"
    )
    print("\n".join(rows))


def _app(clock: VirtualClock, policies: GuardPolicies, sim: SimConfig | None = None) -> App:
    return App(
        AppConfig(
            database="sqlite:///:memory:", durable=False, guards=policies, sim=sim or SimConfig()
        ),
        clock=clock,
        recorder=SpanRecorder(),
    )


async def _ping_pong(policies: GuardPolicies) -> Any:
    clock = VirtualClock()
    app = _app(clock, policies)
    writer = Agent(name="writer", instructions="Write.", input=Review, output=Doc)
    critic = Agent(name="critic", instructions="Criticize.", input=Doc, output=Review)

    @app.workflow
    async def write(ctx: RunContext, doc: Doc) -> Doc:
        while True:
            doc = await ctx.call(writer, await ctx.call(critic, doc))

    async with app:
        return (await app.run("write", {"text": "a poem"})).usage


async def _failing(policies: GuardPolicies) -> Any:
    clock = VirtualClock()
    app = _app(clock, policies, SimConfig(error_rate=1.0))
    agent = Agent(name="a", instructions="x", input=Doc, output=Doc)
    calls = 0

    @app.workflow
    async def keep_asking(ctx: RunContext, doc: Doc) -> Doc:
        nonlocal calls
        for i in range(100):
            await ctx.try_call(agent, Doc(text=f"{doc.text} {i}"))
        return doc

    async with app:
        result = await app.run("keep_asking", {"text": "x"})
    # Failed calls report no usage; count what reached the provider from the model spans.
    return result.usage if result.usage.calls else _attempts(app)


async def _outage(policies: GuardPolicies) -> Any:
    from corral.model import Usage

    clock = VirtualClock()
    primary = CountingModel(SimModel("sim:small", SimConfig(outages=((0.0, 60.0),)), clock=clock))
    backup = SimModel("simb:backup", SimConfig(), clock=clock)
    app = App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            guards=policies,
            fallbacks={"small": ("simb:backup",)},
            prices={
                "sim": ModelPrice(input_per_mtok=D("0.5"), output_per_mtok=D("1.5")),
                "simb": ModelPrice(input_per_mtok=D("0.5"), output_per_mtok=D("1.5")),
            },
        ),
        clock=clock,
        recorder=SpanRecorder(),
        models={"sim:small": primary, "simb:backup": backup},
    )
    agent = Agent(name="a", instructions="x", input=Doc, output=Doc)

    @app.workflow
    async def one(ctx: RunContext, doc: Doc) -> Doc:
        return await ctx.call(agent, doc)

    total = Usage()
    async with app:
        for i in range(60):
            total = total + (await app.run("one", {"text": f"q{i}"})).usage
            await clock.sleep(1)
    # Requests that hit the dead primary are the waste the breaker prevents.
    return Usage(calls=primary.calls, input_tokens=total.input_tokens, cost_usd=total.cost_usd)


async def _storm(policies: GuardPolicies) -> Any:
    from corral.model import Usage

    clock = VirtualClock()
    sim = CountingModel(SimModel("sim:small", SimConfig(rpm=60), clock=clock))
    on = policies.retry.max_attempts <= 3
    limits = {"model:sim:small": RateLimit(rpm=59, burst_s=1)} if on else {}
    app = App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            guards=GuardPolicies(
                limits=limits,
                retry=policies.retry,
                breaker=policies.breaker,
                limiter=LimiterPolicyLong(),
            ),
        ),
        clock=clock,
        recorder=SpanRecorder(),
        models={"sim:small": sim},
    )
    agent = Agent(name="a", instructions="x", input=Doc, output=Doc)

    @app.workflow
    async def one(ctx: RunContext, doc: Doc) -> Doc:
        return await ctx.call(agent, doc)

    async with app:
        results = await asyncio.gather(*(app.run("one", {"text": f"t{i}"}) for i in range(120)))
    total = Usage()
    for r in results:
        total = total + r.usage
    return Usage(calls=sim.calls, input_tokens=total.input_tokens, cost_usd=total.cost_usd)


async def _budget(policies: GuardPolicies) -> Any:
    clock = VirtualClock()
    prices = {
        "sim:large": ModelPrice(input_per_mtok=D(300), output_per_mtok=D(300)),
        "sim:medium": ModelPrice(input_per_mtok=D(100), output_per_mtok=D(100)),
        "sim": ModelPrice(input_per_mtok=D(10), output_per_mtok=D(10)),
    }
    budget = policies.budget if policies.budget.usd is None else BudgetPolicy(usd=D("0.60"))
    app = App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            guards=GuardPolicies(budget=budget),
            prices=prices,
        ),
        clock=clock,
        recorder=SpanRecorder(),
    )
    stages = [
        Agent(name=f"s{i}", instructions="Improve.", input=Doc, output=Doc, model="large")
        for i in range(40)
    ]

    @app.workflow
    async def pipeline(ctx: RunContext, doc: Doc) -> Doc:
        for stage in stages:
            doc = await ctx.call(stage, doc)
        return doc

    async with app:
        return (await app.run("pipeline", {"text": "a long document " * 20})).usage


def _attempts(app: App) -> Any:
    from corral.model import Usage

    recorder = app._recorder
    spans = recorder.spans if isinstance(recorder, SpanRecorder) else []
    retries = sum(1 for s in spans if s.kind == "guard" and s.name == "retry")
    first = sum(1 for s in spans if s.kind == "model")
    return Usage(calls=first + retries)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    print("## Guard-chain overhead\n")
    await overhead(args.calls)
    print("\n## Limiter goodput\n")
    await goodput(args.seconds)
    print("\n## Runaway containment\n")
    await contain()


if __name__ == "__main__":
    asyncio.run(main())
