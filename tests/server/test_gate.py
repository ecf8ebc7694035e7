"""The gate in front of `corral serve`, over real HTTP: authentication before the body, body
limits, cross-site refusals, security headers, the Host header, and filters that used to be 500s."""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from corral.server._gate import _is_host
from corral.server.dashboard import create_dashboard
from corral.store.ops import Ops
from corral.store.sql import SqlStore
from corral.testing import FakeClock
from tests.browser import expect, open_page

httpx2 = pytest.importorskip("httpx2", reason="the HTTP client the openai SDK ships with")

WAIT = 10


@dataclass
class Served:
    url: str
    ops: Ops
    tokens: dict[str, str]

    def client(self, role: str | None = None, **headers: str) -> Any:
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[role]}"
        return httpx2.AsyncClient(base_url=self.url, timeout=WAIT, headers=headers)

    async def session(self, role: str) -> str:
        """A login session's cookie value, as the login form makes it."""
        async with self.client(Origin=self.url) as browser:
            response = await browser.post("/login", data={"token": self.tokens[role]})
            assert response.status_code == 303
            return str(browser.cookies["corral_session"])


@pytest.fixture
async def served(tmp_path: Path, serve: Any) -> AsyncIterator[Served]:
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'g.db'}")
    ops = Ops(store, key_file=tmp_path / "audit.key", checkpoint_every=0)
    tokens = {}
    for role in ("viewer", "operator", "admin"):
        tokens[role], _ = await ops.create_token(role, role, by="test", at=FakeClock().now())
    url = await serve(create_dashboard(store, ops=ops))
    try:
        yield Served(url, ops, tokens)
    finally:
        await store.close()


async def _raw(url: str, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a raw HTTP/1.1 request head (and `body`), return the status and the response: a body
    the server refuses to read does not have to be sent at all."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        response = head + await asyncio.wait_for(reader.readexactly(length), WAIT)
    finally:
        writer.close()
    return int(response.split(b" ", 2)[1]), response


# -- point 10: authenticate first, bounded bodies ------------------------------------------------


async def test_a_huge_login_body_is_refused_from_its_length_without_being_read(served):
    status, response = await _raw(
        served.url,
        "POST /login HTTP/1.1\nHost: x\nContent-Type: application/x-www-form-urlencoded\n"
        "Content-Length: 300000000\n",
        b"token=",
    )
    assert status == 413
    assert b"300,000,000 bytes; POST /login takes at most 4,096 bytes" in response


async def test_a_chunked_body_is_cut_off_at_the_limit_without_waiting_for_the_rest(served):
    """40 KiB of a body that never ends (no length, chunked): 413 as soon as it passes 32 KiB."""
    chunk = b"x" * 8192
    status, response = await _raw(
        served.url,
        f"POST /api/controls HTTP/1.1\nHost: x\nAuthorization: Bearer {served.tokens['operator']}"
        "\nContent-Type: application/json\nTransfer-Encoding: chunked\n",
        b"".join(b"2000\r\n" + chunk + b"\r\n" for _ in range(5)),  # and no last chunk
    )
    assert status == 413
    assert b"over the 32,768 bytes POST /api/controls takes" in response


async def test_an_anonymous_bad_body_is_401_not_422_and_a_viewers_is_403(served):
    broken = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    async with served.client() as anonymous:
        response = await anonymous.post("/api/controls", **broken)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    async with served.client("viewer") as viewer:
        response = await viewer.post("/api/controls", **broken)
        assert response.status_code == 403 and "this needs operator" in response.json()["message"]
    async with served.client("operator") as operator:
        assert (await operator.post("/api/controls", **broken)).status_code == 422


async def test_each_route_has_its_own_body_limit(served):
    """A decision carries a tool's arguments, so it takes up to 1 MiB; controls take 32 KiB."""
    edit = {"action": "edit", "value": {"text": "z" * 200_000}}
    async with served.client("operator") as operator:
        decided = await operator.post("/api/inbox/nope/decide", json=edit)
        assert decided.status_code == 404  # through the gate, to the route
        control = {"action": "halt", "scope": "all", "reason": "z" * 200_000}
        too_big = await operator.post("/api/controls", json=control)
        assert too_big.status_code == 413 and too_big.json()["error"] == "payload_too_large"
        edit["value"] = {"text": "z" * 1_100_000}
        assert (await operator.post("/api/inbox/nope/decide", json=edit)).status_code == 413
    async with served.client("admin") as admin:
        spec = (await admin.get("/api/openapi.json")).json()
    decide = spec["paths"]["/api/inbox/{request_id}/decide"]["post"]
    assert decide["x-max-body-bytes"] == 1024 * 1024


# -- point 11: cross-site requests, headers, docs, Host, filters ---------------------------------


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Sec-Fetch-Site": "same-site"}, False),  # another port of the same host
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Origin": "http://127.0.0.1:1"}, False),
        ({"Origin": "null"}, False),
        ({}, False),  # a cookie and no origin at all: not a browser we can trust
        ({"Sec-Fetch-Site": "same-origin"}, True),
        ({"Origin": "SELF"}, True),
    ],
    ids=["same-site", "cross-site", "other-port", "null", "no-origin", "same-origin", "origin"],
)
async def test_cookie_posts_must_come_from_the_dashboards_own_origin(served, headers, allowed):
    cookie = await served.session("operator")
    headers = {k: served.url if v == "SELF" else v for k, v in headers.items()}
    async with served.client(**headers) as browser:
        browser.cookies.set("corral_session", cookie)
        response = await browser.post("/api/runs/r1/cancel", json={"reason": "csrf?"})
    if allowed:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 403 and "refused" in response.json()["message"]
    halts = [c for c in await served.ops.controls_since(0) if c.name == "r1"]
    assert len(halts) == (1 if allowed else 0)


