"""The operator half of the HTTP API and its pages: the human inbox, decisions, the kill switch and
pauses, the audit log, tokens and the configuration.

    GET  /api/inbox                     pending requests (viewer)
    POST /api/inbox/{id}/decide         approve / reject / edit / answer / take_over / review
    POST /api/runs/{id}/cancel          halt one run
    GET  /api/controls                  what is halted and paused now (viewer)
    POST /api/controls                  halt / release / pause / resume
    GET  /api/audit, /api/audit/verify  the audit log and its verification (operator / admin)
    GET  /api/tokens, POST, DELETE      API tokens (admin)
    GET  /api/config                    the running configuration, secrets hidden (admin)
    /inbox, /controls                   the pages

With an `App` open in the same process, decisions and controls take effect at once through it;
otherwise they are written to the database and every app process applies them within
`humans.poll_s`.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from corral.guards.kill import KillSwitch
from corral.server._gate import max_body
from corral.server.auth import Principal, requires
from corral.store.ops import Ops

if TYPE_CHECKING:
    from corral.app import App

__all__ = ["add_operator_routes"]

Id = Path(min_length=1, max_length=200)
_DECISION_BODY = 1024 * 1024


class DecisionBody(BaseModel):
    """A human's decision on a request."""

    action: Literal["approve", "reject", "edit", "answer", "take_over", "review"]
    value: Any = Field(
        None,
        description="edit: the new arguments; answer: the agent's output; "
        "review: {score: 1..5, label}",
    )
    comment: str = Field("", max_length=4000)


class CancelBody(BaseModel):
    """Why a run is cancelled."""

    reason: str = Field("", max_length=2000)


class ControlBody(BaseModel):
    """An operator action: `halt`/`release` (scopes run, agent, all) or `pause`/`resume`
    (scopes agent, workflow, noncritical)."""

    action: Literal["halt", "release", "pause", "resume"]
    scope: Literal["run", "agent", "workflow", "all", "noncritical"]
    name: str | None = Field(None, min_length=1, max_length=200)
    reason: str = Field("", max_length=2000)


class TokenBody(BaseModel):
    """A new API token."""

    name: str = Field(min_length=1, max_length=200)
    role: Literal["viewer", "operator", "admin"] = "viewer"
    expires_in_days: float | None = Field(
        None, gt=0, le=3650, description="the token stops working after this many days"
    )


