"""The two test tiers and the guards that keep the fast one fast (a pytest plugin).

- **fast** (`make test`, `pytest -m "not slow"`): unit tests on fakes, in one process, in well
  under a minute. No network, no subprocesses, no browsers, no real sleeps, no DBOS.
- **slow** (`-m slow`, in `make check` and CI, spread over workers by pytest-xdist): subprocess
  kills and crash recovery, browsers, the examples, loopback HTTP servers, real PostgreSQL and
  Redis, the local model, DBOS, and anything that waits in real time.

A test is slow when it is marked (`pytestmark = pytest.mark.slow` in the module, or per test),
or when it asks for a fixture that is slow by nature (`SLOW_FIXTURES`): that rule is applied at
collection, so a new browser test cannot land in the fast tier by accident.

Every fast test runs under three guards, so a test that breaks the tier fails with a message
saying what to do instead of quietly making `make test` slower or flaky:

- a real network connection (any `AF_INET`/`AF_INET6` connect, loopback included) or a host
  name lookup (other than `localhost`) fails;
- starting a subprocess fails;
- BlockBuster fails a blocking call (file, socket, `time.sleep`, SQLite...) made on the event
  loop's thread; `ALLOWED_BLOCKING` lists the few places allowed to block, with the reason.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

SLOW_FIXTURES: dict[str, str] = {
    "serve": "serves HTTP on a loopback port",
    "browser": "drives headless Chromium",
    "postgres_url": "needs the PostgreSQL server",
}
"""Fixtures that make any test using them slow, and why."""

SLOW_MARKERS: dict[str, str] = {
    "postgres": "needs the PostgreSQL server",
    "local_model": "runs a real model on the CPU",
}
"""Markers that imply the slow tier (psycopg and llama.cpp connect and load in C, where the
fast tier's guards cannot see them)."""

ALLOWED_BLOCKING: tuple[tuple[str, str, str], ...] = (
    # Importing a module reads its files and its package's entry points: once per process, on
    # first use (Corral imports its adapters lazily, often from inside a run), not per call.
    ("*", "<frozen importlib._bootstrap>", "_find_and_load"),
    # Configuration is read once, at the edge, before anything else runs (the CLI's own loop).
    ("*", "corral/config.py", "load_config"),
)
"""(blocking function or `*`, file that may call it, function there): the calls BlockBuster
lets through on the loop, each with the reason in a comment."""


class TierError(OSError):
    """A fast-tier test did something only slow tests may do.

    An `OSError`, so the code under test fails the way it would on a refused connection or a
    missing program; the test still fails, at teardown, even if that code swallowed the error.
    """


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") is not None:
            continue
        reasons = [SLOW_MARKERS[m.name] for m in item.iter_markers() if m.name in SLOW_MARKERS]
        reasons += [
            SLOW_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in SLOW_FIXTURES
        ]
        if reasons:
            item.add_marker(pytest.mark.slow(reason=reasons[0]))


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_fast(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("slow") is None


@pytest.fixture(autouse=True)
def fast_tier(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """Fast tests may not open network connections or look up host names (Unix sockets,
    socketpairs and loopback names are fine) nor start processes (asyncio's subprocesses go
    through `Popen` too). Yields what the test broke (tests/test_tiers.py reads it)."""
    broken: list[str] = []
    if not _is_fast(request):
        yield broken
        return

    def refuse(what: str) -> TierError:
        broken.append(what)
        return TierError(f"{what}: not allowed in the fast tier (tests/tiers.py)")

    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    getaddrinfo = socket.getaddrinfo

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name != "localhost" and not _is_address(name):
            raise refuse(f"looked up the host {name!r}")
        return getaddrinfo(host, *args, **kwargs)

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        if sock.family != socket.AF_UNIX:
            raise refuse(f"connected to {address!r}")
        connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        if sock.family != socket.AF_UNIX:
            raise refuse(f"connected to {address!r}")
        return connect_ex(sock, address)

    def guarded_popen(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        self._child_created = False  # type: ignore[attr-defined]  # what `Popen.__del__` reads
        raise refuse(f"started a subprocess {args!r}")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(subprocess.Popen, "__init__", guarded_popen)
    yield broken
    if broken:
        pytest.fail(
            f"a fast-tier test {'; '.join(broken)}. Fake the peer (corral.testing, an ASGI "
            "transport) and stay in process, or mark the test slow (`@pytest.mark.slow`).",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _no_blocking(request: pytest.FixtureRequest) -> Iterator[None]:
    """BlockBuster: a blocking call on the event loop's thread fails a fast test."""
    if not _is_fast(request):
        yield
        return
    from blockbuster import blockbuster_ctx

    with blockbuster_ctx() as bb:
        for function, module, where in ALLOWED_BLOCKING:
            for name in bb.functions if function == "*" else (function,):
                bb.functions[name].can_block_in(module, where)
        yield
