"""Human requests in the run database (`corral_human_requests`): the `HumanStore` the core's
`HumanDesk` waits through, plus listing and deciding.

A request's payload is stored in full (secrets redacted, never cut to the trace limit): an approver
must see every byte of what approving will run, and an edit starts from all of it.

`decide` is the one way a request changes: it checks the action is allowed for the request's kind,
applies an edit given as a patch (`patch=True`: a JSON merge patch, RFC 7386, over the proposed
value), validates an edited value or an answer against the request's JSON schema (`jsonschema`, the
reference validator), and records the decision only if the request is still pending (a conditional
UPDATE), with its audit entry in the same transaction, so two people deciding at once cannot both
win and nothing executes twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from corral.contracts import JsonValue, RunId
from corral.errors import ConflictError, NotFoundError, PayloadError, UsageError
from corral.humans import ACTIONS, STATUS_OF, HumanRequest, merge_patch, proposed_value
from corral.observe.redact import REDACTED
from corral.store import queries
from corral.store._rows import aware, dump, load
from corral.store.audit import AuditLog
from corral.store.schema import human_requests
from corral.store.sql import SqlStore

__all__ = ["HumanRequests"]


class HumanRequests:
    """The human requests of one database (a `corral.humans.HumanStore`); every decision is
    audited through `log`."""

    def __init__(self, store: SqlStore, log: AuditLog) -> None:
        self._store = store
        self._log = log

    async def open_request(self, request: HumanRequest) -> dict[str, Any]:
        """Store a new pending request (a second open of the same id keeps the first); returns
        its row."""
        values = {
            "id": request.id,
            "run_id": request.run_id,
            "step_id": request.step_id,
            "kind": request.kind,
            "workflow": request.workflow,
            "subject": request.subject,
            "title": self._store.redactor.text(request.title),
            # Not `redactor.dump`: it cuts long values to the trace limit, and the approver would
            # see a preview while approving ran the hidden tail.
            "payload": _full_text(self._store.redactor.text, request.payload),
            "schema": dump(request.schema),
            "status": "pending",
            "default_action": request.default,
            "created_at": request.created_at,
            "deadline_at": request.deadline_at,
        }

        def write(conn: sa.Connection) -> dict[str, Any]:
            stmt = self._store.insert(human_requests).values(**values)
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
            row = conn.execute(
                sa.select(human_requests).where(human_requests.c.id == request.id)
            ).one()
            return _request_row(row._mapping)

        return await self._store.transact(write)

    async def get_request(self, request_id: str) -> dict[str, Any] | None:
        """One request's row, or None."""

        def read(conn: sa.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                sa.select(human_requests).where(human_requests.c.id == request_id)
            ).first()
            return None if row is None else _request_row(row._mapping)

        return await self._store.query(read)

    async def expire_request(self, request_id: str, at: datetime) -> dict[str, Any]:
        """Apply the default action of a request whose deadline passed, unless someone decided it
        first (audited as decided by `timeout`); returns its row as it now stands."""

        def write(conn: sa.Connection) -> dict[str, Any]:
            row = conn.execute(
                sa.select(human_requests).where(human_requests.c.id == request_id)
            ).one()
            if row.status == "pending":
                conn.execute(
                    human_requests.update()
                    .where(human_requests.c.id == request_id, human_requests.c.status == "pending")
                    .values(
                        status="timed_out",
                        action=row.default_action,
                        decided_at=at,
                        decided_by="timeout",
                    )
                )
                self._log.append_in(
                    conn,
                    at=at,
                    actor="timeout",
                    action=f"human.{row.default_action}",
                    subject=request_id,
                    run_id=row.run_id,
                    details={"kind": row.kind, "subject": row.subject, "timed_out": True},
                )
                row = conn.execute(
                    sa.select(human_requests).where(human_requests.c.id == request_id)
                ).one()
            return _request_row(row._mapping)

        await self._log.load_key()
        return await self._store.transact(write)

    async def decided_among(self, request_ids: list[str]) -> list[str]:
        """Which of `request_ids` are no longer pending."""

        def read(conn: sa.Connection) -> list[str]:
            found = conn.execute(
                sa.select(human_requests.c.id).where(
                    human_requests.c.id.in_(request_ids), human_requests.c.status != "pending"
                )
            )
            return [r[0] for r in found]

        return await self._store.query(read)

    async def human_wait_s(self, run_id: RunId, now: datetime) -> float:
        """Seconds `run_id` has spent waiting for approvals and escalations (open ones to `now`)."""

        def read(conn: sa.Connection) -> float:
            rows = conn.execute(
                sa.select(human_requests.c.created_at, human_requests.c.decided_at).where(
                    human_requests.c.run_id == run_id, human_requests.c.kind != "review"
                )
            ).all()
            total = 0.0
            for created, decided in rows:
                end = aware(decided) or now
                total += max((end - aware(created)).total_seconds(), 0.0)  # type: ignore[operator]
            return total

        return await self._store.query(read)

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

        def read(conn: sa.Connection) -> list[dict[str, Any]]:
            query = (
                sa.select(human_requests).order_by(human_requests.c.created_at.desc()).limit(limit)
            )
            if kind is not None:
                query = query.where(human_requests.c.kind == kind)
            if status is not None:
                query = query.where(human_requests.c.status == status)
            if run_id is not None:
                query = query.where(human_requests.c.run_id == run_id)
            return [_request_row(r._mapping) for r in conn.execute(query)]

        return await self._store.query(read)

    async def decide(
        self,
        request_id: str,
        action: str,
        *,
        by: str,
        at: datetime,
        value: JsonValue = None,
        comment: str = "",
        patch: bool = False,
    ) -> dict[str, Any]:
        """Record a human's decision; returns the decided row.

        Args:
            patch: `value` of an `edit` is a JSON merge patch (RFC 7386) over the proposed value
                (`{"amount_usd": 90}` changes one argument, `null` removes one); the merged
                value is what is validated and recorded.

        Raises:
            NotFoundError: no such request.
            UsageError: the action does not apply to this kind of request, or a patch cannot be
                applied (the proposed value was stored truncated or with secrets redacted).
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
        if patch and action == "edit":
            value = _patched(row, value)
        value = _checked_value(row, action, value)
        await self._log.load_key()

        def write(conn: sa.Connection) -> dict[str, Any]:
            done = conn.execute(
                human_requests.update()
                .where(human_requests.c.id == request_id, human_requests.c.status == "pending")
                .values(
                    status=STATUS_OF[action],
                    action=action,
                    value=self._store.redactor.whole(value) if value is not None else None,
                    comment=self._store.redactor.text(comment) if comment else comment,
                    decided_at=at,
                    decided_by=by,
                )
            )
            current = conn.execute(
                sa.select(human_requests).where(human_requests.c.id == request_id)
            ).one()
            if not done.rowcount:
                raise ConflictError(
                    f"request {request_id} is already {current.status} (by "
                    f"{current.decided_by} at {aware(current.decided_at)}); nothing changed"
                )
            self._log.append_in(
                conn,
                at=at,
                actor=by,
                action=f"human.{action}",
                subject=request_id,
                run_id=row["run_id"],
                details={
                    "kind": row["kind"],
                    "subject": row["subject"],
                    "value": value,
                    "comment": comment,
                },
            )
            return _request_row(current._mapping)

        return await self._store.transact(write)

    async def feedback(self, *, since: datetime | None = None) -> list[dict[str, Any]]:
        """Review feedback per agent (see `corral.store.queries.feedback`)."""
        return await self._store.query(queries.feedback, since)


def _full_text(redact: Callable[[str], str], value: JsonValue) -> str | None:
    """`value` as stored JSON text: secrets redacted, nothing truncated."""
    text = dump(value)
    return None if text is None else redact(text)


def _patched(row: dict[str, Any], patch: JsonValue) -> JsonValue:
    """The proposed value of `row` with `patch` merged over it."""
    base = proposed_value(row["kind"], row["step_id"], row["payload"])
    if isinstance(base, dict) and base.get("truncated") is True and "preview" in base:
        raise UsageError(
            f"request {row['id']} was stored truncated (by an earlier Corral); a patch needs the "
            "whole proposed value: give the complete edited value instead"
        )
    if REDACTED in (dump(base) or ""):
        raise UsageError(
            f"the proposed value of request {row['id']} had secrets redacted when it was stored, "
            "so a patch would write the redaction marker in their place: give the complete edited "
            "value instead"
        )
    return merge_patch(base, patch)


def _request_row(mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for key in ("payload", "schema", "value"):
        row[key] = load(row[key])
    for key in ("created_at", "deadline_at", "decided_at"):
        row[key] = aware(row[key])
    return row


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
    where = _non_finite(value)
    if where is not None:  # JSON has no NaN or Infinity; a schema check lets them through
        raise PayloadError(
            f"{action!r} holds a number that is not finite at {where or '<root>'}; give a "
            "finite number"
        )
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


def _non_finite(value: JsonValue, path: str = "") -> str | None:
    """The path of the first NaN or infinite number in `value`, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _non_finite(item, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None
