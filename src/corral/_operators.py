"""Operator controls of an open app: halts and pauses applied from the controls log, human
decisions, the human-request webhook and the audit entry of each configuration change."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from corral._services import Auditor
from corral.clock import Clock
from corral.config import AppConfig
from corral.contracts import JsonValue
from corral.errors import CorralError
from corral.guards.chain import Guards
from corral.humans import HumanDesk, HumanRequest
from corral.secrets import url_host

__all__ = ["Control", "ControlLog", "Operators"]

log = logging.getLogger(__name__)


class Control(Protocol):
    """One entry of the controls log (`corral.store.ops.Control`)."""

    @property
    def seq(self) -> int: ...
    @property
    def action(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def by(self) -> str: ...
    @property
    def reason(self) -> str: ...


C = TypeVar("C", bound=Control)
C_co = TypeVar("C_co", bound=Control, covariant=True)


class ControlLog(Auditor, Protocol[C_co]):
    """The operations store as operators reach it (`corral.store.ops.Ops`): the audit log
    (`Auditor`), controls and human decisions."""

    async def controls_since(self, seq: int) -> Sequence[C_co]:
        """Controls after `seq`, oldest first."""
        ...

    async def add_control(
        self,
        action: str,
        scope: str,
        name: str | None,
        *,
        by: str,
        at: datetime,
        reason: str = "",
    ) -> C_co:
        """Append a control (validated) and audit it."""
        ...

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
        """Record a human decision."""
        ...

    async def audit_entries(
        self, *, action: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The newest audit entries."""
        ...


PostJson = Callable[[str, Mapping[str, Any]], None]
"""Sends one JSON body to a URL (blocking; run in a thread)."""


class Operators(Generic[C]):
    """Applies the controls log to this process's guards and carries human decisions."""

    def __init__(
        self,
        *,
        config: AppConfig,
        clock: Clock,
        guards: Guards,
        log_: ControlLog[C],
        humans: HumanDesk,
    ) -> None:
        self._config = config
        self._clock = clock
        self._guards = guards
        self._log = log_
        self._humans = humans
        self._seq = 0
        self._synced = False
        self.notify_failures = 0
        """Human-request notifications the webhook did not accept."""

    async def sync(self) -> None:
        """Apply the controls written since the last sync (by any process).

        The first sync replays the whole history (every halt and release since the database
        began): those are logged at DEBUG, and what they leave in effect in one INFO line.
        """
        replay = not self._synced
        found = await self._log.controls_since(self._seq)
        self._synced = True
        for control in found:
            by = f"by {control.by}"
            reason = f"{control.reason} ({by})" if control.reason else by
            kill = self._guards.kill
            kill.apply(control.action, control.scope, control.name, reason, quiet=replay)
            self._seq = control.seq
        if replay and found:
            self._log_in_effect()

    def _log_in_effect(self) -> None:
        state = self._guards.kill.state
        parts = [f"{len(state['halted_runs'])} runs halted"] if state["halted_runs"] else []
        parts += [
            f"{label}: {', '.join(sorted(state[key]))}"
            for key, label in (
                ("halted_agents", "halted agents"),
                ("paused_agents", "paused agents"),
                ("paused_workflows", "paused workflows"),
            )
            if state[key]
        ]
        if state["halted_all"]:
            parts.insert(0, "everything is halted")
        if state["paused_noncritical"]:
            parts.append("non-critical work is paused")
        if parts:
            log.info("operator controls in effect: %s", "; ".join(parts))

    async def watch(self) -> None:
        """Every `humans.poll_s`: apply operator controls and wake waiters decided elsewhere."""
        while True:
            await asyncio.sleep(self._config.humans.poll_s)
            try:
                await self.sync()
                await self._humans.poll()
            except CorralError as exc:  # a locked database: try again next round
                log.warning("operator controls not synced: %s", exc)

    async def control(
        self, action: str, scope: str, name: str | None, *, by: str, reason: str
    ) -> C:
        """Append a control and apply it here at once (see `App.control`)."""
        control = await self._log.add_control(
            action, scope, name, by=by, at=self._clock.now(), reason=reason
        )
        await self.sync()
        return control

    async def decide(
        self, request_id: str, action: str, *, by: str, value: JsonValue, comment: str
    ) -> dict[str, Any]:
        """Record a decision and wake its waiter in this process (see `App.decide`)."""
        row = await self._log.decide(
            request_id, action, by=by, at=self._clock.now(), value=value, comment=comment
        )
        self._humans.notify(request_id)
        return row

    async def audit_config(self, settings: dict[str, Any]) -> None:
        """Audit the configuration when it differs from the last one audited."""
        text = json.dumps(settings, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()
        last = await self._log.audit_entries(action="config.change", limit=1)
        if last and last[0]["details"].get("hash") == digest:
            return
        await self._log.audit(
            at=self._clock.now(),
            actor=f"process:{self._config.executor_id}",
            action="config.change",
            subject="config",
            details={"hash": digest, "config": json.loads(text)},
        )

    async def notify(
        self,
        queue: asyncio.Queue[HumanRequest],
        post: PostJson,
        redact: Callable[[str], str],
    ) -> None:
        """POST every new approval and escalation to `humans.webhook_url` (secrets redacted)."""
        policy = self._config.humans
        url = policy.webhook_url
        assert url is not None
        while True:
            request = await queue.get()
            body = {
                "event": "human_request",
                "id": request.id,
                "kind": request.kind,
                "run_id": request.run_id,
                "workflow": request.workflow,
                "subject": request.subject,
                "title": request.title,
                "payload": json.loads(redact(json.dumps(request.payload))),
                "deadline_at": request.deadline_at.isoformat() if request.deadline_at else None,
                "default": request.default,
                "inbox": f"{policy.dashboard_url.rstrip('/')}/inbox"
                if policy.dashboard_url
                else None,
            }
            try:
                await asyncio.to_thread(post, url, body)
            except Exception as exc:  # boundary: a down webhook is logged, never raised
                self.notify_failures += 1
                log.warning("human-request webhook at %s failed: %s", url_host(url), exc)
