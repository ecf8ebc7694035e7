"""Dashboard login sessions in the run database (`corral_sessions`).

Logging in at `/login` with an API token opens a session: the browser's cookie holds a new random
secret, never the long-lived token, and only the secret's SHA-256 is stored. A session acts as its
token (same name and role) until the first of: its expiry, logout (`revoke`), or the token's own
revocation or expiry, so revoking a token also logs out every browser that used it. Opening and
closing a session is audited in the same transaction; expired and closed sessions are deleted
when the next one opens.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from corral.errors import UsageError
from corral.store._rows import aware
from corral.store.audit import AuditLog
from corral.store.schema import sessions, tokens
from corral.store.sql import SqlStore

__all__ = ["SESSION_PREFIX", "Session", "Sessions"]

SESSION_PREFIX = "crs_"
"""Session secrets start with this (API tokens with `crl_`), so neither is taken for the other."""


def _digest(secret: str) -> str:
    # A 256-bit random secret: a fast hash is enough, there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """A live session and the token it acts as."""

    id: str
    token_id: str
    name: str
    """The token's name."""
    role: str
    """The token's role."""
    expires_at: datetime


class Sessions:
    """The login sessions of one database."""

    def __init__(self, store: SqlStore, log: AuditLog) -> None:
        self._store = store
        self._log = log

    async def open(
        self, token_id: str, *, by: str, at: datetime, ttl_s: float
    ) -> tuple[str, Session]:
        """A new session for the (already authenticated) token `token_id`; returns the secret
        for the cookie (shown once, only its hash is stored) and the session.

        Raises:
            UsageError: a non-positive `ttl_s`.
        """
        if not ttl_s > 0:
            raise UsageError(f"a session's lifetime must be positive, got {ttl_s!r} s")
        session_id = secrets.token_hex(8)
        secret = f"{SESSION_PREFIX}{secrets.token_urlsafe(32)}"
        expires_at = at + timedelta(seconds=ttl_s)
        await self._log.load_key()

        def write(conn: sa.Connection) -> Session:
            row = conn.execute(
                sa.select(tokens.c.name, tokens.c.role).where(tokens.c.id == token_id)
            ).one()
            conn.execute(
                sessions.delete().where(
                    sa.or_(sessions.c.revoked_at.is_not(None), sessions.c.expires_at <= at)
                )
            )
            conn.execute(
                sessions.insert().values(
                    id=session_id,
                    hash=_digest(secret),
                    token_id=token_id,
                    created_at=at,
                    expires_at=expires_at,
                )
            )
            self._log.append_in(
                conn,
                at=at,
                actor=by,
                action="session.open",
                subject=f"session:{session_id}",
                run_id=None,
                details={"token": token_id, "expires_at": expires_at.isoformat()},
            )
            return Session(
                id=session_id,
                token_id=token_id,
                name=row.name,
                role=row.role,
                expires_at=expires_at,
            )

        return secret, await self._store.transact(write)

    async def find(self, secret: str, now: datetime) -> Session | None:
        """The live session whose secret is `secret`, or None when it is unknown, closed or
        expired, or its token is revoked or expired."""
        if not secret.startswith(SESSION_PREFIX):
            return None
        digest = _digest(secret)

        def read(conn: sa.Connection) -> dict[str, Any] | None:
            query = (
                sa.select(
                    sessions.c.id,
                    sessions.c.token_id,
                    tokens.c.name,
                    tokens.c.role,
                    sessions.c.expires_at,
                    tokens.c.expires_at.label("token_expires_at"),
                )
                .join(tokens, tokens.c.id == sessions.c.token_id)
                .where(
                    sessions.c.hash == digest,
                    sessions.c.revoked_at.is_(None),
                    tokens.c.revoked_at.is_(None),
                )
            )
            found = conn.execute(query).first()
            return None if found is None else dict(found._mapping)

        row = await self._store.query(read)
        if row is None:
            return None
        expires, token_expires = aware(row["expires_at"]), aware(row["token_expires_at"])
        if (
            expires is None
            or expires <= now
            or (token_expires is not None and token_expires <= now)
        ):
            return None
        return Session(
            id=row["id"],
            token_id=row["token_id"],
            name=row["name"],
            role=row["role"],
            expires_at=expires,
        )

    async def close(self, secret: str, *, by: str, at: datetime) -> bool:
        """End the session whose secret is `secret` (logout); False when no live one matched."""
        if not secret.startswith(SESSION_PREFIX):
            return False
        digest = _digest(secret)
        await self._log.load_key()

        def write(conn: sa.Connection) -> bool:
            found = conn.execute(
                sa.select(sessions.c.id).where(
                    sessions.c.hash == digest, sessions.c.revoked_at.is_(None)
                )
            ).first()
            if found is None:
                return False
            conn.execute(sessions.update().where(sessions.c.id == found.id).values(revoked_at=at))
            self._log.append_in(
                conn,
                at=at,
                actor=by,
                action="session.close",
                subject=f"session:{found.id}",
                run_id=None,
                details={},
            )
            return True

        return await self._store.transact(write)
