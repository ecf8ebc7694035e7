"""`corral serve`: the JSON API, `/metrics`, and the pages in a real headless Chromium."""

from __future__ import annotations

import asyncio
import html
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from corral import Agent, App, AppConfig, RunContext, function_agent, tool
from corral.errors import AgentError
from corral.patterns import Pipeline
from corral.server.dashboard import create_dashboard
from corral.store import queries
from tests.browser import expect, open_page

httpx2 = pytest.importorskip("httpx2", reason="the HTTP client the openai SDK ships with")

ARTIFACTS = Path(
    os.environ.get("CORRAL_ARTIFACTS", Path(__file__).resolve().parents[2] / ".artifacts")
)


class Ticket(BaseModel):
    text: str


@tool
def lookup(order_id: str) -> str:
    """Find an order's status."""
    return f"order {order_id} shipped"


writer = Agent(name="writer", instructions="Draft.", input=Ticket, output=Ticket, tools=[lookup])
editor = Agent(name="editor", instructions="Edit.", input=Ticket, output=Ticket)


@function_agent
def picky(t: Ticket) -> Ticket:
    if "refund" in t.text:
        raise AgentError("refunds need a human", agent="picky", code="cannot_answer")
    return t


gate = asyncio.Event()


@function_agent
async def waiter(t: Ticket) -> Ticket:
    await gate.wait()
    return t


def build(db: str) -> App:
    app = App(AppConfig(database=db, durable=False))

    @app.workflow
    async def desk(ctx: RunContext, t: Ticket) -> Ticket:
        out = (await Pipeline([writer, editor]).run(ctx, t)).output
        return await ctx.call(picky, out)

    @app.workflow
    async def slow(ctx: RunContext, t: Ticket) -> Ticket:
        return await ctx.call(waiter, t)

    return app


@pytest.fixture
async def served(tmp_path, serve) -> Any:
    app = build(f"sqlite:///{tmp_path / 'c.db'}")
    await app.open()
    ids: dict[str, list[str]] = {"ok": [], "failed": []}
    for i in range(6):
        text = f"order {i} refund" if i % 3 == 0 else f"order {i} late"
        result = await app.run("desk", {"text": text}, user="ana" if i % 2 else "bo")
        ids["ok" if result.ok else "failed"].append(result.run_id)
    huge = await app.run("desk", {"text": "order 9 " + "z" * 200_000}, user="cy")
    ids["huge"] = [huge.run_id]
    url = await serve(create_dashboard(app.store, app=app))
    token, _ = await app.ops.create_token("tester", "admin", by="test", at=app.clock.now())
    ids["token"] = [token]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(base_url=url, timeout=10, headers=headers) as client:
        yield app, url, client, ids
    gate.set()
    await app.close()


async def test_runs_api_filters_and_pages(served):
    _, _, client, ids = served
    everything = (await client.get("/api/runs")).json()
    assert len(everything) == 7
    failed = (await client.get("/api/runs", params={"status": "failed"})).json()
    assert {r["run_id"] for r in failed} == set(ids["failed"]) and len(failed) == 2
    ana = (await client.get("/api/runs", params={"user": "ana"})).json()
    assert {r["user_id"] for r in ana} == {"ana"} and len(ana) == 3
    costly = (await client.get("/api/runs", params={"min_cost": "0.0000001"})).json()
    assert costly and all(Decimal(r["cost_usd"]) >= Decimal("0.0000001") for r in costly)
    first = (await client.get("/api/runs", params={"limit": 4})).json()
    cursor = f"{first[-1]['started_at']}|{first[-1]['run_id']}"
    rest = (await client.get("/api/runs", params={"limit": 4, "before": cursor})).json()
    assert [r["run_id"] for r in first + rest] == [r["run_id"] for r in everything]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "exploded"}, "unknown status 'exploded'"),
        ({"since": "last week"}, "cannot read the time"),
        ({"min_cost": "lots"}, "min_cost 'lots' is not a number"),
        ({"before": "yesterday|x"}, "is not a cursor"),
    ],
)
async def test_malformed_filters_are_a_400_that_names_the_filter(served, params, message):
    _, _, client, _ = served
    response = await client.get("/api/runs", params=params)
    assert response.status_code == 400 and message in response.json()["message"]
    page = await client.get("/", params=params)
    assert page.status_code == 400 and message in html.unescape(page.text)


