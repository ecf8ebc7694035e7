"""API tokens in the run database (`corral_tokens`): each has a role; only a SHA-256 of each
token is stored (tokens are 256-bit random, so a fast hash is enough: there is nothing to
brute-force). Creating and revoking a token is audited in the same transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from corral.errors import ConflictError, NotFoundError, UsageError
from corral.store._rows import aware
from corral.store.audit import AuditLog
from corral.store.schema import tokens
from corral.store.sql import SqlStore

__all__ = ["ROLES", "TOKEN_PREFIX", "Role", "Tokens"]

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
"""Each role can do everything the roles before it can."""
TOKEN_PREFIX = "crl_"
_TOUCH_EVERY = timedelta(minutes=1)
"""`last_used_at` is written at most this often per token (not on every request)."""


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The API tokens of one database."""

    def __init__(self, store: SqlStore, log: AuditLog) -> None:
        self._store = store
        self._log = log

    async def create(
        self,
        name: str,
        role: str,
        *,
        by: str,
        at: datetime,
        expires_in_s: float | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A new API token; returns (the token, shown once; its row without the hash).

        Args:
            expires_in_s: The token stops working this long after `at` (None: until revoked).

        Raises:
            UsageError: an unknown role, an empty name or a non-positive lifetime.
        """
        if role not in ROLES:
            raise UsageError(f"unknown role {role!r}; use one of {list(ROLES)}")
        if not name.strip():
            raise UsageError("a token needs a name (who or what uses it)")
        if expires_in_s is not None and not expires_in_s > 0:
            raise UsageError(f"a token's lifetime must be positive, got {expires_in_s!r} s")
        expires_at = at + timedelta(seconds=expires_in_s) if expires_in_s is not None else None
        token_id = secrets.token_hex(4)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        row = {
            "id": token_id,
            "name": name,
            "role": role,
            "hash": _hash_token(token),
            "created_at": at,
            "created_by": by,
            "expires_at": expires_at,
        }
        await self._log.load_key()

        def write(conn: sa.Connection) -> None:
            conn.execute(tokens.insert().values(**row))
            self._log.append_in(
                conn,
                at=at,
                actor=by,
                action="token.create",
                subject=f"token:{token_id}",
                run_id=None,
                details={"name": name, "role": role},
            )

        await self._store.transact(write)
        public = {k: v for k, v in row.items() if k != "hash"}
        return token, {**public, "revoked_at": None, "last_used_at": None}

    async def list_all(self) -> list[dict[str, Any]]:
        """Every token (without hashes), newest first."""

        def read(conn: sa.Connection) -> list[dict[str, Any]]:
            cols = [c for c in tokens.c if c.name != "hash"]
            rows = conn.execute(sa.select(*cols).order_by(tokens.c.created_at.desc()))
            times = ("created_at", "revoked_at", "expires_at", "last_used_at")
            return [{**r._mapping, **{t: aware(r._mapping[t]) for t in times}} for r in rows]

        return await self._store.query(read)

    async def revoke(self, token_id: str, *, by: str, at: datetime) -> None:
        """Revoke a token.

        Raises:
            NotFoundError: no such token.
            ConflictError: it is already revoked.
        """
        await self._log.load_key()

        def write(conn: sa.Connection) -> None:
            row = conn.execute(sa.select(tokens).where(tokens.c.id == token_id)).first()
            if row is None:
                raise NotFoundError("token", token_id)
            if row.revoked_at is not None:
                raise ConflictError(f"token {token_id} is already revoked")
            conn.execute(tokens.update().where(tokens.c.id == token_id).values(revoked_at=at))
            self._log.append_in(
                conn,
                at=at,
                actor=by,
                action="token.revoke",
                subject=f"token:{token_id}",
                run_id=None,
                details={"name": row.name},
            )

        await self._store.transact(write)

    async def authenticate(self, token: str, now: datetime) -> dict[str, Any] | None:
        """The live token row matching `token` (`id`, `name`, `role`), or None when it is
        unknown, revoked or expired. Records when it was last used (at most once a minute)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = _hash_token(token)

        def find(
            conn: sa.Connection,
        ) -> tuple[str, str, str, datetime | None, datetime | None] | None:
            row = conn.execute(
                sa.select(
                    tokens.c.id,
                    tokens.c.name,
                    tokens.c.role,
                    tokens.c.expires_at,
                    tokens.c.last_used_at,
                ).where(tokens.c.hash == digest, tokens.c.revoked_at.is_(None))
            ).first()
            return None if row is None else tuple(row)

        found = await self._store.query(find)
        if found is None:
            return None
        token_id, name, role, expires_at, last_used_at = found
        expires = aware(expires_at)
        if expires is not None and expires <= now:
            return None
        used = aware(last_used_at)
        if used is None or now - used >= _TOUCH_EVERY:

            def touch(conn: sa.Connection) -> None:
                conn.execute(
                    tokens.update().where(tokens.c.id == token_id).values(last_used_at=now)
                )

            await self._store.transact(touch)
        return {"id": token_id, "name": name, "role": role}

    async def any_live(self, now: datetime | None = None) -> bool:
        """Whether any live token exists (unrevoked, and unexpired at `now` when given)."""

        def read(conn: sa.Connection) -> bool:
            query = sa.select(tokens.c.id, tokens.c.expires_at).where(tokens.c.revoked_at.is_(None))
            for _, expires in conn.execute(query):
                at = aware(expires)
                if now is None or at is None or at > now:
                    return True
            return False

        return await self._store.query(read)
