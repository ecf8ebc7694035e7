"""The `LimiterBackend` contract, run against every backend (today: the memory one)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from corral.guards.limiter import FOREIGN_POLL_S, LimiterBackend
from corral.guards.policy import RateLimit
from corral.state.memory import MemoryLimiterBackend

Factory = Callable[[dict[str, RateLimit]], LimiterBackend]


@pytest.fixture(params=["memory"])
def backend(request: pytest.FixtureRequest) -> Factory:
    return MemoryLimiterBackend


def test_limits_apply_to_their_keys_and_kind_wildcards(backend: Factory):
    b = backend({"model:m": RateLimit(rpm=60), "tenant:*": RateLimit(rpm=60)})
    assert b.has_limit("model:m") and b.has_limit("tenant:acme")
    assert not b.has_limit("model:other") and not b.has_limit("provider:p")


def test_an_admission_takes_every_key_or_none(backend: Factory):
    b = backend({"model:m": RateLimit(tpm=6000, burst_s=1), "tenant:t": RateLimit(tpm=60_000)})
    # model:m holds 100 tokens (6000 / min over a 1 s burst); tenant:t plenty.
    assert b.try_acquire(["model:m", "tenant:t"], 80, 0.0, 0, "h") == (0.0, [])
    wait, short = b.try_acquire(["model:m", "tenant:t"], 80, 0.0, 0, "h")
    assert short == ["model:m"] and wait > 0
    # Nothing was taken from tenant:t by the refused admission: it still has its 1000.
    assert b.try_acquire(["tenant:t"], 900, 0.0, 0, "h") == (0.0, [])


def test_a_refund_makes_room_and_never_overfills(backend: Factory):
    b = backend({"model:m": RateLimit(tpm=6000, burst_s=1)})
    assert b.try_acquire(["model:m"], 100, 0.0, 0, "h") == (0.0, [])
    assert b.try_acquire(["model:m"], 50, 0.0, 0, "h")[1] == ["model:m"]
    b.adjust(["model:m"], 60, 0.0)  # the call used 40 of its 100
    assert b.try_acquire(["model:m"], 50, 0.0, 0, "h") == (0.0, [])
    b.adjust(["model:m"], 10_000, 0.0)  # capped at capacity
    assert (
        b.try_acquire(["model:m"], 101, 0.0, 0, "h")[1] == []
    )  # a full bucket admits one big call
    assert b.try_acquire(["model:m"], 1, 0.0, 0, "h")[1] == ["model:m"]


def test_a_penalty_blocks_a_key_until_it_passes(backend: Factory):
    b = backend({"model:m": RateLimit(rpm=600)})
    b.penalize("model:m", 5.0, 0.0)
    wait, short = b.try_acquire(["model:m"], 1, 1.0, 0, "h")
    assert short == ["model:m"] and wait == pytest.approx(4.0)
    assert b.try_acquire(["model:m"], 1, 6.0, 0, "h") == (0.0, [])


def test_observed_remaining_counts_only_lower_the_allowance(backend: Factory):
    b = backend({"model:m": RateLimit(rpm=600, burst_s=6)})  # 60 requests of burst
    b.observe("model:m", 1, None, 0.0)
    assert b.try_acquire(["model:m"], 1, 0.0, 0, "h") == (0.0, [])
    assert b.try_acquire(["model:m"], 1, 0.0, 0, "h")[1] == ["model:m"]
    b.observe("model:m", 1000, None, 0.0)  # more than local: ignored
    assert b.try_acquire(["model:m"], 1, 0.0, 0, "h")[1] == ["model:m"]


def test_a_better_waiter_of_another_holder_keeps_the_room(backend: Factory):
    b = backend({"model:m": RateLimit(rpm=600), "tenant:t": RateLimit(rpm=600)})
    b.wait(["model:m"], 1, "other", 0.0)  # another process has an interactive call queued
    wait, short = b.try_acquire(["model:m", "tenant:t"], 1, 0.0, 2, "me")  # batch
    assert short == ["model:m"] and wait == FOREIGN_POLL_S
    # An equal or better level, or the waiter's own holder, is not held back by it.
    assert b.try_acquire(["model:m"], 1, 0.0, 1, "me") == (0.0, [])
    assert b.try_acquire(["model:m"], 1, 0.0, 2, "other") == (0.0, [])
    assert b.try_acquire(["tenant:t"], 1, 0.0, 2, "me") == (0.0, [])  # a key it does not wait on
    b.unwait(["model:m"], 1, "other")
    assert b.try_acquire(["model:m"], 1, 0.0, 2, "me") == (0.0, [])


def test_registrations_count_each_waiter(backend: Factory):
    b = backend({"model:m": RateLimit(rpm=600)})
    b.wait(["model:m"], 0, "other", 0.0)
    b.wait(["model:m"], 0, "other", 0.0)
    b.unwait(["model:m"], 0, "other")
    assert b.try_acquire(["model:m"], 1, 0.0, 1, "me")[1] == ["model:m"]  # one still waits
    b.unwait(["model:m"], 0, "other")
    b.unwait(["model:m"], 0, "other")  # more removals than waiters: harmless
    assert b.try_acquire(["model:m"], 1, 0.0, 1, "me") == (0.0, [])
