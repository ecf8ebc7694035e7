"""The door every request to `corral serve` passes before FastAPI reads it (a pure ASGI middleware).

In this order, each refusal answered by the dashboard's one error table:

1. **Cross-site browser requests** (a `POST`, `PUT`, `PATCH` or `DELETE` without a bearer token)
   are refused with 403 unless the browser says they came from the dashboard's own origin:
   `Sec-Fetch-Site: same-origin`, or, from browsers that do not send it, an `Origin` whose host and
   port are the request's `Host`. A cookie-carrying request with neither header is refused too (a
   non-browser client sends a bearer token instead). SameSite=Strict alone lets a page on another
   port of the same host through: ports do not make another site.
2. **Authentication and role**, from the route's `Requires` dependency: 401 or 403 before a byte
   of the body is read, so an anonymous client cannot make the server read or parse anything.
3. **The body**, read here up to the route's limit (`max_body`; 32 KiB unless the route declares
   more, 4 KiB for the login form): a `Content-Length` over it, or a body that grows past it, is a
   413 without reading the rest. The body is then handed to FastAPI from memory.

Every response gets the security headers (`SECURITY_HEADERS`: a Content-Security-Policy allowing
only the dashboard's own scripts and no framing, `nosniff`, `Referrer-Policy`), and everything but
the static assets `Cache-Control: no-store`, so a shared browser's cache never holds a page that
needed a login.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.errors import StateError
from corral.server.auth import (
    COOKIE,
    Forbidden,
    Principal,
    Requires,
    TooLarge,
    Unauthorized,
    bearer_of,
    check_role,
)
from corral.store.tokens import ROLES, Role

__all__ = ["DEFAULT_MAX_BODY", "SECURITY_HEADERS", "Gate", "max_body"]

DEFAULT_MAX_BODY = 32 * 1024
"""Bytes of body a route takes unless it declares its own limit with `max_body`."""
_LIMIT_KEY = "x-max-body-bytes"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        # The run page's waterfall and the cost bars are sized with style attributes.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", _CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)
"""Set on every response (unless the route set its own value)."""


def max_body(limit: int) -> dict[str, Any]:
    """`openapi_extra` for a route that takes a body larger (or smaller) than the default; the
    limit is also published in the OpenAPI spec, so clients can see it."""
    return {_LIMIT_KEY: limit}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Rule:
    role: Role | None
    """The role a route needs (None: anyone may call it)."""
    max_body: int
    static: bool = False
    """A static asset: cacheable, never needs a login."""


_UNKNOWN = _Rule(role="viewer", max_body=DEFAULT_MAX_BODY)
"""A path no route serves still needs a login (404s are not handed to anonymous probes)."""


class _Disconnected(Exception):
    """The client went away while sending its body."""


class Gate:
    """The ASGI middleware described in the module docstring.

    Args:
        app: The application behind the gate.
        router: Where the routes (and their rules) are looked up, at request time, so routes
            added after the gate still get theirs.
        authenticate: The request's principal, or raises `Unauthorized`.
        refuse: The response for a refusal (`Unauthorized`, `Forbidden`, `TooLarge`,
            `StateError`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        router: Router,
        authenticate: Callable[[Request], Awaitable[Principal]],
        refuse: Callable[[Request, Exception], Awaitable[Response]],
    ) -> None:
        self.app = app
        self._router = router
        self._authenticate = authenticate
        self._refuse = refuse
        self._rules: dict[int, _Rule] = {}
        """Each route's rule, by the route's `id` (routes live as long as the app; FastAPI's
        routes are not hashable)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self._rule(scope)
        send = _with_headers(send, cacheable=rule.static)
        request = Request(scope)
        try:
            if scope["method"] not in _SAFE_METHODS and bearer_of(request) is None:
                _same_origin(request)
            if rule.role is not None:
                principal = await self._authenticate(request)
                check_role(principal, rule.role)
                scope.setdefault("state", {})["principal"] = principal
            body = await _read_body(request, receive, rule.max_body)
        except (Unauthorized, Forbidden, TooLarge, StateError) as exc:
            response = await self._refuse(request, exc)
            await response(scope, receive, send)
            return
        except _Disconnected:
            return
        await self.app(scope, _replay(body, receive), send)

    def _rule(self, scope: Scope) -> _Rule:
        partial: BaseRoute | None = None
        for route in self._router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return self._rule_of(route)
            if match is Match.PARTIAL and partial is None:
                partial = route  # the path exists, the method does not: still check first
        return self._rule_of(partial) if partial is not None else _UNKNOWN

    def _rule_of(self, route: BaseRoute) -> _Rule:
        rule = self._rules.get(id(route))
        if rule is None:
            rule = self._rules[id(route)] = _rule_of(route)
        return rule


def _rule_of(route: BaseRoute) -> _Rule:
    if isinstance(route, Mount):
        return _Rule(role=None, max_body=0, static=True)
    if not isinstance(route, APIRoute):
        return _UNKNOWN
    roles = sorted(set(_roles(route.dependant)), key=ROLES.index)
    limit = (route.openapi_extra or {}).get(_LIMIT_KEY, DEFAULT_MAX_BODY)
    return _Rule(role=roles[-1] if roles else None, max_body=int(limit))


def _roles(dependant: Dependant) -> Iterator[Role]:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, Requires):
            yield dependency.call.role
        yield from _roles(dependency)


def _same_origin(request: Request) -> None:
    """Raises `Forbidden` unless the browser says the request came from this origin."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site in ("same-origin", "none"):  # `none`: the user typed or bookmarked it
            return
        raise Forbidden(
            f"refused a {site} request: a page on another origin cannot change anything here "
            "(use the dashboard itself, or send `Authorization: Bearer <token>` from a script)"
        )
    origin = request.headers.get("origin")
    if origin is None:
        if COOKIE in request.cookies:
            raise Forbidden(
                "refused a request with a login cookie but neither `Origin` nor "
                "`Sec-Fetch-Site`: browsers send one; scripts send `Authorization: Bearer <token>`"
            )
        return
    if not _is_host(origin, request.headers.get("host", "")):
        raise Forbidden(
            f"refused a request from origin {origin!r}: a page on another origin cannot change "
            "anything here (use the dashboard itself, or send `Authorization: Bearer <token>`)"
        )


def _is_host(origin: str, host: str) -> bool:
    """Whether `origin` (scheme://host[:port]) names the same host and port as `Host`."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    default = 443 if parts.scheme == "https" else 80
    served = urlsplit(f"//{host}")
    try:
        return (parts.hostname, parts.port or default) == (served.hostname, served.port or default)
    except ValueError:  # a port that is not a number
        return False


async def _read_body(request: Request, receive: Receive, limit: int) -> bytes:
    """The whole body, or `TooLarge` as soon as it is known to exceed `limit` bytes."""
    where = f"{request.method} {request.url.path}"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(
            f"the request body is {int(declared):,} bytes; {where} takes at most {limit:,} bytes"
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body is over the {limit:,} bytes {where} takes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read, then the client's own messages
    (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _with_headers(send: Send, *, cacheable: bool) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for name, value in SECURITY_HEADERS:
                headers.setdefault(name, value)
            if not cacheable:
                headers["cache-control"] = "no-store"
        await send(message)

    return send_with_headers
