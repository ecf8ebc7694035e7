"""`Ops` is the four operator modules over one store, under the names the app, server and CLI use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from corral.store.ops import Ops
from corral.store.sql import SqlStore

T0 = datetime(2026, 12, 1, tzinfo=UTC)


async def test_each_part_audits_through_the_one_shared_log(tmp_path: Path):
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'o.db'}")
    ops = Ops(store, key_file=tmp_path / "audit.key", checkpoint_every=0)
    try:
        await ops.controls.add("halt", "run", "r1", by="ann", at=T0, reason="runaway")
        await ops.tokens.create("ci", "viewer", by="ann", at=T0)
        actions = [e["action"] for e in await ops.log.entries()]
        assert actions == ["token.create", "operator.halt"]
        assert [c.name for c in await ops.controls_since(0)] == ["r1"]
        assert [t["name"] for t in await ops.list_tokens()] == ["ci"]
        # checkpoint_every=0: nothing is signed until asked, so nothing vouches for the head yet.
        assert [p.kind for p in (await ops.verify())[1]] == ["unsigned", "unsigned"]
        await ops.checkpoint(T0)
        assert (await ops.verify())[1] == []
    finally:
        await store.close()
