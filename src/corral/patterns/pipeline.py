"""Pipeline: agents in sequence, with a validation gate after each stage.

A gate looks at a stage's (already schema-valid) output and decides: pass it on, stop the
pipeline, repair (run the stage again, up to `max_repairs`), or escalate to a human. Stopping and
escalating are outcomes in the `PipelineResult`, not exceptions.

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

from corral.agent import Agent, FunctionAgent
from corral.errors import AgentError
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
        return cls(verdict="repair", reason=reason)

    @classmethod
    def escalate(cls, reason: str) -> Gate:
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
    best result so far); `stage` names where it ended; `error` is the structured agent error.
    """

    status: Literal["completed", "stopped", "escalated", "failed"]
    output: BaseModel | None
    stage: str | None = None
    reason: str = ""
    error: AgentError | None = None
    repairs: int = 0
    outputs: dict[str, BaseModel] = field(default_factory=dict)


class Pipeline:
    """Stages run in order; each stage's output is the next stage's input (validated)."""

    def __init__(self, stages: Sequence[Stage | Agent[Any, Any] | FunctionAgent[Any, Any]]) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = [s if isinstance(s, Stage) else Stage(s) for s in stages]

    async def run(self, ctx: RunContext, payload: Any) -> PipelineResult:
        current: Any = payload
        best: BaseModel | None = None
        repairs = 0
        outputs: dict[str, BaseModel] = {}
        sender: str | None = None  # the first stage hears from the workflow
        for stage in self.stages:
            name = stage.agent.name
            attempt = 0
            while True:
                try:
                    output = await ctx.call(stage.agent, current, sender=sender)
                except AgentError as exc:
                    return PipelineResult(
                        status="failed",
                        output=best,
                        stage=name,
                        reason=exc.reason,
                        error=exc,
                        repairs=repairs,
                        outputs=outputs,
                    )
                decision = stage.gate(output) if stage.gate else Gate.ok()
                if decision.verdict == "repair" and attempt < stage.max_repairs:
                    attempt += 1
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
                )
            outputs[name] = output
            if decision.verdict in ("stop", "escalate"):
                return PipelineResult(
                    status="stopped" if decision.verdict == "stop" else "escalated",
                    output=output,
                    stage=name,
                    reason=decision.reason,
                    repairs=repairs,
                    outputs=outputs,
                )
            best = current = output
            sender = name
        return PipelineResult(
            status="completed",
            output=best,
            stage=self.stages[-1].agent.name,
            repairs=repairs,
            outputs=outputs,
        )
