"""`/login` and `/logout`: trading an API token for a server-side session, and ending it.

The login form takes an API token once and answers with the `corral_session` cookie, which holds a
new random secret (`corral.store.sessions`), never the token: a stolen cookie dies with its
session (logout, expiry, or the token's revocation) and is no token to reuse elsewhere. Failed
logins are logged with the client's address and limited per address (`LoginThrottle`: 429 with
`Retry-After` past the limit). Both routes are public; the gate (`corral.server._gate`) still
refuses them from another origin and caps their bodies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from corral.server._gate import max_body
from corral.server._throttle import LoginThrottle
from corral.server.auth import COOKIE, TooManyAttempts
from corral.store.ops import Ops

__all__ = ["LEGACY_COOKIE", "add_login_routes"]

log = logging.getLogger(__name__)

LEGACY_COOKIE = "corral_token"
"""The cookie earlier versions set, holding the raw API token: cleared at login and logout."""
_LOGIN_BODY = 4 * 1024
"""A token, a return path and form encoding fit easily; a 300 MB "login" is refused unread."""

Page = Callable[..., Response]


def add_login_routes(
    api: FastAPI,
    ops: Ops,
    *,
    page: Page,
    throttle: LoginThrottle,
    session_ttl_s: float,
    now: Callable[[], datetime],
) -> None:
    """Register `GET /login`, `POST /login` and `POST /logout` on `api`.

    Args:
        page: Renders a template: `page(request, name, context, status_code=...)`.
        throttle: Counts failed logins per client address.
        session_ttl_s: How long a login lasts.
        now: The current time (sessions' creation and expiry).
    """

    def login_form(request: Request, target: str, error: str | None, status: int) -> Response:
        context: dict[str, Any] = {"title": "Log in", "next": target, "live": False}
        if error is not None:
            context["error"] = error
        return page(request, "login.html", context, status_code=status)

    @api.get("/login", include_in_schema=False)
    async def login_page(request: Request, next: str = "/") -> Response:
        return login_form(request, local_path(next), None, 200)

    @api.post("/login", include_in_schema=False, openapi_extra=max_body(_LOGIN_BODY))
    async def login(request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        wait_s = throttle.retry_after_s(client)
        if wait_s > 0:
            log.warning("login refused: %s is over the failed-login limit", client)
            raise TooManyAttempts(wait_s)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        target = local_path((form.get("next") or ["/"])[0])
        found = await ops.authenticate(token, now()) if token else None
        if found is None:
            throttle.failed(client)
            log.warning("failed login from %s: unknown, revoked or expired token", client)
            return login_form(request, target, "unknown, revoked or expired token", 401)
        throttle.succeeded(client)
        secret, session = await ops.open_session(
            found["id"], by=f"token:{found['name']}", at=now(), ttl_s=session_ttl_s
        )
        log.info("login: token %s from %s (session %s)", found["name"], client, session.id)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            secret,
            max_age=int(session_ttl_s),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        response.delete_cookie(LEGACY_COOKIE)
        return response

    @api.post("/logout", include_in_schema=False, openapi_extra=max_body(1024))
    async def logout(request: Request) -> Response:
        secret = request.cookies.get(COOKIE)
        if secret:
            at = now()
            session = await ops.find_session(secret, at)
            by = f"token:{session.name}" if session is not None else "anonymous"
            await ops.close_session(secret, by=by, at=at)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        response.delete_cookie(LEGACY_COOKIE)
        return response


def local_path(target: str) -> str:
    """Only same-site paths after login (no open redirect to another host: browsers read `//x`
    and `/\\x` as another host)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
