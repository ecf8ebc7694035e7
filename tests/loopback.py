"""Serving an ASGI app on a free loopback port inside a test's event loop (real HTTP, no sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Any], Coroutine[Any, Any, str]]]:
    """`await serve(app)` starts `app` and returns `http://127.0.0.1:PORT`; stopped at teardown."""
    uvicorn = pytest.importorskip("uvicorn", reason="install corral[server] for HTTP tests")

    class Server(uvicorn.Server):  # type: ignore[misc,name-defined]
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.ready = asyncio.Event()

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            self.ready.set()  # listening: no polling needed

    running: list[tuple[Any, asyncio.Task[None]]] = []

    async def start(app: Any) -> str:
        server = Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )
        running.append((server, asyncio.ensure_future(server.serve())))
        await server.ready.wait()
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    yield start
    for server, _ in running:
        server.should_exit = server.force_exit = True
    for _, task in running:
        await task
