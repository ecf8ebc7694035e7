"""The services one run's steps use, as one frozen bundle: its context, its sub-workflows'
contexts and each agent call receive it, instead of reading each other's private attributes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from corral._dataclass import quick_init
from corral.clock import Clock
from corral.contracts import JsonValue, RunId
from corral.durable import Journal
from corral.guards.chain import RunGuards
from corral.guards.deadlines import DeadlineHold
from corral.humans import HumanDesk, HumanPolicy
from corral.model import Model, Usage
from corral.trace import Recorder

__all__ = ["Auditor", "Body", "RunServices", "RunStats"]


class Body(Protocol):
    """A workflow as `finish` and a run's sub-workflow calls need it
    (`corral.workflow.Workflow`)."""

    @property
    def name(self) -> str: ...
    @property
    def input(self) -> type[BaseModel]: ...
    @property
    def output(self) -> type[BaseModel] | None: ...
    @property
    def fn(self) -> Any: ...


class Auditor(Protocol):
    """Where audit entries go (the app's tamper-evident log, `corral.store.ops.Ops`)."""

    async def audit(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        subject: str,
        run_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Append one entry; returns its sequence number."""
        ...


@dataclass(slots=True, kw_only=True)
class RunStats:
    """What a run's calls added up to so far (shared by the run and its sub-workflows)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    calls: int = 0
    repairs: int = 0
    invalid_tool_calls: int = 0
    failures: int = 0
    best: tuple[str, JsonValue | BaseModel] | None = None

    def add(self, input_tokens: int, output_tokens: int, cost_usd: Decimal) -> None:
        """One model call's usage (counted in place: no `Usage` per call)."""
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost_usd += cost_usd
        self.calls += 1

    @property
    def usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
            calls=self.calls,
        )


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RunServices:
    """Everything a run's steps reach: built once per run by `corral._run.Runner`."""

    _new: ClassVar[Callable[..., RunServices]]
    """`RunServices(...)` without the class call's keyword dict (see `corral._dataclass`)."""

    run_id: RunId
    journal: Journal
    """Checkpointed steps and recorded side effects."""
    recorder: Recorder
    recording: bool
    """Spans are kept: without a recorder, building them (and reading the clock) is skipped."""
    clock: Clock
    guards: RunGuards
    """This run's budget and loop guard (and, through `guards.guards`, the app's)."""
    resolve_model: Callable[[str], Model]
    resolve_chain: Callable[[str], list[Model]]
    resolve_workflow: Callable[[str], Body] | None
    humans: HumanDesk | None
    human_policy: HumanPolicy
    auditor: Auditor | None
    call_timeout_s: float
    stats: RunStats
    hold: DeadlineHold
    """Stops the run's deadline while a human wait is open."""
