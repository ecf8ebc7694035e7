"""The alert `Cooldowns` contract (set-if-absent with expiry), against every backend."""

from __future__ import annotations

import pytest

from corral.observe.alerts import Cooldowns
from corral.state.memory import MemoryCooldowns


@pytest.fixture(params=["memory"])
def cooldowns(request: pytest.FixtureRequest) -> Cooldowns:
    return MemoryCooldowns()


def test_a_key_is_claimed_once_per_cooldown(cooldowns: Cooldowns):
    assert cooldowns.claim("latency:writer:p95", at=100.0, cooldown_s=60)
    assert not cooldowns.claim("latency:writer:p95", at=159.0, cooldown_s=60)
    assert cooldowns.claim("cost:writer:usd", at=159.0, cooldown_s=60)  # another key
    assert cooldowns.claim("latency:writer:p95", at=160.0, cooldown_s=60)
    assert not cooldowns.claim("latency:writer:p95", at=161.0, cooldown_s=60)
