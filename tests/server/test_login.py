"""`/login` and `/logout` over real HTTP: the cookie is a server-side session, never the token;
logout and revocation end it; failed logins are logged and limited per address."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.server._throttle import LoginThrottle
from corral.server.dashboard import create_dashboard
from corral.store.ops import Ops
from corral.store.sql import SqlStore
from corral.testing import FakeClock

httpx2 = pytest.importorskip("httpx2", reason="the HTTP client the openai SDK ships with")

WAIT = 10


class Served:
    def __init__(self, url: str, ops: Ops, token: str, token_id: str, clock: FakeClock) -> None:
        self.url, self.ops, self.token, self.token_id, self.clock = url, ops, token, token_id, clock

    def browser(self) -> Any:
        """A client that sends its origin, as browsers do with every POST."""
        return httpx2.AsyncClient(base_url=self.url, timeout=WAIT, headers={"Origin": self.url})


@pytest.fixture
async def served(tmp_path: Path, serve: Any) -> AsyncIterator[Served]:
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'l.db'}")
    ops = Ops(store, key_file=tmp_path / "audit.key", checkpoint_every=0)
    clock = FakeClock()
    token, row = await ops.create_token("ann", "operator", by="test", at=clock.now())
    throttle = LoginThrottle(clock, attempts=3, window_s=60)
    url = await serve(create_dashboard(store, ops=ops, throttle=throttle, session_ttl_s=3600))
    try:
        yield Served(url, ops, token, row["id"], clock)
    finally:
        await store.close()


async def test_the_cookie_holds_a_session_not_the_token(served):
    async with served.browser() as browser:
        login = await browser.post("/login", data={"token": served.token, "next": "/inbox"})
        assert login.status_code == 303 and login.headers["location"] == "/inbox"
        cookie = browser.cookies["corral_session"]
        assert cookie.startswith("crs_") and served.token not in login.headers["set-cookie"]
        assert "Max-Age=3600" in login.headers["set-cookie"]
        assert (await browser.get("/api/inbox")).status_code == 200
    opened = await served.ops.audit_entries(action="session.open")
    assert opened[0]["actor"] == "token:ann"


async def test_logout_revokes_the_session_on_the_server(served):
    async with served.browser() as browser:
        await browser.post("/login", data={"token": served.token})
        stolen = browser.cookies["corral_session"]
        assert (await browser.post("/logout")).status_code == 303
    async with httpx2.AsyncClient(base_url=served.url, timeout=WAIT) as thief:
        thief.cookies.set("corral_session", stolen)
        response = await thief.get("/api/runs")
        assert response.status_code == 401 and "expired or was closed" in response.json()["message"]
        assert (await thief.get("/inbox")).headers["location"] == "/login?next=/inbox"
    closed = await served.ops.audit_entries(action="session.close")
    assert closed[0]["actor"] == "token:ann"


async def test_revoking_the_token_logs_its_browsers_out(served):
    async with served.browser() as browser:
        await browser.post("/login", data={"token": served.token})
        assert (await browser.get("/api/runs")).status_code == 200
        await served.ops.revoke_token(served.token_id, by="test", at=served.clock.now())
        assert (await browser.get("/api/runs")).status_code == 401


async def test_a_raw_token_in_a_cookie_is_not_a_login(served):
    """The cookie of earlier versions held the API token itself: it no longer logs anyone in."""
    async with httpx2.AsyncClient(base_url=served.url, timeout=WAIT) as browser:
        for name in ("corral_token", "corral_session"):
            browser.cookies.clear()
            browser.cookies.set(name, served.token)
            assert (await browser.get("/api/runs")).status_code == 401, name


async def test_failed_logins_are_logged_and_limited_per_address(served, caplog):
    caplog.set_level(logging.INFO, logger="corral.server._login")
    async with served.browser() as browser:
        for _ in range(3):
            failed = await browser.post("/login", data={"token": "crl_guess_guess"})
            assert failed.status_code == 401
        refused = await browser.post("/login", data={"token": served.token})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
        assert "too many failed logins" in refused.text
        assert "corral_session" not in browser.cookies
        served.clock.advance(60)
        assert (await browser.post("/login", data={"token": served.token})).status_code == 303
    failures = [r for r in caplog.records if r.getMessage().startswith("failed login from")]
    assert len(failures) == 3 and all(r.levelno == logging.WARNING for r in failures)
    assert "127.0.0.1" in failures[0].getMessage()
    assert all("crl_guess" not in r.getMessage() for r in caplog.records)