async def test_bearer_requests_do_not_need_an_origin(served):
    async with served.client("operator", Origin="http://elsewhere.example") as script:
        assert (await script.post("/api/runs/r2/cancel", json={})).status_code == 200


async def test_a_login_form_posted_from_another_site_is_refused(served):
    async with served.client(**{"Sec-Fetch-Site": "cross-site"}) as browser:
        response = await browser.post("/login", data={"token": served.tokens["admin"]})
    assert response.status_code == 403 and "corral_session" not in response.headers.get(
        "set-cookie", ""
    )


async def test_every_response_carries_the_security_headers(served):
    cookie = await served.session("viewer")
    async with served.client() as browser:
        browser.cookies.set("corral_session", cookie)
        responses = {
            "page": await browser.get("/"),
            "api": await browser.get("/api/runs"),
            "login": await browser.get("/login"),
            "static": await browser.get("/static/corral.js"),
        }
    async with served.client() as anonymous:
        responses["refused"] = await anonymous.get("/api/runs")
    for name, response in responses.items():
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, name
        assert response.headers["x-content-type-options"] == "nosniff", name
        assert response.headers["referrer-policy"] == "no-referrer", name
    for name in ("page", "api", "login", "refused"):
        assert responses[name].headers["cache-control"] == "no-store", name
    assert "no-store" not in responses["static"].headers.get("cache-control", "")


async def test_the_host_header_is_never_written_into_a_page(served):
    cookie = await served.session("viewer")
    async with served.client(Host="evil.example:6666") as browser:
        browser.cookies.set("corral_session", cookie)
        page = await browser.get("/")
        login = await browser.get("/login")
        docs = await browser.get("/api/docs")
    for response in (page, login, docs):
        assert response.status_code == 200
        assert "evil.example" not in response.text
    assert 'src="/static/corral.js"' in page.text
    assert 'src="/static/swagger/swagger-ui-bundle.js"' in docs.text


