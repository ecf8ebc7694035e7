"""The fast tier's guards (tests/tiers.py) catch what they promise to, and stay out of the way of
what is allowed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time

import pytest
from blockbuster import BlockingError

from tests.tiers import TierError


def test_a_network_connection_fails_and_fails_the_test(fast_tier: list[str]):
    with pytest.raises(TierError, match="not allowed in the fast tier"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    assert fast_tier == ["connected to ('127.0.0.1', 9)"]
    fast_tier.clear()  # seen: this test does not fail at teardown


def test_a_host_name_lookup_fails_but_localhost_and_addresses_resolve(fast_tier: list[str]):
    with pytest.raises(TierError):
        socket.getaddrinfo("api.openai.com", 443)
    assert fast_tier == ["looked up the host 'api.openai.com'"]
    fast_tier.clear()
    assert socket.getaddrinfo("localhost", 80)
    assert socket.getaddrinfo("127.0.0.1", 80)


def test_a_subprocess_fails_even_when_the_error_is_swallowed(fast_tier: list[str]):
    with contextlib.suppress(OSError):  # code under test treating it as a missing program
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert fast_tier == [f"started a subprocess {[sys.executable, '-c', 'pass']!r}"]
    fast_tier.clear()


def test_in_process_sockets_are_allowed():
    left, right = socket.socketpair()  # what asyncio's loop wakes itself with
    with left, right:
        left.sendall(b"x")
        assert right.recv(1) == b"x"


async def test_blocking_the_event_loop_fails():
    with pytest.raises(BlockingError, match="sleep"):
        time.sleep(0.001)  # noqa: ASYNC251 - the blocking call the guard must catch
    await asyncio.to_thread(time.sleep, 0.001)  # in a thread: fine


@pytest.mark.slow
def test_slow_tests_run_without_the_guards(fast_tier: list[str]):
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert fast_tier == []


def test_slow_fixtures_and_markers_put_a_test_in_the_slow_tier(pytester: pytest.Pytester):
    pytester.makeconftest('pytest_plugins = ["tests.tiers"]')
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def serve():
            return None

        def test_uses_a_server(serve):
            pass

        @pytest.mark.postgres
        def test_needs_postgres():
            pass

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest_inprocess(
        "-m",
        "not slow",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:asyncio",
        "-o",
        "markers=slow\npostgres",
    )
    result.assert_outcomes(passed=1, deselected=2)