async def test_unknown_runs_are_404_on_the_api_and_the_page(served):
    _, _, client, _ = served
    response = await client.get("/api/runs/nope")
    assert response.status_code == 404 and "no run matches 'nope'" in response.json()["message"]
    assert (await client.get("/runs/nope")).status_code == 404


async def test_run_detail_has_the_graph_waterfall_and_failed_handoffs(served):
    _, _, client, ids = served
    view = (await client.get(f"/api/runs/{ids['failed'][0]}")).json()
    graph = view["graph"]
    assert [n["id"] for n in graph["nodes"]] == ["desk", "writer", "editor", "picky"]
    edges = {(e["from"], e["to"]): e for e in graph["edges"]}
    assert set(edges) == {("desk", "writer"), ("writer", "editor"), ("desk", "picky")}
    assert edges[("desk", "picky")]["failures"] == 1 and edges[("desk", "writer")]["failures"] == 0
    assert all(0 <= s["left_pct"] <= 100 for s in view["spans"])
    assert {s["kind"] for s in view["spans"]} >= {"agent", "model", "tool"}
    huge = await client.get(f"/runs/{ids['huge'][0]}")
    assert huge.status_code == 200 and "characters)" in huge.text and len(huge.text) < 200_000


async def test_costs_agents_and_alerts_api_agree_with_the_ledger(served):
    app, _, client, _ = served
    costs = (await client.get("/api/costs", params={"by": "user"})).json()
    ledger = await app.store.query(queries.cost_breakdown, "user", queries.parse_since("7d"))
    assert {r["key"]: r["cost_usd"] for r in costs} == {
        r["key"]: str(r["cost_usd"]) for r in ledger
    }
    assert (await client.get("/api/costs", params={"by": "planet"})).status_code == 400
    agents = (await client.get("/api/agents")).json()
    assert agents["picky"]["calls"] == 7 and agents["picky"]["errors"] == 2
    assert agents["writer"]["tool_calls"] >= 0 and agents["writer"]["breaker"] == "CLOSED"
    assert len((await client.get("/api/costs/daily", params={"days": 3})).json()) == 3
    assert (await client.post("/api/alerts/12345/ack")).status_code == 404


async def test_prometheus_metrics_match_the_agent_metrics(served):
    from prometheus_client.parser import text_string_to_metric_families

    _, _, client, _ = served
    response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    calls = {
        (s.labels["agent"], s.labels["outcome"]): s.value
        for s in families["corral_agent_calls"].samples
    }
    assert calls[("picky", "error")] == 2 and calls[("picky", "ok")] == 5
    assert calls[("writer", "ok")] == 7
    depth = {s.labels["priority"]: s.value for s in families["corral_limiter_queue_depth"].samples}
    assert depth == {"critical": 0, "interactive": 0, "batch": 0}
    assert "corral_agent_latency_ms" in families and "corral_breaker_state" in families


# -- in a real browser ----------------------------------------------------------------------------


