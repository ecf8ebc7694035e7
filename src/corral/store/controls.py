"""Operator controls in the run database (`corral_controls`): an append-only log of operator
actions (halt a run, pause an agent or a workflow, pause non-critical work, and their reversals).

Every process applies new rows to its kill switch (`since`), so a `corral cancel` from another
shell reaches the process running the run within one poll interval. Each action is audited in the
same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from corral.errors import UsageError
from corral.store._rows import aware
from corral.store.audit import AuditLog
from corral.store.schema import controls
from corral.store.sql import SqlStore

__all__ = ["CONTROL_SCOPES", "Control", "Controls"]

CONTROL_SCOPES = {
    "halt": ("run", "agent", "all"),
    "release": ("run", "agent", "all"),
    "pause": ("agent", "workflow", "noncritical"),
    "resume": ("agent", "workflow", "noncritical"),
}
"""Operator actions and what each applies to (`release` lifts a halt, `resume` a pause)."""


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


class Controls:
    """The controls log of one database."""

    def __init__(self, store: SqlStore, log: AuditLog) -> None:
        self._store = store
        self._log = log

    async def add(
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
        await self._log.load_key()
        reason = self._store.redactor.text(reason)  # an operator may paste anything in

        def write(conn: sa.Connection) -> int:
            seq = conn.execute(
                controls.insert()
                .values(action=action, scope=scope, name=name, reason=reason, by=by, at=at)
                .returning(controls.c.seq)
            ).scalar_one()
            self._log.append_in(
                conn,
                at=at,
                actor=by,
                action=f"operator.{action}",
                subject=f"{scope}:{name}" if name else scope,
                run_id=name if scope == "run" else None,
                details={"reason": reason},
            )
            return int(seq)

        seq = await self._store.transact(write)
        return Control(seq=seq, action=action, scope=scope, name=name, reason=reason, by=by, at=at)

    async def since(self, seq: int) -> list[Control]:
        """Operator actions after `seq`, oldest first."""

        def read(conn: sa.Connection) -> list[Control]:
            rows = conn.execute(
                sa.select(controls).where(controls.c.seq > seq).order_by(controls.c.seq)
            )
            return [Control(**{**r._mapping, "at": aware(r.at)}) for r in rows]

        return await self._store.query(read)
