"""`Blackboard`: versioned shared entries; a stale write is rejected and retried; deadlocks are named."""

from __future__ import annotations

from pydantic import BaseModel

from corral import RunContext, function_agent
from corral.patterns import Blackboard, BoardTask
from tests.helpers import ephemeral_app


class Text(BaseModel):
    text: str


class Draft(BaseModel):
    text: str


async def test_blackboard_rejects_stale_writes_and_retries_against_the_new_version():
    calls: list[str] = []

    @function_agent
    def writer(d: Draft) -> Draft:
        calls.append(d.text)
        return Draft(text=d.text + "+")

    app, _, _ = ephemeral_app()

    @app.workflow
    async def board_run(ctx: RunContext, d: Draft) -> Draft:
        board = Blackboard({"doc": d})

        def coordinator(b: Blackboard) -> list[BoardTask]:
            if b.version("doc") >= 3:
                return []
            # Two peers edit the same entry in one round: the second write is stale.
            return [BoardTask(agent=writer, key="doc", payload=lambda bb: bb.get("doc"))] * 2

        rounds = await board.run(ctx, coordinator)
        assert board.stale_writes >= 1 and board.errors == []
        assert rounds >= 1
        return board.get("doc")

    result = await app.run("board_run", {"text": "v"})
    assert result.ok and result.output.text.startswith("v++")


async def test_blackboard_deadlock_names_the_cycle():
    app, _, _ = ephemeral_app()

    @function_agent
    def writer_a(t: Text) -> Text:
        return Text(text="a")

    @function_agent
    def writer_b(t: Text) -> Text:
        return Text(text="b")

    a, b = writer_a, writer_b

    def coordinator(board: Blackboard) -> list[BoardTask]:
        if "x" in board and "y" in board:
            return []
        return [
            BoardTask(agent=a, key="x", payload=lambda bb: Text(text="?"), needs=("y",)),
            BoardTask(agent=b, key="y", payload=lambda bb: Text(text="?"), needs=("x",)),
        ]

    @app.workflow
    async def collaborate(ctx: RunContext, t: Text) -> Text:
        await Blackboard().run(ctx, coordinator)
        return t

    result = await app.run("collaborate", {"text": "go"})
    assert result.error["code"] == "deadlock"
    assert sorted(result.error["cycle"]) == ["writer_a->x", "writer_b->y"]
