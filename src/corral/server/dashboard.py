"""`corral serve`: the dashboard, its JSON API and Prometheus `/metrics`, over the run database.

Pages (server-rendered HTML, no build step; a few lines of vanilla JS poll for live updates):

    /                 runs, filtered by status, workflow, user, time and cost
    /runs/{id}        the agent interaction graph, a span waterfall, every step's input, output,
                      cost and error, guard decisions highlighted; live while the run runs
    /agents           per-agent metrics, their trend by hour, breaker state, limiter queues
    /costs            spend by day, agent, user and model
    /alerts           anomaly and threshold alerts; acknowledge
    /inbox            approvals, escalations and reviews waiting for a human (operator routes in
                      `corral.server.operate`)
    /controls         the kill switch and pauses
    /login            sign in with an API token (every other page and endpoint needs one); the
                      browser gets a session cookie, never the token (`corral.server._login`)

JSON: `/api/runs`, `/api/runs/{id}`, `/api/agents`, `/api/costs`, `/api/costs/daily`,
`/api/alerts` (and `POST /api/alerts/{id}/ack`), plus the operator API. Bad filters are a 400
naming the filter; unknown runs a 404; no token 401, a token without the role 403 (see
`corral.server.auth`); the OpenAPI spec is at `/api/openapi.json`, its docs at `/api/docs` (both
need a token too; `corral.server._docs`). Every page and endpoint reads through
`corral.store.queries`.

Before FastAPI sees a request, `corral.server._gate` refuses cross-site browser requests, checks the
token or session and its role, and reads the body up to the route's limit (413 past it), and it
adds the security headers to every response. Asset URLs are root-relative: the `Host` header a
client sends is never written into a page.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any, get_args
from urllib.parse import quote

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from corral.clock import SystemClock
from corral.contracts import RunId
from corral.errors import ConflictError, NotFoundError, PayloadError, StateError, UsageError
from corral.guards.policy import PRIORITIES
from corral.server._docs import add_docs_routes
from corral.server._gate import Gate
from corral.server._login import add_login_routes
from corral.server._throttle import LoginThrottle
from corral.server.auth import (
    Forbidden,
    Principal,
    TooLarge,
    TooManyAttempts,
    Unauthorized,
    authenticate,
    requires,
)
from corral.server.operate import add_operator_routes
from corral.store import queries
from corral.store.ops import Ops
from corral.store.sql import SqlStore
from corral.trace import RunStatus

if TYPE_CHECKING:
    from corral.app import App

__all__ = ["create_dashboard", "run_view"]

_HERE = FilePath(__file__).parent


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_json_default))


def _pretty(value: Any, limit: int = 4000) -> str:
    if value is None:
        return ""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text)} characters)"


def run_view(run: dict[str, Any], spans: list[dict[str, Any]]) -> dict[str, Any]:
    """What the run page shows: the run, spans with waterfall offsets, the interaction graph."""
    t0 = run["started_at"]
    end = run["finished_at"] or max(
        (s["started_at"] + timedelta(milliseconds=s["latency_ms"]) for s in spans), default=t0
    )
    total_ms = max(1.0, (end - t0).total_seconds() * 1000)
    rows = []
    for s in spans:
        offset = max(0.0, (s["started_at"] - t0).total_seconds() * 1000)
        depth = 0 if s["parent_id"] is None else s["step_id"].count(".")
        rows.append(
            {
                **s,
                "offset_ms": offset,
                "left_pct": min(100.0, offset / total_ms * 100),
                "width_pct": max(0.3, min(100.0, s["latency_ms"] / total_ms * 100)),
                "depth": depth,
            }
        )
    return {"run": run, "spans": rows, "total_ms": total_ms, "graph": interaction_graph(run, spans)}


def interaction_graph(run: dict[str, Any], spans: list[dict[str, Any]]) -> dict[str, Any]:
    """Agents (and the workflow) as nodes; handoffs as edges with counts and failures; laid out
    left to right by distance from the workflow."""
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    calls: dict[str, dict[str, int]] = {}
    order: list[str] = [run["workflow"]]
    for s in spans:
        if s["kind"] not in ("agent", "workflow"):
            continue
        source = str((s.get("attrs") or {}).get("from") or run["workflow"])
        if s["kind"] == "workflow":
            source = run["workflow"]
        target = s["name"]
        for name in (source, target):
            if name not in order:
                order.append(name)
        edge = edges.setdefault((source, target), {"from": source, "to": target, "count": 0})
        edge["count"] += 1
        edge["failures"] = edge.get("failures", 0) + (s["status"] != "ok")
        stats = calls.setdefault(target, {"calls": 0, "failures": 0})
        stats["calls"] += 1
        stats["failures"] += s["status"] != "ok"
    depth = {run["workflow"]: 0}
    frontier = [run["workflow"]]
    while frontier:
        nxt = []
        for name in frontier:
            for source, target in edges:
                if source == name and target not in depth:
                    depth[target] = depth[name] + 1
                    nxt.append(target)
        frontier = nxt
    columns: dict[int, int] = {}
    nodes = []
    for name in order:
        d = depth.get(name, 1)
        row = columns.get(d, 0)
        columns[d] = row + 1
        nodes.append(
            {
                "id": name,
                "x": 20 + d * 190,
                "y": 20 + row * 70,
                "workflow": name == run["workflow"],
                **calls.get(name, {"calls": 0, "failures": 0}),
            }
        )
    at = {n["id"]: n for n in nodes}
    for edge in edges.values():
        edge.setdefault("failures", 0)
        a, b = at[edge["from"]], at[edge["to"]]
        edge.update(x1=a["x"] + 120, y1=a["y"] + 20, x2=b["x"], y2=b["y"] + 20, loop=a is b)
    width = 80 + (max(columns) + 1) * 190 if columns else 270
    height = 20 + max(columns.values(), default=1) * 70
    return {"nodes": nodes, "edges": list(edges.values()), "width": width, "height": height}


def _filter(
    status: str | None,
    workflow: str | None,
    user: str | None,
    since: str | None,
    min_cost: str | None,
    limit: int,
    before: str | None,
) -> queries.RunFilter:
    cost = _dollars("min_cost", min_cost) if min_cost else None
    cursor: tuple[datetime, str] | None = None
    if before:
        at, _, run_id = before.partition("|")
        try:
            parsed = datetime.fromisoformat(at)
        except ValueError:
            raise UsageError(f"before {before!r} is not a cursor from a previous page") from None
        cursor = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC), run_id)
    if status and status not in _STATUSES:
        raise UsageError(f"unknown status {status!r}; statuses are {', '.join(_STATUSES)}")
    return queries.RunFilter(
        status=status or None,
        workflow=workflow or None,
        user=user or None,
        since=queries.parse_since(since) if since else None,
        min_cost_usd=cost,
        limit=limit,
        before=cursor,
    )


_MAX_DOLLARS = Decimal(10) ** 12
"""No filter needs more dollars than this; `1e999999999` would overflow the integer column."""


def _dollars(name: str, text: str) -> Decimal:
    """A dollar amount from a query parameter: a finite number from 0 up to `_MAX_DOLLARS`.

    Raises:
        UsageError: `NaN`, `Infinity`, a negative or an absurdly large amount, or not a number.
    """
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise UsageError(f"{name} {text!r} is not a number of dollars") from None
    if not value.is_finite() or not 0 <= value <= _MAX_DOLLARS:
        raise UsageError(
            f"{name} {text!r} is not a number of dollars from 0 to {_MAX_DOLLARS:,}; "
            "use a plain amount like 0.05"
        )
    return value


_STATUSES: tuple[str, ...] = get_args(RunStatus)
_ERRORS: dict[type[Exception], tuple[int, str]] = {
    Unauthorized: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    TooLarge: (413, "payload_too_large"),
    TooManyAttempts: (429, "too_many_attempts"),
    NotFoundError: (404, "not_found"),
    ConflictError: (409, "conflict"),
    PayloadError: (422, "invalid_payload"),
    UsageError: (400, "bad_request"),
    StateError: (503, "unavailable"),  # a locked or unreachable database: try again
    # Text that cannot be stored: a lone surrogate (`"\ud800"` in JSON) in a field.
    UnicodeEncodeError: (400, "bad_request"),
}


SESSION_TTL_S = 12 * 3600.0
"""How long a dashboard login lasts unless `create_dashboard` is told otherwise."""


def create_dashboard(
    store: SqlStore,
    *,
    app: App | None = None,
    ops: Ops | None = None,
    session_ttl_s: float = SESSION_TTL_S,
    throttle: LoginThrottle | None = None,
) -> FastAPI:
    """The dashboard over `store`.

    Args:
        store: The run database.
        app: An open `App` in this process: `/metrics` and the agents page also show live breaker
            states and limiter queue depths, and decisions and controls take effect through it
            at once.
        ops: Holds the tokens and sessions every request is checked against (default: the
            app's, or one over `store`).
        session_ttl_s: How long a dashboard login lasts.
        throttle: Counts failed logins per client (default: 5 a minute, on the app's clock).

    Raises:
        UsageError: a non-positive `session_ttl_s`.
    """
    if not session_ttl_s > 0:
        raise UsageError(f"session_ttl_s must be positive, got {session_ttl_s!r}")
    ops = ops or (app.ops if app is not None and app.ops is not None else Ops(store))
    clock = app.clock if app is not None else SystemClock()
    viewer = Depends(requires(ops, "viewer"))
    operator = Depends(requires(ops, "operator"))
    api = FastAPI(
        title="Corral",
        summary="Runs, costs, agents, alerts and operator controls of a Corral installation.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    add_docs_routes(api, viewer)
    api.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.filters["pretty"] = _pretty
    # The inbox shows what a decision acts on in full: a preview there let approving run a tail
    # the approver never saw, and the edit box started from the preview.
    templates.env.filters["whole"] = lambda v: _pretty(v, limit=sys.maxsize)
    templates.env.filters["usd"] = lambda v: f"${Decimal(v or 0):.6f}"
    templates.env.filters["ms"] = lambda v: "-" if v is None else f"{float(v):,.0f} ms"
    templates.env.filters["pct"] = lambda v: "-" if v is None else f"{float(v):.1%}"
    templates.env.filters["when"] = lambda v: "-" if v is None else v.strftime("%Y-%m-%d %H:%M:%S")

    async def refuse(request: Request, exc: Exception) -> Response:
        status, code = next(v for k, v in _ERRORS.items() if isinstance(exc, k))
        message = str(exc)
        if isinstance(exc, UnicodeEncodeError):
            message = (
                "the request holds text that is not valid Unicode (a lone surrogate such as "
                "\\ud800); send each surrogate pair whole"
            )
        is_api = request.url.path.startswith("/api/") or request.url.path == "/metrics"
        if status == 401 and not is_api:
            target = quote(
                request.url.path + (f"?{request.url.query}" if request.url.query else "")
            )
            return RedirectResponse(f"/login?next={target}", status_code=303)
        if is_api:
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            if status == 503:
                headers = {"Retry-After": "5"}
            if isinstance(exc, TooManyAttempts):
                headers = {"Retry-After": str(exc.retry_after_s)}
            return JSONResponse(
                {"error": code, "message": message, **_details(exc)},
                status_code=status,
                headers=headers,
            )
        title = {
            403: "Forbidden",
            404: "Not found",
            409: "Conflict",
            413: "Too large",
            429: "Too many attempts",
            503: "Unavailable",
        }.get(status, "Bad request")
        retry = (
            {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, TooManyAttempts) else None
        )
        return templates.TemplateResponse(
            request,
            "error.html",
            {"message": message, "title": title},
            status_code=status,
            headers=retry,
        )

    for error in _ERRORS:
        api.add_exception_handler(error, refuse)

    def page(
        request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
    ) -> HTMLResponse:
        fragment = request.query_params.get("fragment") == "1"
        who: Principal | None = getattr(request.state, "principal", None)
        return templates.TemplateResponse(
            request,
            name,
            {**context, "fragment": fragment, "path": request.url.path, "who": who},
            status_code=status_code,
        )

    async def load_run(run_id: str) -> dict[str, Any] | None:
        run = await store.get_run(RunId(run_id))
        if run is None:
            return None
        return run_view(run, await store.list_spans(run["run_id"]))

    def not_found(request: Request, run_id: str) -> Response:
        message = f"no run matches {run_id!r}; the runs list shows every run"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "not_found", "message": message}, status_code=404)
        return templates.TemplateResponse(
            request, "error.html", {"message": message, "title": "Not found"}, status_code=404
        )

    # -- JSON API --------------------------------------------------------------------------------

    @api.get("/api/runs", dependencies=[viewer])
    async def api_runs(
        status: str | None = None,
        workflow: str | None = None,
        user: str | None = None,
        since: str | None = None,
        min_cost: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        before: str | None = None,
    ) -> Any:
        f = _filter(status, workflow, user, since, min_cost, limit, before)
        return _jsonable(await store.query(queries.run_page, f))

    @api.get("/api/runs/{run_id}", dependencies=[viewer])
    async def api_run(request: Request, run_id: str) -> Any:
        view = await load_run(run_id)
        return not_found(request, run_id) if view is None else _jsonable(view)

    @api.get("/api/agents", dependencies=[viewer])
    async def api_agents(since: str = "24h") -> Any:
        start = queries.parse_since(since)
        metrics = await store.query(queries.agent_metrics, start)
        _live_breakers(app, metrics)
        return _jsonable(metrics)

    @api.get("/api/costs", dependencies=[viewer])
    async def api_costs(by: str = "agent", since: str = "7d") -> Any:
        rows = await store.query(queries.cost_breakdown, by, queries.parse_since(since))
        return _jsonable(rows)

    @api.get("/api/costs/daily", dependencies=[viewer])
    async def api_daily(days: int = Query(14, ge=1, le=366)) -> Any:
        return _jsonable(await store.query(queries.daily_report, days))

    @api.get("/api/alerts", dependencies=[viewer])
    async def api_alerts(all: bool = False) -> Any:
        rows = await store.query(lambda conn: queries.list_alerts(conn, include_acknowledged=all))
        return _jsonable(rows)

    @api.post("/api/alerts/{alert_id}/ack")
    async def api_ack(alert_id: int = Path(ge=1, le=2**63 - 1), who: Principal = operator) -> Any:
        if not await store.acknowledge_alert(alert_id, who.actor, datetime.now(UTC)):
            return JSONResponse(
                {"error": "not_found", "message": f"no unacknowledged alert {alert_id}"},
                status_code=404,
            )
        return {"acknowledged": alert_id, "by": who.actor}

    @api.get("/metrics", dependencies=[viewer])
    async def metrics(window: str = "1h") -> Response:
        from corral.server.metrics import render

        body, content_type = await render(store, app, queries.parse_since(window), window)
        return Response(body, media_type=content_type)

    # -- pages ---------------------------------------------------------------------------------

    @api.get("/", response_class=HTMLResponse, dependencies=[viewer], include_in_schema=False)
    async def runs_page(
        request: Request,
        status: str | None = None,
        workflow: str | None = None,
        user: str | None = None,
        since: str | None = None,
        min_cost: str | None = None,
        before: str | None = None,
    ) -> Response:
        f = _filter(status, workflow, user, since, min_cost, 50, before)
        rows = await store.query(queries.run_page, f)
        last = rows[-1] if len(rows) == f.limit else None
        cursor = f"{last['started_at'].isoformat()}|{last['run_id']}" if last else None
        args = {"status": status, "workflow": workflow, "user": user, "since": since}
        return page(
            request,
            "runs.html",
            {
                "title": "Runs",
                "runs": rows,
                "filters": {**args, "min_cost": min_cost},
                "statuses": _STATUSES,
                "next_cursor": cursor,
                "live": True,
            },
        )

    @api.get(
        "/runs/{run_id}",
        response_class=HTMLResponse,
        dependencies=[viewer],
        include_in_schema=False,
    )
    async def run_page(request: Request, run_id: str) -> Response:
        view = await load_run(run_id)
        if view is None:
            return not_found(request, run_id)
        return page(
            request,
            "run.html",
            {
                "title": f"Run {view['run']['run_id'][:12]}",
                **view,
                "live": view["run"]["status"] == "running",
            },
        )

    @api.get("/agents", response_class=HTMLResponse, dependencies=[viewer], include_in_schema=False)
    async def agents_page(request: Request, since: str = "24h") -> Response:
        start = queries.parse_since(since)
        metrics = await store.query(queries.agent_metrics, start)
        _live_breakers(app, metrics)
        series = await store.query(queries.agent_series, start)
        waits = await store.query(queries.queue_waits, start)
        depths = _queue_depths(app)
        return page(
            request,
            "agents.html",
            {
                "title": "Agents",
                "agents": metrics,
                "series": series,
                "waits": waits,
                "depths": depths,
                "since": since,
                "live": True,
            },
        )

    @api.get("/costs", response_class=HTMLResponse, dependencies=[viewer], include_in_schema=False)
    async def costs_page(request: Request, since: str = "7d", days: int = 14) -> Response:
        start = queries.parse_since(since)
        groups = {
            by: await store.query(queries.cost_breakdown, by, start)
            for by in ("agent", "user", "model", "workflow")
        }
        daily = await store.query(queries.daily_report, max(1, min(days, 366)))
        return page(
            request,
            "costs.html",
            {"title": "Costs", "groups": groups, "daily": daily, "since": since},
        )

    @api.get("/alerts", response_class=HTMLResponse, dependencies=[viewer], include_in_schema=False)
    async def alerts_page(request: Request, all: bool = False) -> Response:
        rows = await store.query(lambda conn: queries.list_alerts(conn, include_acknowledged=all))
        return page(
            request, "alerts.html", {"title": "Alerts", "alerts": rows, "all": all, "live": True}
        )

    add_login_routes(
        api,
        ops,
        page=page,
        throttle=throttle or LoginThrottle(clock),
        session_ttl_s=session_ttl_s,
        now=clock.now,
    )
    add_operator_routes(api, ops, app, page, _jsonable)

    async def who(request: Request) -> Principal:
        return await authenticate(ops, request, clock.now())

    api.add_middleware(Gate, router=api.router, authenticate=who, refuse=refuse)
    return api


def _details(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, PayloadError):
        return {"errors": exc.errors}
    return {}


def _live_breakers(app: App | None, metrics: dict[str, dict[str, Any]]) -> None:
    """Overwrite the last-seen breaker state with the live one when the app is in process."""
    if app is None:
        return
    for key, state in app.guards.breakers.states().items():
        kind, _, name = key.partition(":")
        if kind == "agent" and name in metrics:
            metrics[name]["breaker"] = state


def _queue_depths(app: App | None) -> dict[str, int] | None:
    if app is None:
        return None
    depths = app.guards.limiter.queue_depths()
    return {name: depths.get(level, 0) for name, level in PRIORITIES.items()}
