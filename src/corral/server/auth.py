"""Who may do what over HTTP: API tokens with roles, and the dashboard's login.

Every request carries a token, as `Authorization: Bearer <token>` (API clients, Prometheus) or the
`corral_token` cookie the login page sets (the dashboard; HttpOnly, SameSite=Strict, so another
site cannot make the browser send it). Tokens are made with `corral tokens create` and stored
hashed (`corral.store.tokens`). Roles nest: `viewer` reads, `operator` also decides requests,
cancels, pauses and acknowledges, `admin` also manages tokens and reads the configuration.

Refusals: no token or an unknown/revoked one is 401 (`WWW-Authenticate: Bearer`; pages redirect to
`/login`), a token without the role is 403 naming the role needed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from corral.store.ops import Ops
from corral.store.tokens import ROLES, Role

__all__ = ["COOKIE", "Forbidden", "Principal", "Unauthorized", "requires"]

COOKIE = "corral_token"


@dataclass(frozen=True, slots=True)
class Principal:
    """The token a request came with."""

    token_id: str
    name: str
    role: Role

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"token:{self.name}"


class Unauthorized(Exception):
    """No usable token (HTTP 401)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Forbidden(Exception):
    """The token's role is not enough (HTTP 403)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def token_of(request: Request) -> str | None:
    """The bearer token or the login cookie of a request."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE) or None


def requires(ops: Ops, role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency that admits tokens with `role` or a higher one."""
    needed = ROLES.index(role)

    async def check(request: Request) -> Principal:
        token = token_of(request)
        if token is None:
            raise Unauthorized(
                "this needs an API token: send `Authorization: Bearer <token>` (create one with "
                "`corral tokens create NAME --role ROLE`) or log in at /login"
            )
        found: dict[str, Any] | None = await ops.authenticate(token, datetime.now(UTC))
        if found is None:
            raise Unauthorized(
                "the token is unknown, revoked or expired; log in again with a valid one"
            )
        principal = Principal(found["id"], found["name"], found["role"])
        if ROLES.index(principal.role) < needed:
            raise Forbidden(
                f"token {principal.name!r} has role {principal.role}; this needs {role} "
                f"(or {', '.join(ROLES[needed + 1 :]) or 'nothing higher'})"
            )
        request.state.principal = principal
        return principal

    return check
