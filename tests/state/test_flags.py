"""The kill switch's `FlagStore` contract (a versioned set), against every backend."""

from __future__ import annotations

import pytest

from corral.guards.kill import FlagStore, KillSwitch
from corral.state.memory import MemoryFlags


@pytest.fixture(params=["memory"])
def flags(request: pytest.FixtureRequest) -> FlagStore:
    return MemoryFlags()


def test_every_change_moves_the_version_and_the_snapshot_matches_it(flags: FlagStore):
    start = flags.version
    v1 = flags.set(("halt", "run", "r1"), "runaway")
    v2 = flags.set(("pause", "noncritical", ""), "maintenance")
    assert start < v1 < v2 == flags.version
    version, raised = flags.flags()
    assert version == v2
    assert raised == {("halt", "run", "r1"): "runaway", ("pause", "noncritical", ""): "maintenance"}
    v3 = flags.clear(("halt", "run", "r1"))
    assert v3 > v2 and flags.flags() == (v3, {("pause", "noncritical", ""): "maintenance"})
    raised[("halt", "all", "")] = "not through the store"  # a snapshot is a copy
    assert ("halt", "all", "") not in flags.flags()[1]


def test_a_kill_switch_sees_flags_another_switch_set_on_the_same_store(flags: FlagStore):
    """Two processes sharing one store: a halt set by one is seen by the other on refresh."""
    here, there = KillSwitch(flags=flags), KillSwitch(flags=flags)
    there.halt(run_id="r1", reason="operator")
    assert not here.engaged  # not yet caught up
    here.refresh()
    assert here.engaged and here.state["halted_runs"] == {"r1": "operator"}
    there.release(run_id="r1")
    here.refresh()
    assert not here.engaged
