"""Humans in the loop: approvals, escalations and reviews, as durable waits.

A run that needs a person writes a *request* (approve this tool call, answer for this agent, review
this run) and waits for its *decision*. The request row in the run database is the source of
truth, not the waiting process:

- The wait is a journaled step whose id is fixed by program position, and the request id is
  `run_id:step_id`. A process killed while waiting re-opens the same request when the run resumes
  (writing it again is a no-op) and finds it pending, or decided while it was down.
- The deadline is stored with the request, so a restart does not buy more time; when it passes,
  the default action is recorded as the decision (`timed_out`), exactly once, by whichever process
  gets there first.
- A decision made in this process wakes its waiter at once (`HumanDesk.notify`); one made in
  another process (the CLI, `corral serve`) is seen by `HumanDesk.poll`, which the app calls every
  `humans.poll_s` for all of its waiting requests in one query.

This module is core: it defines the request, the decision and the policies, and waits through the
small `HumanStore` protocol (implemented by `corral.store.humans`). Who may decide, and
validating an edited value against the request's schema, belong to the deciding side (the same
module).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from corral.clock import Clock
from corral.contracts import JsonValue, RunId

__all__ = [
    "ACTIONS",
    "Approval",
    "AuditPolicy",
    "Decision",
    "Escalation",
    "HumanDesk",
    "HumanPolicy",
    "HumanRequest",
    "HumanStore",
    "RequestKind",
    "above",
]

RequestKind = Literal["approval", "escalation", "review"]
Action = Literal["approve", "reject", "edit", "answer", "take_over", "review"]

ACTIONS: dict[str, tuple[str, ...]] = {
    "approval": ("approve", "reject", "edit"),
    "escalation": ("answer", "take_over", "reject"),
    "review": ("review",),
}
"""What a human may do with each kind of request."""

STATUS_OF: dict[str, str] = {
    "approve": "approved",
    "reject": "rejected",
    "edit": "edited",
    "answer": "answered",
    "take_over": "taken_over",
    "review": "reviewed",
}
"""The request status each action leaves (a timeout leaves `timed_out`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HumanRequest:
    """Something a run asks a person.

    Attributes:
        id: `run_id:step_id` (reviews: `run_id:review`): stable across restarts.
        kind: `approval`, `escalation` or `review`.
        subject: The tool, agent or workflow the request is about.
        title: One line for the inbox.
        payload: What the human needs to decide: the tool arguments, the agent's input and its
            failure, the run's input and output.
        schema: The JSON schema an edited value (approval) or an answer (escalation) must fit.
        deadline_at: When the default action applies (None: wait for ever).
        default: The action taken at the deadline.
    """

    id: str
    run_id: RunId
    step_id: str
    kind: RequestKind
    workflow: str
    subject: str
    title: str
    payload: JsonValue
    schema: dict[str, Any] | None = None
    deadline_at: datetime | None = None
    default: str | None = None
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What a human (or the timeout) decided."""

    request_id: str
    action: str
    value: JsonValue = None
    """The edited arguments (`edit`), the answer (`answer`), or the feedback (`review`)."""
    by: str
    comment: str = ""
    at: datetime
    timed_out: bool = False

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON data (what the journal stores for the wait step)."""
        return {
            "request_id": self.request_id,
            "action": self.action,
            "value": self.value,
            "by": self.by,
            "comment": self.comment,
            "at": self.at.isoformat(),
            "timed_out": self.timed_out,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        """Rebuild a decision from `to_dict` data."""
        return cls(
            request_id=str(data["request_id"]),
            action=str(data["action"]),
            value=data.get("value"),
            by=str(data.get("by") or ""),
            comment=str(data.get("comment") or ""),
            at=datetime.fromisoformat(str(data["at"])),
            timed_out=bool(data.get("timed_out")),
        )


class HumanStore(Protocol):
    """Where requests and decisions live (the SQL store implements it)."""

    async def open_request(self, request: HumanRequest) -> dict[str, Any]:
        """Insert the request unless it exists; return its row as it is now."""
        ...

    async def get_request(self, request_id: str) -> dict[str, Any] | None:
        """The request's row, or None."""
        ...

    async def expire_request(self, request_id: str, at: datetime) -> dict[str, Any]:
        """Record the default action as the decision if the request is still pending; return the
        row (decided by the timeout, or by whoever decided first)."""
        ...

    async def decided_among(self, request_ids: list[str]) -> list[str]:
        """Which of these requests are no longer pending."""
        ...


def decision_of(row: dict[str, Any]) -> Decision:
    """The decision recorded on a decided request row."""
    return Decision(
        request_id=row["id"],
        action=row["action"],
        value=row.get("value"),
        by=row.get("decided_by") or "",
        comment=row.get("comment") or "",
        at=row["decided_at"],
        timed_out=row["status"] == "timed_out",
    )


class HumanDesk:
    """Waits for decisions on behalf of the app's runs.

    Args:
        store: Where requests live.
        clock: The app's clock: deadlines are wall-clock times stored with the request.
        poll_s: The longest a decision made in another process goes unnoticed.
    """

    def __init__(self, store: HumanStore, clock: Clock, *, poll_s: float = 0.5) -> None:
        self._store = store
        self._clock = clock
        self.poll_s = poll_s
        self._waiting: dict[str, asyncio.Event] = {}
        self._runs: dict[str, str] = {}  # request id -> run id
        self._subscribers: list[asyncio.Queue[HumanRequest]] = []

    def subscribe(self) -> asyncio.Queue[HumanRequest]:
        """A queue that receives every new request this process opens (not one re-opened by a
        resumed run): hook a notifier (chat, e-mail) to it, or await it in a test."""
        queue: asyncio.Queue[HumanRequest] = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[HumanRequest]) -> None:
        """Stop feeding `queue`."""
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    @property
    def waiting(self) -> list[str]:
        """Ids of the requests this process is waiting on."""
        return list(self._waiting)

    @property
    def waiting_runs(self) -> set[str]:
        """Runs this process holds waiting for a human."""
        return set(self._runs.values())

    def notify(self, request_id: str) -> None:
        """Wake the waiter of `request_id` (a decision was just recorded)."""
        event = self._waiting.get(request_id)
        if event is not None:
            event.set()

    async def poll(self) -> int:
        """Wake waiters whose request was decided elsewhere; returns how many."""
        if not self._waiting:
            return 0
        decided = await self._store.decided_among(list(self._waiting))
        for request_id in decided:
            self.notify(request_id)
        return len(decided)

    async def wait(self, request: HumanRequest) -> Decision:
        """Open `request` (once) and wait for its decision or its deadline.

        Cancelling the wait (a kill switch) leaves the request pending in the store.
        """
        row = await self._store.open_request(request)
        event = self._waiting.setdefault(request.id, asyncio.Event())
        self._runs[request.id] = request.run_id
        if row["status"] == "pending" and row["created_at"] == request.created_at:
            for queue in self._subscribers:
                queue.put_nowait(request)
        try:
            while row["status"] == "pending":
                deadline: datetime | None = row.get("deadline_at")
                timeout = None
                if deadline is not None:
                    timeout = (deadline - self._clock.now()).total_seconds()
                    if timeout <= 0:
                        row = await self._store.expire_request(request.id, self._clock.now())
                        continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout)
                event.clear()
                found = await self._store.get_request(request.id)
                if found is None:  # pruned while waiting: nobody can decide it any more
                    row = await self._store.open_request(request)
                else:
                    row = found
        finally:
            self._waiting.pop(request.id, None)
            self._runs.pop(request.id, None)
        return decision_of(row)


