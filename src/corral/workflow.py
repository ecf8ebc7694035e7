"""Workflows and the run context they receive.

A workflow is an `async def (ctx, payload) -> output` registered by name. Control flow is code;
the context is how that code reaches agents, tools and parallelism, and every such call is a
checkpointed step of the run.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, get_type_hints, overload

from pydantic import BaseModel

from corral._agent_call import AgentCall, audit_refusal
from corral._finish import WorkflowEnd, finish
from corral._human_steps import approve_value, escalate_to_human
from corral._services import Auditor, RunServices
from corral.agent import Agent, FunctionAgent, Rejection
from corral.contracts import JsonValue, dump_payload, model_json, validate_payload
from corral.errors import (
    AgentError,
    CorralError,
    KilledError,
    LimitError,
    LoopDetectedError,
    PayloadError,
    ProviderError,
    RejectedError,
    UsageError,
)
from corral.model import Model, Usage
from corral.tool import ArgLimits, Tool, ToolArgumentsError
from corral.trace import Span

__all__ = ["Auditor", "CannotAnswer", "RunContext", "Workflow"]

log = logging.getLogger(__name__)

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)
T = TypeVar("T")
WorkflowFn = Callable[["RunContext", Any], Awaitable[Any]]

_depth: contextvars.ContextVar[int] = contextvars.ContextVar("corral_call_depth", default=0)
"""How many agent calls of this run enclose the current one (delegation depth)."""


_NOT_FINISHED = {"code": "workflow_error", "message": "did not finish"}


@dataclass(frozen=True, slots=True, kw_only=True)
class CannotAnswer:
    """An agent (and its fallback) could not produce a valid output: an explicit outcome, so the
    workflow decides what to do (escalate, skip, stop) instead of receiving a guess."""

    agent: str
    code: str
    reason: str
    error: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Workflow:
    """A registered workflow: its name, function and the types at each end."""

    name: str
    fn: WorkflowFn
    input: type[BaseModel]
    output: type[BaseModel] | None

    @classmethod
    def from_function(cls, fn: WorkflowFn, name: str | None = None) -> Workflow:
        """Read the input and output types from `async def wf(ctx, payload: In) -> Out`.

        Raises:
            TypeError: the function is not async or its payload is not a Pydantic model.
        """
        wf_name = name or fn.__name__
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"workflow {wf_name!r} must be an async function")
        params = list(inspect.signature(fn).parameters)
        if len(params) != 2:
            raise TypeError(f"workflow {wf_name!r} must take (ctx, payload)")
        hints = get_type_hints(fn)
        in_type = hints.get(params[1])
        if not (isinstance(in_type, type) and issubclass(in_type, BaseModel)):
            raise TypeError(
                f"workflow {wf_name!r}: annotate the payload with a Pydantic model, got {in_type!r}"
            )
        out_type = hints.get("return")
        is_model = isinstance(out_type, type) and issubclass(out_type, BaseModel)
        return cls(name=wf_name, fn=fn, input=in_type, output=out_type if is_model else None)


class RunContext:
    """What a workflow uses to call agents and tools. One per run; created by the app.

    Attributes:
        run_id: This run's id (also the envelope correlation id).
        workflow: The workflow's name.
        user: Who the run is for, if given.
        tenant: The tenant the run is billed to, if given.
        tags: Free-form labels given at start.
    """

    def __init__(
        self,
        run: RunServices,
        *,
        workflow: str,
        user: str | None = None,
        tenant: str | None = None,
        tags: tuple[str, ...] = (),
    ) -> None:
        self.run_id = run.run_id
        self.workflow = workflow
        self.user = user
        self.tenant = tenant
        self.tags = tags
        self._run = run
        self._seq = itertools.count(1)
        self._prefix = ""
        self._parent_step: str | None = None
        """The step of the sub-workflow this context runs (None at the top): spans' parent."""
        self.stats = run.stats
        self.guards = run.guards
        """This run's budget and loop guard (and, through `guards.guards`, the app's)."""

    @property
    def best(self) -> tuple[str, JsonValue] | None:
        """(agent, output) of the latest valid agent output, or what the workflow `offer`ed:
        returned as the partial result when a budget stops the run."""
        found = self.stats.best
        if found is None:
            return None
        source, value = found
        # Kept as the model and dumped only when asked: most runs never need it.
        return source, value.model_dump(mode="json") if isinstance(value, BaseModel) else value

    @property
    def has_inbox(self) -> bool:
        """Whether this run can wait for a human (`approve`, `escalate`): true in an open app,
        whose human requests go to the inbox (`corral inbox`, the dashboard)."""
        return self._run.humans is not None

    @property
    def budget(self) -> dict[str, str | None]:
        """What is left of this run's budget, per dimension (None: no limit)."""
        return self.guards.budget.remaining()

    def offer(self, value: BaseModel | JsonValue, *, source: str = "workflow") -> None:
        """Declare `value` the best result so far (returned if a budget stops the run)."""
        data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        self.stats.best = (source, data)

    @property
    def usage(self) -> Usage:
        """Tokens, calls and cost of this run so far (replayed steps included)."""
        return self.stats.usage

    def _next_step_id(self) -> str:
        # Taken synchronously when a call starts, before any await, so ids follow program order
        # even under `parallel`: the same run always numbers its calls the same way.
        return f"{self._prefix}{next(self._seq)}"

    async def subflow(self, workflow: str, payload: BaseModel | dict[str, Any] | str) -> Any:
        """Run another registered workflow inside this run, as a child.

        The child shares this run's budget (it draws from the same dollars), loop guard, kill
        switch, journal and trace; its steps are numbered under this step (`5.1`, `5.2`, ...), so
        it resumes after a crash like the rest of the run. Nesting counts toward the delegation
        depth limit, so a workflow that calls itself forever is stopped.

        Raises:
            UnknownNameError: no workflow with that name.
            AgentError: the payload or the child's output does not fit its schema
                (`invalid_input` / `invalid_output`).
            LoopDetectedError: nested deeper than `LoopPolicy.max_depth`.
        """
        step_id = self._next_step_id()
        if self._run.resolve_workflow is None:
            raise UsageError("this run context cannot start sub-workflows")
        wf = self._run.resolve_workflow(workflow)
        checked = validate_payload(
            wf.input, payload, agent=wf.name, code="invalid_input", role="input of workflow"
        )
        depth = _depth.get() + 1
        limit = self.guards.loops.policy.max_depth
        if depth > limit:
            raise LoopDetectedError(
                f"sub-workflow {wf.name!r} at depth {depth} exceeds {limit}",
                kind="recursion",
                depth=depth,
                limit=limit,
            )
        child = copy.copy(self)  # shares the journal, recorder, guards and stats
        child.workflow = wf.name
        child._seq = itertools.count(1)
        child._prefix = f"{step_id}."
        child._parent_step = step_id
        token = _depth.set(depth)
        clock = self._run.clock
        started, t0 = clock.now(), clock.monotonic()
        end: WorkflowEnd | None = None
        try:
            end = await finish(wf, child, checked)
        finally:
            _depth.reset(token)
            failed = end is None or end.status != "succeeded"
            await self._run.recorder.record_span(
                Span(
                    run_id=self.run_id,
                    step_id=step_id,
                    parent_id=self._parent_step,
                    kind="workflow",
                    name=wf.name,
                    agent=None,
                    input=dump_payload(checked),
                    output=end.output if end is not None and not failed else None,
                    error=_NOT_FINISHED if end is None else end.error,
                    status="error" if failed else "ok",
                    latency_ms=(clock.monotonic() - t0) * 1000,
                    started_at=started,
                )
            )
        if end.raised is not None:
            raise end.raised
        return end.value

    async def call(
        self,
        agent: Agent[In, Out] | FunctionAgent[In, Out],
        payload: In | dict[str, Any] | str,
        *,
        sender: str | None = None,
        rejections: Sequence[Rejection] = (),
    ) -> Out:
        """Hand `payload` to `agent` and return its validated output.

        The payload is validated against the agent's input schema first; the answer against its
        output schema. If the agent fails and names a fallback, the fallback is tried. An agent
        with an `escalation` policy sends its hard cases (low confidence, no valid answer, and,
        if asked, a guard's refusal) to a human and returns the human's answer instead.

        `rejections` asks again after earlier answers were rejected: the model sees each rejected
        answer and its reason (`Rejection`), so it can fix what was wrong instead of repeating
        itself; the loop guard counts such a call apart from a plain repeat of the same input.

        Raises:
            AgentError: invalid input, or the agent (and its fallback) could not produce a valid
                output. Never returns unvalidated data.
            TakenOverError: a human took the escalated run over.
            RejectedError: a human declined a low-confidence escalation.
        """
        step_id = self._next_step_id()
        policy = agent.escalation
        try:
            try:
                output = await self._call_one(
                    agent, payload, step_id, sender or self.workflow, rejections
                )
            except AgentError as first:
                if agent.fallback is None or first.code == "invalid_input":
                    raise
                output = await self._fallback(
                    agent, agent.fallback, payload, step_id, first, rejections
                )
        except AgentError as exc:
            if policy is None or not policy.on_failure or exc.code == "invalid_input":
                raise
            return await self._escalate(
                agent, payload, f"{step_id}.e", f"cannot answer ({exc.code}): {exc.reason}", exc
            )
        except LimitError as exc:
            if policy is None or not policy.on_guard_stop or isinstance(exc, KilledError):
                raise
            return await self._escalate(
                agent, payload, f"{step_id}.e", f"stopped by a guard: {exc}", exc
            )
        if policy is not None and (low := policy.low_confidence(output)) is not None:
            return await self._escalate(
                agent,
                payload,
                f"{step_id}.e",
                f"confidence {low:g} is below {policy.min_confidence:g}",
                None,
                proposed=output,
            )
        return output

    async def _fallback(
        self,
        agent: Agent[In, Out] | FunctionAgent[In, Out],
        fallback: Agent[In, Out] | FunctionAgent[In, Out],
        payload: In | dict[str, Any] | str,
        step_id: str,
        first: AgentError,
        rejections: Sequence[Rejection],
    ) -> Out:
        """`agent` failed with `first`: its fallback agent answers instead (step `<id>.f`), told
        about the same rejected answers."""
        log.warning(
            "agent %s failed (%s); trying fallback %s",
            agent.name,
            first.code,
            fallback.name,
            extra={"run_id": self.run_id, "agent": agent.name},
        )
        return await self._call_one(fallback, payload, f"{step_id}.f", agent.name, rejections)

    async def escalate(
        self,
        agent: Agent[In, Out] | FunctionAgent[In, Out],
        payload: In | dict[str, Any] | str,
        *,
        reason: str,
        proposed: Out | None = None,
    ) -> Out:
        """Ask a human to answer for `agent` (a policy case, a decision code should not make).

        The request carries the agent's input, `reason` and `proposed` (a draft the human may
        accept as is); the run waits durably. The answer is validated against the agent's output
        schema and returned as the agent's output.

        Raises:
            TakenOverError: the human took the run over (it ends `taken_over`).
            RejectedError: the human declined to answer (or the wait timed out with `reject`).
        """
        return await self._escalate(
            agent, payload, self._next_step_id(), reason, None, proposed=proposed
        )

    async def _escalate(
        self,
        agent: Agent[In, Out] | FunctionAgent[In, Out],
        payload: In | dict[str, Any] | str,
        step_id: str,
        reason: str,
        error: CorralError | None,
        *,
        proposed: Out | None = None,
    ) -> Out:
        return await escalate_to_human(
            self._run,
            agent,
            payload,
            step_id,
            reason,
            error,
            workflow=self.workflow,
            parent_id=self._parent_step,
            proposed=proposed,
        )

    async def approve(
        self,
        value: T,
        *,
        title: str | None = None,
        subject: str | None = None,
        timeout_s: float | None = None,
        default: Literal["reject", "approve"] = "reject",
    ) -> T:
        """Wait (durably) for a human to approve `value`: the task at the start of a workflow, the
        final output at its end, any decision in between. One line:
        `reply = await ctx.approve(reply)`.

        A Pydantic `value` can be edited by the approver; the edit is validated against its
        schema and returned in its place.

        Raises:
            RejectedError: rejected, or not decided within `timeout_s` with `default="reject"`.
        """
        return await approve_value(
            self._run,
            value,
            self._next_step_id(),
            workflow=self.workflow,
            parent_id=self._parent_step,
            title=title,
            subject=subject,
            timeout_s=timeout_s,
            default=default,
        )

    async def _call_one(
        self,
        agent: Agent[In, Out] | FunctionAgent[In, Out],
        payload: In | dict[str, Any] | str,
        step_id: str,
        sender: str,
        rejections: Sequence[Rejection] = (),
    ) -> Out:
        if type(payload) is agent.input:
            # The usual handoff: one agent's output is the next one's input. Its JSON is what
            # the prompt and the loop guard use, and validating that JSON re-checks the instance
            # (it may have been mutated or built with `model_construct`): no Python dump too.
            payload_json = model_json(payload)
            checked = validate_payload(
                agent.input, payload_json, agent=agent.name, code="invalid_input", role="input of"
            )
        else:
            checked = validate_payload(
                agent.input, payload, agent=agent.name, code="invalid_input", role="input of"
            )
            payload_json = model_json(checked)
        run = self.guards
        depth = _depth.get() + 1
        kill = run.guards.kill
        if kill.engaged:
            await kill.gate(self.run_id, agent.name)
        # The loop guard's keys live in this process only (a resumed run re-executes and
        # rebuilds them), so the string's own hash is enough: no digest per call.
        # A call after rejected answers asks something new: keyed apart from a plain repeat.
        run.loops.on_call(
            agent.name,
            hash((payload_json, *(r.reason for r in rejections)))
            if rejections
            else hash(payload_json),
            depth,
        )
        run.budget.take_turn()
        # Only user code running inside the call (a function agent, a tool) can nest further
        # calls; an LLM agent without tools skips the context variable (a new mapping per set).
        nests = isinstance(agent, FunctionAgent) or bool(agent.tools)
        token = _depth.set(depth) if nests else None
        call = AgentCall(
            self._run,
            agent,
            checked,
            payload_json,
            step_id,
            sender,
            self.workflow,
            self._parent_step,
        )
        call.rejections = rejections
        try:
            # The agent kind's own loop, awaited here: no dispatching coroutine in between.
            if isinstance(agent, FunctionAgent):
                output = await call.run_function(agent)
            else:
                output = await call.run_llm(agent)
        except AgentError:
            self.stats.failures += 1
            raise
        finally:
            if token is not None:
                _depth.reset(token)
        self.stats.best = (agent.name, output)
        run.loops.on_output(agent.name, hash(model_json(output)))
        return output

    async def try_call(
        self,
        agent: Agent[In, Out] | FunctionAgent[In, Out],
        payload: In | dict[str, Any] | str,
        *,
        sender: str | None = None,
    ) -> Out | CannotAnswer:
        """Like `call`, but an agent that cannot answer (after retries, fallback models and its
        fallback agent) returns a `CannotAnswer` instead of raising.

        Raises:
            LimitError: a guard stopped the run (budget, loop, kill switch): not the agent's
                failure, so it is not turned into an outcome.
        """
        try:
            return await self.call(agent, payload, sender=sender)
        except AgentError as exc:
            return CannotAnswer(
                agent=exc.agent, code=exc.code, reason=exc.reason, error=exc.to_dict()
            )

    async def tool(self, tool: Tool, /, **arguments: Any) -> JsonValue:
        """Call a tool directly from workflow code, as a checkpointed step.

        A tool with an approval policy waits here for a human when the policy says so; an edited
        approval runs with the edited arguments.

        Raises:
            PayloadError: the arguments do not fit the tool's signature (or its sanitizing).
            RejectedError: the call needed approval and a human rejected it (it did not run).
            ProviderError: the tool raised; `provider` is `tool:<name>`.
        """
        step_id = self._next_step_id()
        await self.guards.guards.kill.gate(self.run_id, f"tool:{tool.name}")
        try:
            parsed = tool.validate(arguments, ArgLimits.of(self._run.human_policy))
        except ToolArgumentsError as exc:
            await audit_refusal(
                self._run, tool, arguments, exc, actor=f"workflow:{self.workflow}", step_id=step_id
            )
            raise PayloadError(str(exc), errors=list(exc.errors)) from exc
        outcome = await AgentCall.tool_step(
            run=self._run,
            workflow=self.workflow,
            tool=tool,
            arguments=tool.arguments_of(parsed),
            step_id=step_id,
            parent_id=self._parent_step,
            agent=None,
        )
        error = outcome.get("error")
        if error is not None and error.get("type") == "rejected":
            raise RejectedError(
                f"the call of tool {tool.name!r}",
                request_id=error["request_id"],
                by=error.get("by"),
                comment=error.get("comment", ""),
            )
        if "error" in outcome:
            raise ProviderError(
                f"tool {tool.name!r} failed: {outcome['error']['message']}",
                retryable=False,
                provider=f"tool:{tool.name}",
            )
        return outcome["result"]

    @overload
    async def parallel(
        self, *calls: Coroutine[Any, Any, T], errors: Literal["raise"] = "raise"
    ) -> list[T]: ...

    @overload
    async def parallel(
        self, *calls: Coroutine[Any, Any, T], errors: Literal["return"]
    ) -> list[T | AgentError]: ...

    async def parallel(
        self, *calls: Coroutine[Any, Any, T], errors: Literal["raise", "return"] = "raise"
    ) -> list[T] | list[T | AgentError]:
        """Run calls concurrently and return their results in the order given.

        Args:
            calls: Un-awaited `ctx.call(...)` / `ctx.tool(...)` coroutines.
            errors: `raise` re-raises the first `AgentError` after all calls settle; `return`
                puts each `AgentError` in its slot so the caller can decide (other exceptions
                always propagate).
        """
        tasks: list[asyncio.Task[T | CorralError]] = []
        async with asyncio.TaskGroup() as group:
            for coro in calls:
                tasks.append(group.create_task(_settle(coro)))
        settled = [task.result() for task in tasks]
        # A guard refusal stops the run, but only after every branch has settled: calls already
        # in flight keep what they paid for instead of being thrown away.
        for item in settled:
            if isinstance(item, LimitError):
                raise item
        # Only values and AgentErrors are left (`_settle` catches nothing else).
        results = cast(list[T | AgentError], settled)
        if errors == "raise":
            for item in results:
                if isinstance(item, AgentError):
                    raise item
        return results

    def model(self, name: str) -> Model:
        """The model a tier or model name resolves to in this app.

        Raises:
            UnknownNameError: no such tier or provider.
        """
        return self._run.resolve_model(name)


async def _settle(coro: Coroutine[Any, Any, T]) -> T | CorralError:
    try:
        return await coro
    except (AgentError, LimitError) as exc:
        return exc
