"""Supervisor: plan -> delegate -> monitor -> synthesize, as an explicit state machine.

The planner turns a goal into tasks; workers run them in parallel; the monitor sees each worker's
structured outcome (output or `AgentError`, never an exception) and re-delegates failed tasks up to
`max_retries`; the synthesizer combines what succeeded. Every state change is recorded in
`SupervisorResult.transitions`, so a run's control flow is inspectable after the fact.

Example:
    ```python
    supervisor = Supervisor(
        planner=planner, workers={"search": searcher, "math": calculator}, synthesizer=writer,
        tasks=lambda plan: [Task(worker=s.worker, payload=s.question) for s in plan.steps],
        synthesis_input=lambda goal, outcomes: Findings(goal=goal.text, notes=[...]),
    )
    result = await supervisor.run(ctx, goal)
    ```
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from corral.agent import Agent, FunctionAgent
from corral.errors import AgentError
from corral.workflow import RunContext

__all__ = ["Supervisor", "SupervisorResult", "Task", "TaskOutcome"]

State = Literal["plan", "delegate", "monitor", "synthesize", "done", "failed"]
AnyAgent = Agent[Any, Any] | FunctionAgent[Any, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """One unit of delegated work: which worker, with what payload."""

    worker: str
    payload: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOutcome:
    """What a worker produced for a task: an output or a structured error."""

    task: Task
    output: BaseModel | None = None
    error: AgentError | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorResult:
    """How the supervision ended, with every outcome and state transition."""

    status: Literal["done", "failed"]
    output: BaseModel | None
    outcomes: list[TaskOutcome]
    transitions: list[str] = field(default_factory=list)
    error: AgentError | None = None


class Supervisor:
    """Plan, delegate in parallel, monitor, synthesize."""

    def __init__(
        self,
        *,
        planner: AnyAgent,
        workers: Mapping[str, AnyAgent],
        synthesizer: AnyAgent,
        tasks: Callable[[Any], list[Task]],
        synthesis_input: Callable[[Any, list[TaskOutcome]], Any],
        max_retries: int = 1,
        max_tasks: int = 8,
    ) -> None:
        self.planner = planner
        self.workers = dict(workers)
        self.synthesizer = synthesizer
        self.tasks = tasks
        self.synthesis_input = synthesis_input
        self.max_retries = max_retries
        self.max_tasks = max_tasks

    async def run(self, ctx: RunContext, goal: Any) -> SupervisorResult:
        state: State = "plan"
        transitions: list[str] = []
        outcomes: list[TaskOutcome] = []
        pending: list[TaskOutcome] = []
        output: BaseModel | None = None
        error: AgentError | None = None

        def move(to: State, why: str = "") -> State:
            transitions.append(f"{state}->{to}" + (f" ({why})" if why else ""))
            return to

        while state not in ("done", "failed"):
            if state == "plan":
                try:
                    plan = await ctx.call(self.planner, goal)
                except AgentError as exc:
                    error, state = exc, move("failed", exc.code)
                    continue
                planned = self.tasks(plan)[: self.max_tasks]
                if not planned:
                    error = AgentError(
                        "the plan has no tasks", agent=self.planner.name, code="empty_plan"
                    )
                    state = move("failed", "empty plan")
                    continue
                pending = [TaskOutcome(task=t, attempts=0) for t in planned]
                state = move("delegate", f"{len(planned)} tasks")
            elif state == "delegate":
                pending = await ctx.parallel(*(self._attempt(ctx, o) for o in pending))
                state = move("monitor")
            elif state == "monitor":
                retry = [
                    o
                    for o in pending
                    if not o.ok
                    and o.attempts <= self.max_retries
                    and o.error is not None
                    and o.error.code != "unknown_worker"
                ]
                done = [o for o in pending if o not in retry]
                outcomes.extend(done)
                if retry:
                    pending = retry
                    state = move("delegate", f"retry {len(retry)}")
                elif not any(o.ok for o in outcomes):
                    error = AgentError(
                        "every task failed",
                        agent=self.synthesizer.name,
                        code="all_tasks_failed",
                        details={"errors": [o.error.to_dict() for o in outcomes if o.error]},
                    )
                    state = move("failed", "all tasks failed")
                else:
                    state = move("synthesize", f"{sum(o.ok for o in outcomes)}/{len(outcomes)} ok")
            elif state == "synthesize":
                try:
                    output = await ctx.call(
                        self.synthesizer,
                        self.synthesis_input(goal, outcomes),
                        sender=self.planner.name,
                    )
                except AgentError as exc:
                    error, state = exc, move("failed", exc.code)
                    continue
                state = move("done")
        return SupervisorResult(
            status="done" if state == "done" else "failed",
            output=output,
            outcomes=outcomes,
            transitions=transitions,
            error=error,
        )

    async def _attempt(self, ctx: RunContext, previous: TaskOutcome) -> TaskOutcome:
        task = previous.task
        worker = self.workers.get(task.worker)
        attempts = previous.attempts + 1
        if worker is None:
            known = ", ".join(sorted(self.workers))
            return TaskOutcome(
                task=task,
                attempts=attempts,
                error=AgentError(
                    f"the plan names worker {task.worker!r}, which does not exist (known: {known})",
                    agent=self.planner.name,
                    code="unknown_worker",
                ),
            )
        try:
            return TaskOutcome(
                task=task,
                attempts=attempts,
                output=await ctx.call(worker, task.payload, sender=self.planner.name),
            )
        except AgentError as exc:
            return TaskOutcome(task=task, attempts=attempts, error=exc)
