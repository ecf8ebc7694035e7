"""Who may do what over HTTP: API tokens with roles, and the dashboard's login sessions.

Every request carries a credential: an API token as `Authorization: Bearer <token>` (API clients,
Prometheus), or the `corral_session` cookie that logging in at `/login` sets (the dashboard). The
cookie holds a session secret, never the token: the session is stored server-side, expires
(`session_ttl_s`, 12 hours by default), ends at logout and with its token's revocation
(`corral.store.sessions`). Tokens are made with `corral tokens create` and stored hashed
(`corral.store.tokens`). Roles nest: `viewer` reads, `operator` also decides requests, cancels,
pauses and acknowledges, `admin` also manages tokens and reads the configuration.

Refusals: no credential or an unknown/revoked/expired one is 401 (`WWW-Authenticate: Bearer`; pages
redirect to `/login`), a credential without the role is 403 naming the role needed. The checks run
in `corral.server._gate` before the request's body is read; the `requires` dependency repeats the
role check where the route is declared (and gives the route its `Principal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import Request

from corral.store.ops import Ops
from corral.store.tokens import ROLES, Role

__all__ = [
    "COOKIE",
    "Forbidden",
    "Principal",
    "Requires",
    "TooLarge",
    "TooManyAttempts",
    "Unauthorized",
    "authenticate",
    "requires",
]

COOKIE = "corral_session"
"""The login cookie: a session secret (`crs_...`), HttpOnly, SameSite=Strict."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The token a request acts as, and how it was presented."""

    token_id: str
    name: str
    role: Role
    via: Literal["bearer", "session"] = "bearer"

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"token:{self.name}"


class Unauthorized(Exception):
    """No usable credential (HTTP 401)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Forbidden(Exception):
    """The credential's role is not enough, or a browser request came from another site
    (HTTP 403)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TooLarge(Exception):
    """A request body over the route's limit (HTTP 413)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TooManyAttempts(Exception):
    """Too many failed logins from one client (HTTP 429)."""

    def __init__(self, retry_after_s: float) -> None:
        seconds = max(1, round(retry_after_s))
        super().__init__(f"too many failed logins from this address; try again in {seconds} s")
        self.retry_after_s = seconds


def bearer_of(request: Request) -> str | None:
    """The bearer token of a request, if it sent one."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def authenticate(ops: Ops, request: Request, now: datetime | None = None) -> Principal:
    """The principal of `request`, from its bearer token or its session cookie, at `now`.

    Raises:
        Unauthorized: neither is present, or the one present is unknown, revoked or expired.
    """
    now = now or datetime.now(UTC)
    token = bearer_of(request)
    if token is not None:
        found: dict[str, Any] | None = await ops.authenticate(token, now)
        if found is None:
            raise Unauthorized("the token is unknown, revoked or expired; use a valid one")
        return Principal(found["id"], found["name"], found["role"], "bearer")
    secret = request.cookies.get(COOKIE)
    if not secret:
        raise Unauthorized(
            "this needs an API token: send `Authorization: Bearer <token>` (create one with "
            "`corral tokens create NAME --role ROLE`) or log in at /login"
        )
    session = await ops.find_session(secret, now)
    if session is None:
        raise Unauthorized("the login session expired or was closed; log in again at /login")
    for role in ROLES:
        if role == session.role:
            return Principal(session.token_id, session.name, role, "session")
    raise Unauthorized(f"the session's token has an unknown role {session.role!r}; log in again")


def check_role(principal: Principal, role: Role) -> None:
    """Raises `Forbidden` naming the role needed unless `principal` has `role` or a higher one."""
    needed = ROLES.index(role)
    if ROLES.index(principal.role) < needed:
        raise Forbidden(
            f"token {principal.name!r} has role {principal.role}; this needs {role} "
            f"(or {', '.join(ROLES[needed + 1 :]) or 'nothing higher'})"
        )


class Requires:
    """A FastAPI dependency that admits callers with `role` or a higher one. The gate
    (`corral.server._gate`) reads `role` from a route's dependencies to check it before the
    body is read; here the principal it found is reused."""

    def __init__(self, ops: Ops, role: Role) -> None:
        self.ops = ops
        self.role = role

    async def __call__(self, request: Request) -> Principal:
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None:
            principal = await authenticate(self.ops, request)
        check_role(principal, self.role)
        request.state.principal = principal
        return principal


def requires(ops: Ops, role: Role) -> Requires:
    """A FastAPI dependency that admits tokens with `role` or a higher one."""
    return Requires(ops, role)
