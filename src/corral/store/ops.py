"""Operator state in the run database: human requests, operator controls, API tokens, the audit log.

One class, `Ops`, over the app's `SqlStore`:

- **Human requests** (`corral_human_requests`): the `HumanStore` the core's `HumanDesk` waits
  through, plus listing and deciding. `decide` is the one way a request changes: it checks the
  action is allowed for the request's kind, validates an edited value or an answer against the
  request's JSON schema (`jsonschema`, the reference validator), and records the decision only if
  the request is still pending (a conditional UPDATE), with its audit entry in the same
  transaction, so two people deciding at once cannot both win and nothing executes twice.
- **Controls** (`corral_controls`): an append-only log of operator actions (halt a run, pause an
  agent or a workflow, pause non-critical work, and their reversals). Every process applies new
  rows to its kill switch (`controls_since`), so a `corral cancel` from another shell reaches the
  process running the run within one poll interval.
- **Tokens** (`corral_tokens`): API tokens with a role; only a SHA-256 of each token is stored
  (tokens are 256-bit random, so a fast hash is enough: there is nothing to brute-force).
- **Audit** (`corral.store.audit`): every mutation here appends to the hash chain.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from corral.contracts import JsonValue
from corral.errors import ConflictError, NotFoundError, PayloadError, UsageError
from corral.humans import ACTIONS, STATUS_OF, HumanRequest
from corral.store import audit as chain
from corral.store.sql import SqlStore, _aware, _dump, _load, metadata

__all__ = ["ROLES", "Ops", "Role"]

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
"""Each role can do everything the roles before it can."""

requests = sa.Table(
    "corral_human_requests",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("step_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("workflow", sa.String(200), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("payload", sa.Text),
    sa.Column("schema", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("default_action", sa.String(16)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deadline_at", sa.DateTime(timezone=True)),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("action", sa.String(16)),
    sa.Column("value", sa.Text),
    sa.Column("comment", sa.Text),
)
sa.Index("ix_corral_human_requests_status", requests.c.status, requests.c.created_at)
controls = sa.Table(
    "corral_controls",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("by", sa.String(200), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
tokens = sa.Table(
    "corral_tokens",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("last_used_at", sa.DateTime(timezone=True)),
)
_TOUCH_EVERY = timedelta(minutes=1)
"""`last_used_at` is written at most this often per token (not on every request)."""

CONTROL_SCOPES = {
    "halt": ("run", "agent", "all"),
    "release": ("run", "agent", "all"),
    "pause": ("agent", "workflow", "noncritical"),
    "resume": ("agent", "workflow", "noncritical"),
}
"""Operator actions and what each applies to (`release` lifts a halt, `resume` a pause)."""
TOKEN_PREFIX = "crl_"


@dataclass(frozen=True, slots=True, kw_only=True)
class Control:
    """One operator action from the controls log."""

    seq: int
    action: str
    scope: str
    name: str | None
    reason: str
    by: str
    at: datetime


def _request_row(mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for key in ("payload", "schema", "value"):
        row[key] = _load(row[key])
    for key in ("created_at", "deadline_at", "decided_at"):
        row[key] = _aware(row[key])
    return row


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Ops:
    """Human requests, controls, tokens and the audit log of one database.

    Args:
        store: The app's store (its engine and redactor are used).
        key_file: Where the audit signing key lives (see `corral.store.audit.AuditSigner`).
        checkpoint_every: Sign the chain head every this many audit entries.
    """

    def __init__(
        self,
        store: SqlStore,
        *,
        key_file: str | Path = ".corral/audit.key",
        checkpoint_every: int = 100,
    ) -> None:
        self.store = store
        self._key_file = key_file
        self._signer: chain.AuditSigner | None = None
        self.checkpoint_every = checkpoint_every

    @property
    def signer(self) -> chain.AuditSigner:
        """The checkpoint signing key (loaded, or created, on first use)."""
        if self._signer is None:
            self._signer = chain.AuditSigner.load(self._key_file)
        return self._signer

    def _load_key(self) -> None:
        """Load (or create) the signing key on the caller's side, so a bad key is a clear
        `ConfigError` there rather than a failure inside a write transaction."""
        self.signer  # noqa: B018 - the property loads it

    def _append(
        self,
        conn: sa.Connection,
        at: datetime,
        actor: str,
        action: str,
        subject: str,
        run_id: str | None,
        details: dict[str, JsonValue],
    ) -> int:
        text = self.store.redactor.text(chain.canonical(details))
        return chain.append(
            conn,
            at=at,
            actor=actor,
            action=action,
            subject=subject,
            run_id=run_id,
            details=text,
            signer=self.signer,
            checkpoint_every=self.checkpoint_every,
        )

    async def audit(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        subject: str,
        run_id: str | None = None,
        details: dict[str, JsonValue] | None = None,
    ) -> int:
        """Append one audit entry (secrets redacted, nothing truncated); returns its number."""
        self._load_key()

        def write() -> int:
            with self.store.engine.begin() as conn:
                return self._append(conn, at, actor, action, subject, run_id, details or {})

        return await self.store._call(write)

    # -- human requests ---------------------------------------------------------------------------

    async def open_request(self, request: HumanRequest) -> dict[str, Any]:
        values = {
            "id": request.id,
            "run_id": request.run_id,
            "step_id": request.step_id,
            "kind": request.kind,
            "workflow": request.workflow,
            "subject": request.subject,
            "title": request.title,
            "payload": self.store.redactor.dump(request.payload),
            "schema": _dump(request.schema),
            "status": "pending",
            "default_action": request.default,
            "created_at": request.created_at,
            "deadline_at": request.deadline_at,
        }

        def write() -> dict[str, Any]:
            with self.store.engine.begin() as conn:
                stmt = self.store._insert(requests).values(**values)
                conn.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
                row = conn.execute(sa.select(requests).where(requests.c.id == request.id)).one()
                return _request_row(row._mapping)

        return await self.store._call(write)

    async def get_request(self, request_id: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            with self.store.engine.connect() as conn:
                row = conn.execute(sa.select(requests).where(requests.c.id == request_id)).first()
                return None if row is None else _request_row(row._mapping)

        return await self.store._call(read)

    async def expire_request(self, request_id: str, at: datetime) -> dict[str, Any]:
        def write() -> dict[str, Any]:
            with self.store.engine.begin() as conn:
                row = conn.execute(sa.select(requests).where(requests.c.id == request_id)).one()
                if row.status == "pending":
                    conn.execute(
                        requests.update()
                        .where(requests.c.id == request_id, requests.c.status == "pending")
                        .values(
                            status="timed_out",
                            action=row.default_action,
                            decided_at=at,
                            decided_by="timeout",
                        )
                    )
                    self._append(
                        conn,
                        at,
                        "timeout",
                        f"human.{row.default_action}",
                        request_id,
                        row.run_id,
                        {"kind": row.kind, "subject": row.subject, "timed_out": True},
                    )
                    row = conn.execute(sa.select(requests).where(requests.c.id == request_id)).one()
                return _request_row(row._mapping)

        self._load_key()
        return await self.store._call(write)

    async def decided_among(self, request_ids: list[str]) -> list[str]:
        def read() -> list[str]:
            with self.store.engine.connect() as conn:
                found = conn.execute(
                    sa.select(requests.c.id).where(
                        requests.c.id.in_(request_ids), requests.c.status != "pending"
                    )
                )
                return [r[0] for r in found]

        return await self.store._call(read)

    async def human_wait_s(self, run_id: str, now: datetime) -> float:
        """Seconds `run_id` has spent waiting for approvals and escalations (open ones to `now`)."""

        def read() -> float:
            with self.store.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(requests.c.created_at, requests.c.decided_at).where(
                        requests.c.run_id == run_id, requests.c.kind != "review"
                    )
                ).all()
            total = 0.0
            for created, decided in rows:
                end = _aware(decided) or now
                total += max((end - _aware(created)).total_seconds(), 0.0)  # type: ignore[operator]
            return total

        return await self.store._call(read)

    async def list_requests(
        self,
        *,
        kind: str | None = None,
        status: str | None = "pending",
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Requests, newest first (`status=None`: any status)."""
        if kind is not None and kind not in ACTIONS:
            raise UsageError(f"unknown request kind {kind!r}; use one of {sorted(ACTIONS)}")

        def read() -> list[dict[str, Any]]:
            query = sa.select(requests).order_by(requests.c.created_at.desc()).limit(limit)
            if kind is not None:
                query = query.where(requests.c.kind == kind)
            if status is not None:
                query = query.where(requests.c.status == status)
            if run_id is not None:
                query = query.where(requests.c.run_id == run_id)
            with self.store.engine.connect() as conn:
                return [_request_row(r._mapping) for r in conn.execute(query)]

        return await self.store._call(read)

    async def decide(
        self,
        request_id: str,
        action: str,
        *,
        by: str,
        at: datetime,
        value: JsonValue = None,
        comment: str = "",
    ) -> dict[str, Any]:
        """Record a human's decision; returns the decided row.

        Raises:
            NotFoundError: no such request.
            UsageError: the action does not apply to this kind of request.
            PayloadError: an edit or answer that does not fit the request's schema, or feedback
                without a score in 1..5.
            ConflictError: the request was already decided (by someone else, or the timeout).
        """
        row = await self.get_request(request_id)
        if row is None:
            raise NotFoundError("human request", request_id)
        allowed = ACTIONS[row["kind"]]
        if action not in allowed:
            raise UsageError(
                f"cannot {action!r} a {row['kind']} request; use one of {list(allowed)}"
            )
        value = _checked_value(row, action, value)
        self._load_key()

        def write() -> dict[str, Any]:
            with self.store.engine.begin() as conn:
                done = conn.execute(
                    requests.update()
                    .where(requests.c.id == request_id, requests.c.status == "pending")
                    .values(
                        status=STATUS_OF[action],
                        action=action,
                        value=_dump(value),
                        comment=comment,
                        decided_at=at,
                        decided_by=by,
                    )
                )
                current = conn.execute(sa.select(requests).where(requests.c.id == request_id)).one()
                if not done.rowcount:
                    raise ConflictError(
                        f"request {request_id} is already {current.status} (by "
                        f"{current.decided_by} at {_aware(current.decided_at)}); nothing changed"
                    )
                self._append(
                    conn,
                    at,
                    by,
                    f"human.{action}",
                    request_id,
                    row["run_id"],
                    {
                        "kind": row["kind"],
                        "subject": row["subject"],
                        "value": value,
                        "comment": comment,
                    },
                )
                return _request_row(current._mapping)

        return await self.store._call(write)

    async def feedback(self, *, since: datetime | None = None) -> list[dict[str, Any]]:
        """Review feedback per agent (see `corral.store.queries.feedback`)."""
        from corral.store import queries

        return await self.store.query(queries.feedback, since)

    # -- controls ---------------------------------------------------------------------------------

    async def add_control(
        self, action: str, scope: str, name: str | None, *, by: str, at: datetime, reason: str = ""
    ) -> Control:
        """Append an operator action to the controls log (and the audit log).

        Raises:
            UsageError: an unknown action or scope, or a scope that needs a name without one.
        """
        if action not in CONTROL_SCOPES:
            raise UsageError(
                f"unknown control action {action!r}; use one of {list(CONTROL_SCOPES)}"
            )
        if scope not in CONTROL_SCOPES[action]:
            raise UsageError(
                f"unknown control scope {scope!r} for {action!r}; use one of "
                f"{list(CONTROL_SCOPES[action])}"
            )
        if scope in ("run", "agent", "workflow") and not name:
            raise UsageError(f"a {scope} control needs the {scope}'s name")
        if scope in ("all", "noncritical"):
            name = None
        self._load_key()

        def write() -> int:
            with self.store.engine.begin() as conn:
                seq = conn.execute(
                    controls.insert()
                    .values(action=action, scope=scope, name=name, reason=reason, by=by, at=at)
                    .returning(controls.c.seq)
                ).scalar_one()
                self._append(
                    conn,
                    at,
                    by,
                    f"operator.{action}",
                    f"{scope}:{name}" if name else scope,
                    name if scope == "run" else None,
                    {"reason": reason},
                )
                return int(seq)

        seq = await self.store._call(write)
        return Control(seq=seq, action=action, scope=scope, name=name, reason=reason, by=by, at=at)

    async def controls_since(self, seq: int) -> list[Control]:
        """Operator actions after `seq`, oldest first."""

        def read() -> list[Control]:
            with self.store.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(controls).where(controls.c.seq > seq).order_by(controls.c.seq)
                )
                return [Control(**{**r._mapping, "at": _aware(r.at)}) for r in rows]

        return await self.store._call(read)

    # -- tokens -----------------------------------------------------------------------------------

    async def create_token(
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
        self._load_key()

        def write() -> None:
            with self.store.engine.begin() as conn:
                conn.execute(tokens.insert().values(**row))
                self._append(
                    conn,
                    at,
                    by,
                    "token.create",
                    f"token:{token_id}",
                    None,
                    {"name": name, "role": role},
                )

        await self.store._call(write)
        public = {k: v for k, v in row.items() if k != "hash"}
        return token, {**public, "revoked_at": None, "last_used_at": None}

    async def list_tokens(self) -> list[dict[str, Any]]:
        """Every token (without hashes), newest first."""

        def read() -> list[dict[str, Any]]:
            cols = [c for c in tokens.c if c.name != "hash"]
            with self.store.engine.connect() as conn:
                rows = conn.execute(sa.select(*cols).order_by(tokens.c.created_at.desc()))
                times = ("created_at", "revoked_at", "expires_at", "last_used_at")
                return [{**r._mapping, **{t: _aware(r._mapping[t]) for t in times}} for r in rows]

        return await self.store._call(read)

    async def revoke_token(self, token_id: str, *, by: str, at: datetime) -> None:
        """Revoke a token.

        Raises:
            NotFoundError: no such token.
            ConflictError: it is already revoked.
        """
        self._load_key()

        def write() -> None:
            with self.store.engine.begin() as conn:
                row = conn.execute(sa.select(tokens).where(tokens.c.id == token_id)).first()
                if row is None:
                    raise NotFoundError("token", token_id)
                if row.revoked_at is not None:
                    raise ConflictError(f"token {token_id} is already revoked")
                conn.execute(tokens.update().where(tokens.c.id == token_id).values(revoked_at=at))
                self._append(
                    conn, at, by, "token.revoke", f"token:{token_id}", None, {"name": row.name}
                )

        await self.store._call(write)

    async def authenticate(self, token: str, now: datetime) -> dict[str, Any] | None:
        """The live token row matching `token` (`id`, `name`, `role`), or None when it is
        unknown, revoked or expired. Records when it was last used (at most once a minute)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = _hash_token(token)

        def check() -> dict[str, Any] | None:
            with self.store.engine.connect() as conn:
                row = conn.execute(
                    sa.select(
                        tokens.c.id,
                        tokens.c.name,
                        tokens.c.role,
                        tokens.c.expires_at,
                        tokens.c.last_used_at,
                    ).where(tokens.c.hash == digest, tokens.c.revoked_at.is_(None))
                ).first()
            if row is None:
                return None
            expires = _aware(row.expires_at)
            if expires is not None and expires <= now:
                return None
            used = _aware(row.last_used_at)
            if used is None or now - used >= _TOUCH_EVERY:
                with self.store.engine.begin() as conn:
                    conn.execute(
                        tokens.update().where(tokens.c.id == row.id).values(last_used_at=now)
                    )
            return {"id": row.id, "name": row.name, "role": row.role}

        return await self.store._call(check)

    async def has_tokens(self, now: datetime | None = None) -> bool:
        """Whether any live token exists (unrevoked, and unexpired at `now` when given)."""

        def read() -> bool:
            query = sa.select(tokens.c.id, tokens.c.expires_at).where(tokens.c.revoked_at.is_(None))
            with self.store.engine.connect() as conn:
                for _, expires in conn.execute(query):
                    at = _aware(expires)
                    if now is None or at is None or at > now:
                        return True
            return False

        return await self.store._call(read)

    # -- audit ------------------------------------------------------------------------------------

    async def audit_entries(
        self, *, run_id: str | None = None, action: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The newest audit entries (details parsed), newest first."""

        def read() -> list[dict[str, Any]]:
            query = sa.select(chain.audit).order_by(chain.audit.c.seq.desc()).limit(limit)
            if run_id is not None:
                query = query.where(chain.audit.c.run_id == run_id)
            if action is not None:
                query = query.where(chain.audit.c.action == action)
            with self.store.engine.connect() as conn:
                return [{**r._mapping, "details": _load(r.details)} for r in conn.execute(query)]

        return await self.store._call(read)

    async def checkpoint(self, at: datetime) -> dict[str, Any] | None:
        """Sign the chain head now (if it is not signed yet); returns the checkpoint."""
        signer = self.signer

        def write() -> dict[str, Any] | None:
            with self.store.engine.begin() as conn:
                return chain.checkpoint(conn, signer, at)

        return await self.store._call(write)

    async def checkpoints(self) -> list[dict[str, Any]]:
        """Every signed checkpoint, oldest first (what `corral audit export` writes)."""

        def read() -> list[dict[str, Any]]:
            with self.store.engine.connect() as conn:
                rows = conn.execute(sa.select(chain.checkpoints).order_by(chain.checkpoints.c.seq))
                return [dict(r._mapping) for r in rows]

        return await self.store._call(read)

    async def verify(
        self,
        *,
        exported: Sequence[dict[str, Any]] = (),
        trusted_keys: set[str] | None = None,
    ) -> tuple[int, list[chain.Problem]]:
        """Check the whole chain against its checkpoints (and exported ones).

        Args:
            exported: Checkpoints kept outside the database (`corral audit export`).
            trusted_keys: Public keys to trust (default: this app's signing key).
        """
        keys = trusted_keys if trusted_keys is not None else {self.signer.public_key}

        def read() -> tuple[int, list[chain.Problem]]:
            with self.store.engine.connect() as conn:
                points = [dict(r._mapping) for r in conn.execute(sa.select(chain.checkpoints))]
                rows = conn.execution_options(yield_per=1000).execute(
                    sa.select(chain.audit).order_by(chain.audit.c.seq)
                )
                return chain.verify_chain(rows, [*points, *exported], keys)

        return await self.store._call(read)


def _checked_value(row: dict[str, Any], action: str, value: JsonValue) -> JsonValue:
    if action == "review":
        if not isinstance(value, dict):
            raise PayloadError("feedback needs an object: {score: 1..5, label?, comment?}")
        score = value.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 1 <= score <= 5:
            raise PayloadError(f"feedback score must be a number from 1 to 5, got {score!r}")
        label = value.get("label")
        if label is not None and not isinstance(label, str):
            raise PayloadError(f"feedback label must be text, got {label!r}")
        return {"score": score, "label": label}
    if action not in ("edit", "answer"):
        if value is not None:
            raise PayloadError(f"{action!r} takes no value; use 'edit' to change the arguments")
        return None
    schema = row.get("schema")
    if value is None:
        raise PayloadError(f"{action!r} needs a value that fits the request's schema")
    if schema is None:
        raise UsageError(f"request {row['id']} has no schema, so it cannot be edited or answered")
    try:
        validator = Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    except SchemaError as exc:  # pragma: no cover - schemas come from Pydantic
        raise UsageError(f"request {row['id']} has an unusable schema: {exc.message}") from exc
    if errors:
        details = [
            {"loc": ".".join(str(p) for p in e.absolute_path), "msg": e.message} for e in errors
        ]
        summary = "; ".join(f"{d['loc'] or '<root>'}: {d['msg']}" for d in details)
        raise PayloadError(
            f"the {'edited arguments' if action == 'edit' else 'answer'} do not fit the schema of "
            f"{row['subject']!r}: {summary}",
            errors=details,
        )
    return value
