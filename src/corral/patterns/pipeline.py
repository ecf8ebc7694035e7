"""Pipeline: agents in sequence, with a validation gate after each stage.

A gate looks at a stage's (already schema-valid) output and decides:

- `Gate.ok()`: pass it on to the next stage;
- `Gate.stop(why)`: end the pipeline (`stopped`);
- `Gate.repair(why)`: run the stage again, up to `max_repairs` times; the model sees each answer
  the gate rejected and the gate's reason (`corral.agent.Rejection`), so it can fix what the gate
  objected to instead of answering the same again;
- `Gate.escalate(why)`: ask a human. In an open app the request goes to the inbox (`corral
  inbox`, the dashboard) with the stage's input, the reason and the stage's output as the
  proposed answer, and the run waits; the human's answer (validated against the stage's output
  schema) becomes the stage's output and the pipeline goes on. A human who declines, or no
  answer before the escalation timeout, ends the pipeline `escalated`; taking the run over ends
  the run (`TakenOverError`). Where no human can be asked (`ctx.has_inbox` is false), the
  pipeline ends `escalated` and the workflow decides.

Stopping and escalating are outcomes in the `PipelineResult`, not exceptions.

Example:
    ```python
    pipeline = Pipeline([
        Stage(triage, gate=lambda t: Gate.escalate("legal") if t.legal else Gate.ok()),
        Stage(drafter),
    ])
    result = await pipeline.run(ctx, ticket)
    ```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from corral.agent import Agent, FunctionAgent, Rejection
from corral.errors import AgentError, RejectedError
from corral.workflow import RunContext

__all__ = ["Gate", "Pipeline", "PipelineResult", "Stage"]

Verdict = Literal["pass", "stop", "repair", "escalate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Gate:
    """A gate's decision about one stage output."""

    verdict: Verdict
    reason: str = ""

    @classmethod
    def ok(cls) -> Gate:
        return cls(verdict="pass")

    @classmethod
    def stop(cls, reason: str) -> Gate:
        return cls(verdict="stop", reason=reason)

    @classmethod
    def repair(cls, reason: str) -> Gate:
        """Run the stage again; `reason` is shown to the model with the rejected answer."""
        return cls(verdict="repair", reason=reason)

    @classmethod
    def escalate(cls, reason: str) -> Gate:
        """Ask a human (the inbox) to answer for the stage; `reason` is the request's title."""
        return cls(verdict="escalate", reason=reason)


@dataclass(frozen=True, slots=True)
class Stage:
    """One agent in a pipeline and the gate after it."""

    agent: Agent[Any, Any] | FunctionAgent[Any, Any]
    gate: Callable[[Any], Gate] | None = None
    max_repairs: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineResult:
    """How a pipeline ended: `completed`, `stopped`, `escalated` or `failed`.

    `output` is the last stage's output when completed, else the last valid output produced (the
    best result so far); `stage` names where it ended; `error` is the structured agent error;
    `escalations` counts the stages a human answered for.
    """

    status: Literal["completed", "stopped", "escalated", "failed"]
    output: BaseModel | None
    stage: str | None = None
    reason: str = ""
    error: AgentError | None = None
    repairs: int = 0
    outputs: dict[str, BaseModel] = field(default_factory=dict)
    escalations: int = 0


class Pipeline:
    """Stages run in order; each stage's output is the next stage's input (validated)."""

    def __init__(self, stages: Sequence[Stage | Agent[Any, Any] | FunctionAgent[Any, Any]]) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = [s if isinstance(s, Stage) else Stage(s) for s in stages]

    async def run(self, ctx: RunContext, payload: Any) -> PipelineResult:
        """Run the stages in order.

        Raises:
            TakenOverError: a human took the run over from an escalated stage.
            LimitError: a guard stopped the run (budget, loops, kill switch).
        """
        current: Any = payload
        best: BaseModel | None = None
        repairs = escalations = 0
        outputs: dict[str, BaseModel] = {}
        sender: str | None = None  # the first stage hears from the workflow
        for stage in self.stages:
            name = stage.agent.name
            rejections: list[Rejection] = []
            while True:
                try:
                    output = await ctx.call(
                        stage.agent, current, sender=sender, rejections=rejections
                    )
                except AgentError as exc:
                    return PipelineResult(
                        status="failed",
                        output=best,
                        stage=name,
                        reason=exc.reason,
                        error=exc,
                        repairs=repairs,
                        outputs=outputs,
                        escalations=escalations,
                    )
                decision = stage.gate(output) if stage.gate else Gate.ok()
                if decision.verdict == "repair" and len(rejections) < stage.max_repairs:
                    rejections.append(Rejection(answer=output, reason=decision.reason))
                    repairs += 1
                    continue
                break
            if decision.verdict == "repair":
                return PipelineResult(
                    status="failed",
                    output=best,
                    stage=name,
                    reason=(
                        f"gate still rejects after {stage.max_repairs} repair(s): {decision.reason}"
                    ),
                    repairs=repairs,
                    outputs=outputs,
                    escalations=escalations,
                )
            if decision.verdict == "escalate" and ctx.has_inbox:
                try:
                    output = await ctx.escalate(
                        stage.agent, current, reason=decision.reason, proposed=output
                    )
                except RejectedError as exc:
                    outputs[name] = output
                    return PipelineResult(
                        status="escalated",
                        output=output,
                        stage=name,
                        reason=f"{decision.reason} ({exc})",
                        repairs=repairs,
                        outputs=outputs,
                        escalations=escalations,
                    )
                escalations += 1
                decision = Gate.ok()
            outputs[name] = output
            if decision.verdict in ("stop", "escalate"):
                return PipelineResult(
                    status="stopped" if decision.verdict == "stop" else "escalated",
                    output=output,
                    stage=name,
                    reason=decision.reason,
                    repairs=repairs,
                    outputs=outputs,
                    escalations=escalations,
                )
            best = current = output
            sender = name
        return PipelineResult(
            status="completed",
            output=best,
            stage=self.stages[-1].agent.name,
            repairs=repairs,
            outputs=outputs,
            escalations=escalations,
        )
