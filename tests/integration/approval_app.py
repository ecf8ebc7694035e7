"""A durable app whose run waits for an approval; a test kills it with SIGKILL while it waits.

Usage: python -m tests.integration.approval_app DATABASE_URL RUN_ID MODE LEDGER

MODE `start` starts the run, prints `REQUEST <id>` once the approval request is open, and waits
(until killed). MODE `resume` opens the app, which resumes the run, and prints the result as JSON.
Every real execution of the refund tool appends a line to LEDGER.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from pydantic import BaseModel

from corral import App, AppConfig, HumanPolicy, RunContext, tool

database, run_id, mode, ledger = sys.argv[1:5]


class Refund(BaseModel):
    order_id: str
    amount_usd: float


class Receipt(BaseModel):
    receipt: str


@tool(side_effect=True, approval="always")
def refund(order_id: str, amount_usd: float, idempotency_key: str) -> dict[str, str]:
    """Refund an order."""
    with open(ledger, "a", encoding="utf-8") as f:
        f.write(
            json.dumps({"order_id": order_id, "amount_usd": amount_usd, "key": idempotency_key})
        )
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return {"receipt": f"r-{order_id}-{amount_usd:g}"}


app = App(AppConfig(database=database, humans=HumanPolicy(poll_s=0.1)))


@app.workflow
async def pay(ctx: RunContext, r: Refund) -> Receipt:
    done = await ctx.tool(refund, order_id=r.order_id, amount_usd=r.amount_usd)
    return Receipt(receipt=done["receipt"])


async def main() -> None:
    if mode == "start":
        await app.open()
        assert app.humans is not None
        queue = app.humans.subscribe()
        await app.start("pay", {"order_id": "o-7", "amount_usd": 700}, run_id=run_id)
        request = await queue.get()
        print(f"REQUEST {request.id}", flush=True)
        await asyncio.Event().wait()  # until SIGKILL
    resumed = await app.resume()
    result = next(r for r in resumed if r.run_id == run_id)
    print(
        json.dumps(
            {
                "status": result.status,
                "output": result.output.model_dump() if result.output else None,
                "error": result.error,
            }
        ),
        flush=True,
    )
    await app.close()
    from corral.engine.dbos import shutdown

    shutdown()


if __name__ == "__main__":
    asyncio.run(main())
