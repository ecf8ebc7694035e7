"""What a caller gets back from a run: `RunResult`, and `RunHandle` for a run started in the
background."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from corral._dataclass import quick_init
from corral.contracts import Json, RunId
from corral.model import Usage
from corral.trace import RunStatus

__all__ = ["RunHandle", "RunResult"]

Out = TypeVar("Out", bound=BaseModel)


@quick_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult(Generic[Out]):
    """How a run ended.

    `output` is the workflow's validated output when `status` is `succeeded`; otherwise `error`
    describes what stopped it (`code`, `message`, and the error's typed attributes: a guard's
    limit, spent, cycle, ...). When a budget stops a run (`budget_exhausted`), `partial` is the
    best result produced so far and `error["not_completed"]` says what was not done.
    """

    _new: ClassVar[Callable[..., RunResult[Any]]]
    """`RunResult(...)` without the class call's keyword dict (see `corral._dataclass`)."""

    run_id: RunId
    workflow: str
    status: RunStatus
    output: Out | None
    error: dict[str, Any] | None
    usage: Usage
    duration_s: float
    partial: Json = None
    """The best result so far (JSON) when a budget stopped the run; None otherwise."""

    @property
    def cost_usd(self) -> Decimal:
        """What the run's model calls cost."""
        return self.usage.cost_usd

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.status == "succeeded"


class RunHandle(Generic[Out]):
    """A run started with `App.start`; await `result()` for its `RunResult`."""

    def __init__(self, run_id: RunId, task: asyncio.Task[RunResult[Out]]) -> None:
        self.run_id = run_id
        self._task = task

    async def result(self) -> RunResult[Out]:
        """Wait for the run to end."""
        return await asyncio.shield(self._task)

    def done(self) -> bool:
        """Whether the run has ended."""
        return self._task.done()
