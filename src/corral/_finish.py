"""Running a workflow body to its end: the one place that calls a workflow's function,
validates its output and maps what it raised to a run status. Top-level runs
(`corral._run.Runner`) and sub-workflows (`RunContext.subflow`) both use it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from corral._services import Body
from corral.contracts import JsonValue, dump_payload, validate_payload
from corral.errors import (
    BudgetExhaustedError,
    CorralError,
    DeadlineExceededError,
    KilledError,
    RejectedError,
    TakenOverError,
)
from corral.guards.deadlines import Deadline
from corral.trace import RunStatus

__all__ = ["WorkflowEnd", "ended_by", "finish"]


class Offers(Protocol):
    """A run context as `finish` needs it: the best result so far (`RunContext.best`)."""

    @property
    def best(self) -> tuple[str, JsonValue] | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowEnd:
    """How a workflow body ended: its status, output (or partial result) and error."""

    status: RunStatus
    value: Any = None
    """The validated output object (succeeded only)."""
    output: JsonValue = None
    error: dict[str, Any] | None = None
    raised: BaseException | None = None
    """What the body raised (a sub-workflow re-raises it in its parent)."""


async def finish(
    wf: Body,
    ctx: Offers,
    given: BaseModel,
    deadline: Deadline | None = None,
    deadline_s: float = 0.0,
) -> WorkflowEnd:
    """Run `wf`'s body with `ctx`, validate its output and map what it raised to a status.

    A run's `deadline` (of `deadline_s`) cancels the body when it passes: that cancellation is
    raised as `DeadlineExceededError`; any other `CancelledError` propagates.
    """
    try:
        try:
            value = await wf.fn(ctx, given)
        except asyncio.CancelledError:
            if deadline is not None and deadline.expired and deadline.task.uncancel() == 0:
                raise DeadlineExceededError(deadline_s) from None
            raise
        if wf.output is not None:
            value = validate_payload(
                wf.output, value, agent=wf.name, code="invalid_output", role="output of workflow"
            )
    except BudgetExhaustedError as exc:
        # Stop with the best result so far and say what was not done.
        error = exc.to_dict()
        best_agent, partial = ctx.best if ctx.best is not None else (None, None)
        error["best_result_from"] = best_agent
        error["not_completed"] = (
            f"workflow {wf.name!r} stopped before finishing: the call that needed "
            f"{exc.details.get('needed')} {exc.dimension} and everything after it"
        )
        return WorkflowEnd(status="budget_exhausted", output=partial, error=error, raised=exc)
    except CorralError as exc:
        return ended_by(exc)
    except Exception as exc:  # boundary: a bug in user code fails the run, not the app
        error = {"code": "workflow_error", "message": f"{type(exc).__name__}: {exc}"}
        return WorkflowEnd(status="failed", error=error, raised=exc)
    output = dump_payload(value) if value is not None else None
    return WorkflowEnd(status="succeeded", value=value, output=output)


def ended_by(exc: CorralError) -> WorkflowEnd:
    """How a workflow that raised `exc` ended."""
    status: RunStatus = "failed"
    if isinstance(exc, DeadlineExceededError):
        status = "deadline_exceeded"
    elif isinstance(exc, KilledError):
        status = "killed"
    elif isinstance(exc, RejectedError):
        status = "rejected"
    elif isinstance(exc, TakenOverError):
        status = "taken_over"
    return WorkflowEnd(status=status, error=exc.to_dict(), raised=exc)
