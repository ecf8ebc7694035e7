"""A durable app for the executor-lease tests.

`python -m tests.integration.lease_app DATABASE_URL` opens it, prints `open` once its durable
engine holds the executor id, and closes when its stdin closes. `corral run --app
tests.integration.lease_app:build echo ...` runs its workflow from another process.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import BaseModel

from corral import App, AppConfig, RunContext


class Text(BaseModel):
    text: str


def build(config: AppConfig) -> App:
    app = App(config)

    @app.workflow
    async def echo(ctx: RunContext, data: Text) -> Text:
        return data

    return app


async def _hold(database: str) -> None:
    async with build(AppConfig(database=database)):
        print("open", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the test closes our stdin


if __name__ == "__main__":
    asyncio.run(_hold(sys.argv[1]))