# -- policies ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """When a tool call needs a human's yes, how long to wait, and what happens then.

    Args:
        when: `always`, or a predicate over the validated arguments (a Pydantic model with the
            tool's parameters as attributes) that says whether this call needs approval.
        timeout_s: How long to wait (None: `humans.approval_timeout_s` from the config).
        default: `reject` (the safe default) or `approve`, applied at the timeout.
        reason: Shown in the inbox: why this call needs a human.

    Example:
        ```python
        @tool(side_effect=True, approval=above("amount_usd", 100))
        def refund(order_id: str, amount_usd: float) -> dict: ...
        ```
    """

    when: Literal["always"] | Callable[[Any], bool] = "always"
    timeout_s: float | None = None
    default: Literal["reject", "approve"] = "reject"
    reason: str = ""

    def __post_init__(self) -> None:
        if self.default not in ("reject", "approve"):
            raise ValueError(
                f"approval default must be 'reject' or 'approve', got {self.default!r}"
            )
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"approval timeout_s must be positive, got {self.timeout_s!r}")
        if self.when != "always" and not callable(self.when):
            raise ValueError(f"approval `when` must be 'always' or a predicate, got {self.when!r}")

    def needed(self, arguments: BaseModel) -> bool:
        """Whether a call with these (validated) arguments must wait for a human."""
        if self.when == "always":
            return True
        return bool(self.when(arguments))


def above(argument: str, limit: float, **options: Any) -> Approval:
    """An `Approval` needed when `argument` is greater than `limit`.

    Example: `approval=above("amount_usd", 100)` asks a human for refunds over $100.
    """

    def over(arguments: BaseModel) -> bool:
        value = getattr(arguments, argument)
        return value is not None and value > limit

    options.setdefault("reason", f"{argument} > {limit:g}")
    return Approval(when=over, **options)


@dataclass(frozen=True, slots=True, kw_only=True)
class Escalation:
    """When an agent's hard case goes to a human instead of failing the run.

    The human either answers (the answer, validated against the agent's output schema, becomes
    the agent's output and the run continues) or takes the run over (it ends `taken_over`).

    Args:
        min_confidence: Escalate a valid output whose `confidence_field` is below this.
        confidence_field: The output field holding the agent's confidence (0..1).
        on_failure: Escalate when the agent cannot answer: invalid output after its repair,
            retries exhausted, its fallback failed too.
        on_guard_stop: Escalate when a guard refuses the agent's call (a budget, a loop limit,
            an open breaker), except the kill switch.
        timeout_s: How long to wait (None: `humans.escalation_timeout_s`).
        default: At the timeout: `reject` (the agent's failure stands) or `take_over`.
    """

    min_confidence: float | None = None
    confidence_field: str = "confidence"
    on_failure: bool = True
    on_guard_stop: bool = False
    timeout_s: float | None = None
    default: Literal["reject", "take_over"] = "reject"

    def low_confidence(self, output: BaseModel) -> float | None:
        """The output's confidence when it is below the threshold, else None."""
        if self.min_confidence is None:
            return None
        value = getattr(output, self.confidence_field, None)
        if isinstance(value, int | float) and value < self.min_confidence:
            return float(value)
        return None


def deadline(clock: Clock, timeout_s: float | None) -> datetime | None:
    """The wall-clock deadline `timeout_s` from now (None: no deadline)."""
    return None if timeout_s is None else clock.now() + timedelta(seconds=timeout_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class HumanPolicy:
    """The `[humans]` table: waits, timeouts and the review sample.

    Example:
        ```toml
        [humans]
        approval_timeout_s = 3600
        review_rate = 0.05                      # 5% of each workflow's succeeded runs
        review_rates = { support = 0.2 }        # per-workflow override
        ```
    """

    poll_s: float = 0.5
    """How often a process looks for decisions and operator controls made in other processes
    (the longest a `corral approve` or `corral cancel` from another shell goes unseen)."""
    approval_timeout_s: float = 86400.0
    """Default wait for an approval before its default action (tools may set their own)."""
    escalation_timeout_s: float = 86400.0
    """Default wait for an escalation's answer."""
    review_rate: float = 0.0
    """Share of succeeded runs (0..1) queued for asynchronous review."""
    review_rates: dict[str, float] = field(default_factory=dict)
    """Per-workflow review shares, overriding `review_rate`."""
    max_arg_chars: int = 10_000
    """Longest text a side-effecting tool accepts in one argument from a model."""
    webhook_url: str | None = None
    """POST each new approval and escalation here as JSON (chat, paging), so it is seen."""
    dashboard_url: str | None = None
    """The dashboard's address (`https://corral.example.com`): notifications link to its inbox."""

    def __post_init__(self) -> None:
        from corral.errors import ConfigError

        for key in ("poll_s", "approval_timeout_s", "escalation_timeout_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"must be > 0, got {getattr(self, key)}", key=f"humans.{key}")
        rates = {"review_rate": self.review_rate} | {
            f"review_rates.{k}": v for k, v in self.review_rates.items()
        }
        for key, rate in rates.items():
            if not 0 <= rate <= 1:
                raise ConfigError(f"must be between 0 and 1, got {rate}", key=f"humans.{key}")
        if self.max_arg_chars < 1:
            raise ConfigError("must be >= 1", key="humans.max_arg_chars")

    def review_share(self, workflow: str) -> float:
        """The share of `workflow`'s succeeded runs that go to review."""
        return self.review_rates.get(workflow, self.review_rate)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditPolicy:
    """The `[audit]` table: where the checkpoint signing key lives and how often to sign."""

    key_file: str | None = None
    """The Ed25519 seed that signs checkpoints (created on first use, mode 0600). Default:
    `audit.key` beside a SQLite database file (never the working directory),
    `~/.corral/audit.key` for PostgreSQL, a key in memory for `sqlite:///:memory:`. Keep it off
    the database's backups; `CORRAL_AUDIT_KEY` overrides it."""
    checkpoint_every: int = 100
    """Sign the chain head every this many entries (0: only on `corral audit checkpoint`)."""

    def __post_init__(self) -> None:
        from corral.errors import ConfigError

        if self.checkpoint_every < 0:
            raise ConfigError("must be >= 0", key="audit.checkpoint_every")
