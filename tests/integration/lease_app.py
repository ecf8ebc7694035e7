"""A durable app for the executor-lease tests.

`python -m tests.integration.lease_app DATABASE_URL` opens it, prints `open` once its durable
engine holds the executor id, and closes when its stdin closes. `corral run --app
tests.integration.lease_app:build echo ...` runs its workflow from another process.
`python -m tests.integration.lease_app DATABASE_URL fence LEDGER` runs `effects`: a side effect
(a line in LEDGER), `step 1` on stdout, a step that waits for a line on stdin, a second side
effect.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import BaseModel

from corral import App, AppConfig, RunContext, tool


class Text(BaseModel):
    text: str


def build(config: AppConfig, ledger: str = "") -> App:
    app = App(config)

    @app.workflow
    async def echo(ctx: RunContext, data: Text) -> Text:
        return data

    @tool(side_effect=True)
    def mark(n: int, idempotency_key: str) -> int:
        """Write a line to the ledger (a side effect)."""
        with open(ledger, "a", encoding="utf-8") as f:
            f.write(f"{n}\n")
        print(f"step {n}", flush=True)
        return n

    @tool
    async def wait_for_go() -> str:
        """Wait for a line on stdin."""
        return await asyncio.to_thread(sys.stdin.readline)

    @app.workflow
    async def effects(ctx: RunContext, data: Text) -> Text:
        await ctx.tool(mark, n=1)
        await ctx.tool(wait_for_go)
        await ctx.tool(mark, n=2)
        return data

    return app


async def _hold(database: str) -> None:
    async with build(AppConfig(database=database)):
        print("open", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the test closes our stdin


async def _fence(database: str, ledger: str) -> None:
    async with build(AppConfig(database=database), ledger) as app:
        await app.run("effects", {"text": "x"})


if __name__ == "__main__":
    if sys.argv[2:3] == ["fence"]:
        asyncio.run(_fence(sys.argv[1], sys.argv[3]))
    else:
        asyncio.run(_hold(sys.argv[1]))