async def test_the_api_docs_need_a_token_and_load_nothing_from_a_cdn(served):
    async with served.client() as anonymous:
        assert (await anonymous.get("/api/docs")).status_code == 401
        assert (await anonymous.get("/api/openapi.json")).status_code == 401
    async with served.client("viewer") as viewer:
        docs = await viewer.get("/api/docs")
        assert docs.status_code == 200 and "http" not in docs.text.replace(served.url, "")
        for asset in ("swagger/swagger-ui-bundle.js", "swagger/swagger-ui.css", "api-docs.js"):
            response = await viewer.get(f"/static/{asset}")
            assert response.status_code == 200 and len(response.content) > 100, asset
        spec = (await viewer.get("/api/openapi.json")).json()
        assert "/api/runs" in spec["paths"] and "/api/docs" not in spec["paths"]


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/api/runs", {"min_cost": "NaN"}, "min_cost 'NaN' is not a number of dollars from 0"),
        ("/api/runs", {"min_cost": "Infinity"}, "min_cost 'Infinity' is not a number"),
        ("/api/runs", {"min_cost": "1e999999999"}, "min_cost '1e999999999' is not a number"),
        ("/api/runs", {"min_cost": "-1"}, "min_cost '-1' is not a number of dollars from 0"),
        ("/api/runs", {"since": "999999999999d"}, "reaches back before the year 1"),
        ("/api/agents", {"since": "9" * 400 + "w"}, "reaches back before the year 1"),
        ("/api/costs", {"since": "999999999999d"}, "reaches back before the year 1"),
        ("/metrics", {"window": "999999999999d"}, "reaches back before the year 1"),
    ],
    ids=["nan", "infinity", "huge-exponent", "negative", "since", "agents", "costs", "metrics"],
)
async def test_absurd_filters_are_400s_not_500s(served, path, params, message):
    async with served.client("viewer") as viewer:
        response = await viewer.get(path, params=params)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


async def test_absurd_filters_on_pages_are_400_pages(served):
    async with served.client("viewer") as viewer:
        for params in ({"min_cost": "NaN"}, {"since": "999999999999d"}):
            page = await viewer.get("/", params=params)
            assert page.status_code == 400 and "Bad request" in html.unescape(page.text)
        agents = await viewer.get("/agents", params={"since": "999999999999d"})
        assert agents.status_code == 400


# -- in a real browser ----------------------------------------------------------------------------


async def test_the_api_docs_render_in_chromium_under_the_csp(served, browser):
    page, problems = await open_page(browser, served.url + "/api/docs", served.tokens["viewer"])
    await expect(page.locator(".opblock").first).to_be_visible(timeout=WAIT * 1000)
    assert await page.locator(".opblock").count() >= 10
    assert problems == []  # a CSP violation or a failed asset is a console error


async def test_a_form_on_another_port_of_the_same_host_cannot_cancel_a_run(served, serve, browser):
    """The reported attack: SameSite=Strict sends the cookie (another port is the same site), so
    only the origin check stops it."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    target = f"{served.url}/api/runs/r9/cancel"
    evil = f'<form method="post" action="{target}"><button id="go">win a prize</button></form>'

    async def bait(_: Any) -> HTMLResponse:
        return HTMLResponse(evil)

    other = await serve(Starlette(routes=[Route("/", bait)]))
    assert urlsplit(other).hostname == urlsplit(served.url).hostname
    page, _ = await open_page(browser, served.url + "/", served.tokens["operator"])  # logged in
    await page.goto(other + "/")
    async with page.expect_response(target) as answer:
        await page.click("#go")
    response = await answer.value
    assert response.status == 403
    assert await served.ops.controls_since(0) == []


# -- the origin check alone (fast) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://Dash.Example", "dash.example:80", True),
        ("https://dash.example", "dash.example", True),
        ("https://[::1]:8443", "[::1]:8443", True),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False),
        ("https://dash.example", "dash.example:80", False),
        ("http://dash.example.evil", "dash.example", False),
        ("null", "dash.example", False),
        ("file://", "dash.example", False),
        ("http://dash.example:port", "dash.example", False),
    ],
    ids=[
        "same",
        "default-port",
        "https-default",
        "ipv6",
        "other-port",
        "other-scheme-port",
        "suffix",
        "null",
        "file",
        "bad-port",
    ],
)
def test_an_origin_matches_only_its_own_host_and_port(origin, host, same):
    assert _is_host(origin, host) is same


async def test_a_lone_surrogate_in_a_body_is_a_400_not_a_500(served):
    """`"\\ud800"` in a control's reason reached the database and failed there (500)."""
    body = b'{"action": "pause", "scope": "agent", "name": "a", "reason": "x\\ud800"}'
    async with served.client("operator") as operator:
        response = await operator.post(
            "/api/controls", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400, response.text
    assert "not valid Unicode" in response.json()["message"]