def add_operator_routes(
    api: FastAPI,
    ops: Ops,
    app: App | None,
    page: Any,
    jsonable: Any,
) -> None:
    """Register the operator endpoints and pages on `api`."""
    viewer = Depends(requires(ops, "viewer"))
    operator = Depends(requires(ops, "operator"))
    admin = Depends(requires(ops, "admin"))
    # Straight onto the app's router, not an included one: the gate (`corral.server._gate`) reads
    # each route's role and body limit from the app's own routes.
    router = api.router

    def now() -> datetime:
        return app.clock.now() if app is not None else datetime.now(UTC)

    async def control_state() -> dict[str, Any]:
        if app is not None:
            return app.guards.kill.state
        replay = KillSwitch()
        for c in await ops.controls_since(0):
            replay.apply(c.action, c.scope, c.name, c.reason or f"by {c.by}")
        return replay.state

    @router.get("/api/inbox", dependencies=[viewer])
    async def api_inbox(
        kind: Literal["approval", "escalation", "review"] | None = None,
        status: Literal[
            "pending",
            "approved",
            "rejected",
            "edited",
            "answered",
            "taken_over",
            "reviewed",
            "timed_out",
        ]
        | None = "pending",
        run_id: str | None = Query(None, max_length=64),
        limit: int = Query(100, ge=1, le=500),
    ) -> Any:
        rows = await ops.list_requests(kind=kind, status=status, run_id=run_id, limit=limit)
        return jsonable(rows)

    # An edit or an answer carries a tool's arguments or an agent's output: more than the
    # default 32 KiB, still bounded.
    @router.post("/api/inbox/{request_id}/decide", openapi_extra=max_body(_DECISION_BODY))
    async def api_decide(
        body: DecisionBody,
        request_id: str = Id,
        who: Principal = operator,
    ) -> Any:
        if app is not None:
            row = await app.decide(
                request_id, body.action, by=who.actor, value=body.value, comment=body.comment
            )
        else:
            row = await ops.decide(
                request_id,
                body.action,
                by=who.actor,
                at=now(),
                value=body.value,
                comment=body.comment,
            )
        return jsonable(row)

    async def add_control(
        action: str, scope: str, name: str | None, who: Principal, reason: str
    ) -> dict[str, Any]:
        if app is not None:
            control = await app.control(action, scope, name, by=who.actor, reason=reason)
        else:
            control = await ops.add_control(
                action, scope, name, by=who.actor, at=now(), reason=reason
            )
        return jsonable(dataclasses.asdict(control))  # type: ignore[no-any-return]

    @router.post("/api/runs/{run_id}/cancel")
    async def api_cancel(
        body: CancelBody | None = None,
        run_id: str = Path(min_length=1, max_length=64),
        who: Principal = operator,
    ) -> Any:
        return await add_control("halt", "run", run_id, who, body.reason if body else "")

    @router.get("/api/controls", dependencies=[viewer])
    async def api_controls() -> Any:
        return await control_state()

    @router.post("/api/controls")
    async def api_control(body: ControlBody, who: Principal = operator) -> Any:
        return await add_control(body.action, body.scope, body.name, who, body.reason)

    @router.get("/api/audit", dependencies=[operator])
    async def api_audit(
        run_id: str | None = Query(None, max_length=64),
        action: str | None = Query(None, max_length=64),
        limit: int = Query(100, ge=1, le=1000),
    ) -> Any:
        return jsonable(await ops.audit_entries(run_id=run_id, action=action, limit=limit))

    @router.get("/api/audit/verify", dependencies=[admin])
    async def api_audit_verify() -> Any:
        count, problems = await ops.verify()
        return {"entries": count, "ok": not problems, "problems": [p.to_dict() for p in problems]}

    @router.get("/api/tokens", dependencies=[admin])
    async def api_tokens() -> Any:
        return jsonable(await ops.list_tokens())

    @router.post("/api/tokens", status_code=201)
    async def api_token_create(body: TokenBody, who: Principal = admin) -> Any:
        lifetime = body.expires_in_days * 86400 if body.expires_in_days is not None else None
        token, row = await ops.create_token(
            body.name, body.role, by=who.actor, at=now(), expires_in_s=lifetime
        )
        return jsonable({**row, "token": token})

    @router.delete("/api/tokens/{token_id}")
    async def api_token_revoke(
        token_id: str = Path(min_length=1, max_length=16), who: Principal = admin
    ) -> Any:
        await ops.revoke_token(token_id, by=who.actor, at=now())
        return {"revoked": token_id}

    @router.get("/api/config", dependencies=[admin])
    async def api_config() -> Any:
        if app is None:
            return {"database": ops.store._safe_url(), "app": None}
        return jsonable(app.config.public(ops.store._safe_url()))

    # -- pages --------------------------------------------------------------------------------

    @router.get(
        "/inbox", response_class=HTMLResponse, dependencies=[viewer], include_in_schema=False
    )
    async def inbox_page(
        request: Request, kind: Literal["approval", "escalation", "review"] | None = None
    ) -> Response:
        rows = await ops.list_requests(kind=kind, status="pending", limit=200)
        decided = await ops.list_requests(kind=kind, status=None, limit=30)
        return page(  # type: ignore[no-any-return]
            request,
            "inbox.html",
            {
                "title": "Inbox",
                "requests": rows,
                "decided": [r for r in decided if r["status"] != "pending"],
                "kind": kind,
                "live": True,
            },
        )

    @router.get(
        "/controls", response_class=HTMLResponse, dependencies=[viewer], include_in_schema=False
    )
    async def controls_page(request: Request) -> Response:
        history = await ops.audit_entries(limit=200)
        return page(  # type: ignore[no-any-return]
            request,
            "controls.html",
            {
                "title": "Controls",
                "state": await control_state(),
                "history": [e for e in history if e["action"].startswith("operator.")][:30],
                "live": True,
            },
        )
