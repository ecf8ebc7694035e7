"""Steps that wait for a human: a tool call's or a value's approval, and an agent's escalation;
and the sampled review of finished runs, which nothing waits for.

Each wait is a journaled step holding the decision, so a run killed while it waits resumes
waiting (or with the decision, if it came meanwhile). While any wait of a run is open its
deadline stops (`DeadlineHold`): a run may wait a day for an approval.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from pydantic import BaseModel

from corral.agent import Agent, FunctionAgent
from corral.clock import Clock
from corral.contracts import JsonValue, RunId, dump_payload, validate_payload
from corral.errors import CorralError, RejectedError, TakenOverError, UsageError
from corral.humans import Decision, HumanRequest, HumanStore, deadline
from corral.trace import Span

if TYPE_CHECKING:
    from corral._services import RunServices

__all__ = [
    "approve_value",
    "escalate_to_human",
    "sample_for_review",
    "wait_for_human",
]

log = logging.getLogger(__name__)

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)
T = TypeVar("T")


async def wait_for_human(
    run: RunServices,
    step_id: str,
    *,
    workflow: str,
    parent_id: str | None,
    kind: Literal["approval", "escalation"],
    subject: str,
    title: str,
    payload: Any,
    schema: dict[str, Any] | None,
    timeout_s: float,
    default: str,
) -> Decision:
    """Open a human request and wait (durably) for its decision: a journaled step.

    Raises:
        UsageError: the app is not open (no human desk).
        KilledError: the run or the subject was halted.
    """
    desk = run.humans
    if desk is None:
        raise UsageError("this run cannot wait for a human: open the app first")
    run_id, recorder, clock = run.run_id, run.recorder, run.clock
    kill = run.guards.guards.kill
    guard_name = f"human:{subject}"
    await kill.gate(run_id, guard_name)

    async def step() -> JsonValue:
        started, t0 = clock.now(), clock.monotonic()
        request = HumanRequest(
            id=f"{run_id}:{step_id}",
            run_id=run_id,
            step_id=step_id,
            kind=kind,
            workflow=workflow,
            subject=subject,
            title=title,
            payload=payload,
            schema=schema,
            deadline_at=deadline(clock, timeout_s),
            default=default,
            created_at=started,
        )
        decision: Decision | None = None
        try:
            decision = await kill.guard(run_id, guard_name, desk.wait(request))
        finally:
            await recorder.record_span(
                Span(
                    run_id=run_id,
                    step_id=step_id,
                    parent_id=parent_id,
                    kind="human",
                    name=f"{kind}:{subject}",
                    agent=None,
                    input=payload,
                    output=decision.value if decision is not None else None,
                    status="ok" if decision is not None else "error",
                    error=None if decision is not None else {"code": "killed"},
                    latency_ms=(clock.monotonic() - t0) * 1000,
                    started_at=started,
                    attrs={
                        "request_id": request.id,
                        "kind": kind,
                        "action": decision.action if decision else None,
                        "by": decision.by if decision else None,
                        "timed_out": decision.timed_out if decision else False,
                    },
                )
            )
        return decision.to_dict()

    async with run.hold():
        data = await run.journal.step(step_id, f"human:{kind}", step)
    return Decision.from_dict(cast(dict[str, Any], data))


async def escalate_to_human(
    run: RunServices,
    agent: Agent[In, Out] | FunctionAgent[In, Out],
    payload: In | dict[str, Any] | str,
    step_id: str,
    reason: str,
    error: CorralError | None,
    *,
    workflow: str,
    parent_id: str | None,
    proposed: Out | None = None,
) -> Out:
    """Ask a human to answer for `agent`; the validated answer is the agent's output.

    Raises:
        TakenOverError: the human took the run over.
        RejectedError: the human declined (or `error`, re-raised, when there was one).
    """
    policy = agent.escalation
    timeout = policy.timeout_s if policy is not None and policy.timeout_s else None
    log.info(
        "escalating %s to a human: %s",
        agent.name,
        reason,
        extra={"run_id": run.run_id, "agent": agent.name},
    )
    decision = await wait_for_human(
        run,
        step_id,
        workflow=workflow,
        parent_id=parent_id,
        kind="escalation",
        subject=agent.name,
        title=f"{agent.name}: {reason}",
        payload={
            "input": dump_payload(payload),
            "reason": reason,
            "proposed": dump_payload(proposed) if proposed is not None else None,
            "error": error.to_dict() if error is not None else None,
        },
        schema=agent.output.model_json_schema(),
        timeout_s=timeout or run.human_policy.escalation_timeout_s,
        default=policy.default if policy is not None else "reject",
    )
    if decision.action == "take_over":
        raise TakenOverError(
            agent.name, request_id=decision.request_id, by=decision.by, comment=decision.comment
        )
    if decision.action == "reject":
        if error is not None:
            raise error
        raise RejectedError(
            f"answering for agent {agent.name!r}",
            request_id=decision.request_id,
            by=decision.by,
            comment=decision.comment,
        )
    output: Out = validate_payload(
        agent.output, decision.value, agent=agent.name, code="invalid_answer", role="answer for"
    )
    run.stats.best = (agent.name, output)
    return output


async def approve_value(
    run: RunServices,
    value: T,
    step_id: str,
    *,
    workflow: str,
    parent_id: str | None,
    title: str | None,
    subject: str | None,
    timeout_s: float | None,
    default: Literal["reject", "approve"],
) -> T:
    """Wait for a human to approve `value` (see `RunContext.approve`).

    Raises:
        RejectedError: rejected, or not decided within `timeout_s` with `default="reject"`.
    """
    is_model = isinstance(value, BaseModel)
    what = subject or workflow
    decision = await wait_for_human(
        run,
        step_id,
        workflow=workflow,
        parent_id=parent_id,
        kind="approval",
        subject=what,
        title=title or f"approve {type(value).__name__} of {what}",
        payload=dump_payload(value),
        schema=type(value).model_json_schema() if isinstance(value, BaseModel) else None,
        timeout_s=timeout_s or run.human_policy.approval_timeout_s,
        default=default,
    )
    if decision.action == "reject":
        raise RejectedError(
            title or what,
            request_id=decision.request_id,
            by=decision.by,
            comment=decision.comment,
        )
    if decision.action == "edit" and is_model:
        edited: T = type(value).model_validate(decision.value)  # type: ignore[attr-defined]
        return edited
    return value


async def sample_for_review(
    requests: HumanStore,
    clock: Clock,
    share: float,
    workflow: str,
    run_id: RunId,
    payload: JsonValue,
    output: JsonValue,
) -> None:
    """Queue a sampled `share` of succeeded runs for review (never waits for the review).

    The sample is a hash of the run id, so a resumed run makes the same choice."""
    if share <= 0:
        return
    digest = hashlib.sha256(f"review:{run_id}".encode()).digest()
    if int.from_bytes(digest[:8], "big") / 2**64 >= share:
        return
    await requests.open_request(
        HumanRequest(
            id=f"{run_id}:review",
            run_id=run_id,
            step_id="review",
            kind="review",
            workflow=workflow,
            subject=workflow,
            title=f"review a run of {workflow}",
            payload={"input": payload, "output": output},
            created_at=clock.now(),
        )
    )
