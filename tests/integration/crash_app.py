"""A small durable app that a test runs in a subprocess and kills with SIGKILL.

Usage: python -m tests.integration.crash_app DATABASE_URL RUN_ID KILL_AT LEDGER

KILL_AT is `none`, `after-step:N` (die right after the journal records the N-th step),
`in-model:N` (die when the N-th model call has answered, before Corral sees the answer) or
`in-effect` (die after the side effect ran and was recorded, before its step is journaled).
LEDGER is a file every model call and every real side effect appends a line to, so the test can
count what was paid for and what happened in the world.

Environment: CRASH_DEADLINE_S sets the run's deadline; CRASH_CLOCK_OFFSET_S moves this process's
wall clock forward (a restart "an hour later" without waiting an hour); CRASH_MODEL_CALLS sets the
run's model-call budget; CRASH_RECORDER=null sends spans nowhere (`App(recorder=NullRecorder())`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import datetime, timedelta

from pydantic import BaseModel

from corral import Agent, App, AppConfig, RunContext, SimConfig, tool
from corral.clock import SystemClock
from corral.guards import BudgetPolicy, GuardPolicies
from corral.model import ModelRequest, ModelResponse
from corral.models.sim import SimModel
from corral.trace import NullRecorder


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    category: str
    summary: str


class Draft(BaseModel):
    reply: str


class Review(BaseModel):
    approved: bool
    notes: str


class Sent(BaseModel):
    receipt: str
    reply: str


database, run_id, kill_at, ledger = sys.argv[1:5]


def log_line(kind: str, detail: str) -> None:
    with open(ledger, "a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": kind, "detail": detail, "pid": os.getpid()}) + "\n")
        f.flush()
        os.fsync(f.fileno())


class CountingSim:
    """The simulator, with every call written to the ledger before it answers (a paid call)."""

    def __init__(self) -> None:
        self.inner = SimModel("sim:small", SimConfig(seed=7), clock=SystemClock())

    @property
    def name(self) -> str:
        return self.inner.name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        log_line("model", request.metadata.get("step_id", "?"))
        answer = await self.inner.complete(request)
        self.calls = getattr(self, "calls", 0) + 1
        if kill_at == f"in-model:{self.calls}":
            os.kill(os.getpid(), signal.SIGKILL)  # answered (and billed), not yet journaled
        return answer


@tool(side_effect=True)
def send_email(reply: str, idempotency_key: str) -> dict[str, str]:
    """Send the reply to the customer."""
    log_line("effect", idempotency_key)
    return {"receipt": f"msg-{idempotency_key}"}


triage = Agent(name="triage", instructions="Classify.", input=Ticket, output=Triage, model="sim")
drafter = Agent(name="drafter", instructions="Draft.", input=Triage, output=Draft, model="sim")
reviewer = Agent(name="reviewer", instructions="Review.", input=Draft, output=Review, model="sim")


class ShiftedClock(SystemClock):
    def __init__(self, offset_s: float) -> None:
        self.offset = timedelta(seconds=offset_s)

    def now(self) -> datetime:
        return super().now() + self.offset


budget = BudgetPolicy(model_calls=int(os.environ.get("CRASH_MODEL_CALLS", "500")))
app = App(
    AppConfig(
        database=database, tiers={"sim": "counting:sim"}, guards=GuardPolicies(budget=budget)
    ),
    models={"counting:sim": CountingSim()},
    clock=ShiftedClock(float(os.environ.get("CRASH_CLOCK_OFFSET_S", "0"))),
    recorder=NullRecorder() if os.environ.get("CRASH_RECORDER") == "null" else None,
)
deadline_s = float(os.environ["CRASH_DEADLINE_S"]) if "CRASH_DEADLINE_S" in os.environ else None


@app.workflow
async def support(ctx: RunContext, ticket: Ticket) -> Sent:
    t = await ctx.call(triage, ticket)
    d = await ctx.call(drafter, t)
    await ctx.call(reviewer, d)
    sent = await ctx.tool(send_email, reply=d.reply)
    return Sent(receipt=sent["receipt"], reply=d.reply)


def install_kill_switch() -> None:
    if kill_at.startswith("after-step:"):
        target = int(kill_at.split(":")[1])
        store = app.store
        original = store.save_step
        count = 0

        async def save_then_die(*args: object, **kwargs: object) -> None:
            nonlocal count
            await original(*args, **kwargs)  # type: ignore[arg-type]
            count += 1
            if count == target:
                os.kill(os.getpid(), signal.SIGKILL)

        store.save_step = save_then_die
    elif kill_at == "in-effect":
        store = app.store
        original_effect = store.record_effect

        async def effect_then_die(*args: object, **kwargs: object) -> None:
            await original_effect(*args, **kwargs)  # type: ignore[arg-type]
            os.kill(os.getpid(), signal.SIGKILL)

        store.record_effect = effect_then_die


async def main() -> None:
    await app.open()
    # Runs left by a killed process resume inside open(); wait for them to finish.
    resumed = await app.resume()
    if not resumed:
        install_kill_switch()
        result = await app.run(
            "support",
            {"text": "I was charged twice for March."},
            run_id=run_id,
            deadline_s=deadline_s,
        )
    else:
        result = next(r for r in resumed if r.run_id == run_id)
    print(
        json.dumps(
            {
                "status": result.status,
                "output": result.output.model_dump() if result.output else None,
                "error": result.error,
                "calls": result.usage.calls,
                "cost_usd": str(result.usage.cost_usd),
            }
        )
    )
    await app.close()
    from corral.engine.dbos import shutdown

    shutdown()


if __name__ == "__main__":
    asyncio.run(main())