def save_artifact(name: str, data: bytes) -> None:
    """Kept for people (and CI) to look at: `.artifacts/` or $CORRAL_ARTIFACTS."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_bytes(data)


async def test_every_page_loads_in_chromium_without_console_errors(served, browser):
    _, url, client, ids = served
    pages = ("/", "/agents", "/costs", "/alerts", "/inbox", "/controls", "/?status=failed")
    for path in (*pages, f"/runs/{ids['huge'][0]}"):
        page, problems = await open_page(browser, url + path, ids["token"][0])
        assert problems == [], (path, problems)
        await page.close()


async def test_the_run_page_draws_the_graph_and_shows_the_apis_numbers(served, browser):
    _, url, client, ids = served
    run_id = ids["failed"][0]
    view = (await client.get(f"/api/runs/{run_id}")).json()
    page, problems = await open_page(browser, f"{url}/runs/{run_id}", ids["token"][0])
    nodes = await page.locator("#graph g.node").count()
    edges = await page.locator("#graph .edge").count()
    assert nodes == len(view["graph"]["nodes"]) and edges == len(view["graph"]["edges"])
    box = await page.locator("#graph").bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 40  # drawn, not empty
    failed_edge = page.locator('#graph .edge.failed[data-to="picky"]')
    assert await failed_edge.count() == 1
    shown_cost = await page.locator("#run-cost").inner_text()
    assert shown_cost == f"${Decimal(view['run']['cost_usd']):.6f}"
    assert await page.locator("#run-status").inner_text() == "failed"
    assert await page.locator("#waterfall .wf-row").count() == len(view["spans"])
    assert await page.locator("#steps tr.step").count() == len(view["spans"])
    png = await page.screenshot(full_page=True)
    assert len(png) > 10_000
    await asyncio.to_thread(save_artifact, "run-page.png", png)
    assert problems == []


async def test_the_runs_list_and_costs_page_show_the_apis_numbers(served, browser):
    _, url, client, ids = served
    runs = (await client.get("/api/runs")).json()
    page, problems = await open_page(browser, url + "/", ids["token"][0])
    rows = page.locator("#runs tbody tr")
    assert await rows.count() == len(runs)
    first_cost = await rows.nth(0).locator("td.cost").inner_text()
    assert first_cost == f"${Decimal(runs[0]['cost_usd']):.6f}"
    await page.select_option("select[name=status]", "failed")
    await page.click("#run-filters button[type=submit]")
    await page.wait_for_url("**status=failed**")
    assert await page.locator("#runs tbody tr").count() == 2
    by_model = (await client.get("/api/costs", params={"by": "model"})).json()
    costs, _ = await open_page(browser, url + "/costs", ids["token"][0])
    for row in by_model:
        shown = costs.locator(f'#chart-model .bar-row[data-key="{row["key"]}"] .cost')
        assert await shown.inner_text() == f"${Decimal(row['cost_usd']):.6f}"
    assert problems == []


async def test_a_running_run_updates_live_until_it_finishes(served, browser):
    app, url, client, ids = served
    gate.clear()
    handle = await app.start("slow", {"text": "wait for me"})
    page, problems = await open_page(browser, f"{url}/runs/{handle.run_id}", ids["token"][0])
    assert await page.locator("#run-status").inner_text() == "running"
    gate.set()
    await handle.result()
    # `expect`, not `wait_for_function`: the page's CSP allows no eval, which the latter needs.
    await expect(page.locator("#run-status")).to_have_text("succeeded", timeout=15_000)
    assert await page.locator("#live-flag").is_hidden()
    assert problems == []


async def test_acknowledging_an_alert_from_the_alerts_page(served, browser):
    app, url, client, ids = served
    from datetime import UTC, datetime

    alert_id = await app.store.add_alert(
        {
            "key": "anomaly:picky:error_rate",
            "kind": "anomaly",
            "agent": "picky",
            "metric": "error_rate",
            "value": 0.9,
            "baseline": 0.1,
            "limit_value": 0.2,
            "run_id": None,
            "message": "picky error_rate 0.9 is far from its baseline",
            "created_at": datetime.now(UTC),
        }
    )
    page, problems = await open_page(browser, url + "/alerts", ids["token"][0])
    assert await page.locator(f'tr[data-alert="{alert_id}"]').count() == 1
    await page.click(f'button.ack[data-alert="{alert_id}"]')
    await page.locator(f'tr[data-alert="{alert_id}"]').wait_for(state="detached")
    stored = (await client.get("/api/alerts", params={"all": "true"})).json()
    assert stored[0]["acknowledged_by"] == "token:tester"
    assert problems == []
