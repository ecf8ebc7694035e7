"""One agent call: the model/tool loop, output validation and the bounded repair.

Each model call and each tool call is its own journaled step (`<call>.1`, `<call>.2`, ...), so a
crash mid-agent resumes after the last completed model call instead of paying for it again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar, cast

from pydantic import BaseModel

from corral._human_steps import wait_for_human
from corral._services import RunServices
from corral.agent import Agent, FunctionAgent, Rejection
from corral.clock import Clock
from corral.contracts import JsonValue, RunId, dump_payload, validate_payload
from corral.durable import EphemeralJournal, Journal
from corral.errors import (
    AgentError,
    BudgetExhaustedError,
    CircuitOpenError,
    LimitError,
    ProviderError,
    RejectedError,
    StateError,
    TakenOverError,
    UsageError,
)
from corral.guards.budget import Cost
from corral.guards.chain import GuardEvent, ModelCall
from corral.guards.router import AUTO, RouteInput, route, schema_shape
from corral.model import Message, Model, ModelRequest, ModelResponse, ToolCall, Usage
from corral.tool import ArgLimits, Tool, ToolArgumentsError
from corral.trace import Recorder, Span, SpanKind, SpanStatus, keeps_spans

log = logging.getLogger(__name__)

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)

_ZERO = Decimal(0)
_NO_USAGE = Usage()

_REPAIR_PROMPT = (
    "Your previous answer was rejected: {errors}. Reply again with only one JSON object that "
    "matches the schema exactly."
)


class AgentCall(Generic[In, Out]):
    """Runs one call of one agent inside a run. Internal to `RunContext.call`."""

    def __init__(
        self,
        run: RunServices,
        agent: Agent[In, Out] | FunctionAgent[In, Out],
        payload: In,
        payload_json: str,
        step_id: str,
        sender: str,
        workflow: str,
        parent_id: str | None,
    ) -> None:
        # Positional: one is built per agent call (keyword matching is not free).
        self.run = run
        self.agent = agent
        self.payload = payload
        self.payload_json = payload_json
        self.step_id = step_id
        self.sender = sender
        self.workflow = workflow
        self.parent_id = parent_id
        """The step of the sub-workflow making the call (None at the top): the span's parent."""
        self.journal: Journal = run.journal
        self.recorder: Recorder = run.recorder
        self.clock: Clock = run.clock
        self.timeout_s: float = run.call_timeout_s
        self._inner = 0
        self._model_step_id = ""
        """The model step in progress (guard events are recorded under it)."""
        self._events = 0
        self._cost = _ZERO  # what the current model step's answer cost
        self.usage = _NO_USAGE  # frozen: replaced (not mutated) as model calls add up
        self.last_model: str | None = None
        self.recording: bool = run.recording
        """Spans are kept: without a recorder, building them (and reading the clock) is skipped."""
        self.rejections: Sequence[Rejection] = ()
        """Earlier answers that were rejected, and why: the model sees them after the payload."""

    def _next_inner(self) -> str:
        self._inner += 1
        return f"{self.step_id}.{self._inner}"

    async def run_function(self, agent: FunctionAgent[In, Out]) -> Out:
        payload_json = dump_payload(self.payload)

        async def step() -> JsonValue:
            started, t0 = self.clock.now(), self.clock.monotonic()
            status: SpanStatus = "ok"
            try:
                result = await agent.run(self.payload)
                output = validate_payload(
                    agent.output, result, agent=agent.name, code="invalid_output", role="output of"
                )
            except AgentError as exc:
                outcome: dict[str, Any] = {"error": exc.to_dict()}
                status = "invalid_output" if exc.code == "invalid_output" else "error"
            except (LimitError, RejectedError, TakenOverError, UsageError, StateError):
                raise  # a guard's refusal, a human's decision or a bug: not the agent's failure
            except Exception as exc:  # boundary: the user's function keeps the agent contract
                outcome = {"error": function_error(agent.name, exc).to_dict()}
                status = "error"
            else:
                outcome = {"output": dump_payload(output)}
            await self._record(
                kind="agent",
                step_id=self.step_id,
                parent_id=self.parent_id,
                name=agent.name,
                input=payload_json,
                output=outcome.get("output"),
                error=outcome.get("error"),
                status=status,
                started=started,
                t0=t0,
                attrs={"from": self.sender},
            )
            return outcome

        outcome = await self.journal.step(self.step_id, f"agent:{agent.name}", step)
        if "error" in outcome:
            raise AgentError.from_dict(outcome["error"])
        return agent.output.model_validate(outcome["output"])

    async def run_llm(self, agent: Agent[In, Out]) -> Out:
        messages = agent.messages(self.payload, self.payload_json, self.rejections)
        limits = agent.limits
        rounds = repairs = invalid_calls = 0
        ephemeral = isinstance(self.journal, EphemeralJournal)
        started, t0 = (self.clock.now(), self.clock.monotonic()) if self.recording else (None, 0.0)
        try:
            while True:
                # One model step, its parts awaited here (no coroutine of its own per step).
                allow_tools = rounds < limits.max_tool_rounds
                step_id = self._model_step_id = self._next_inner()
                self._events = 0  # guard events of this step (their span ids)
                tier = agent.model
                if tier == AUTO or self.run.guards.budget.should_degrade:
                    tier = await self._choose_tier(agent, messages, allow_tools)
                while True:
                    models, request = self._request(agent, step_id, tier, messages, allow_tools)
                    try:
                        if ephemeral:  # nothing to journal: no step bookkeeping (no JSON form)
                            answer = await self._call_models(agent, models, request, messages, tier)
                        else:
                            answer = await self._journaled_call(
                                agent, models, request, messages, tier
                            )
                        break
                    except BudgetExhaustedError as exc:
                        tier = await self._cheaper_after(exc, tier)  # or raises `exc`
                response = self._answered(agent, answer)
                if response.tool_calls and rounds < limits.max_tool_rounds:
                    rounds += 1
                    messages.append(
                        Message(
                            role="assistant", content=response.text, tool_calls=response.tool_calls
                        )
                    )
                    for tool_call in response.tool_calls:
                        content, ok = await self._tool_call(agent, tool_call)
                        invalid_calls += 0 if ok else 1
                        messages.append(
                            Message(role="tool", content=content, tool_call_id=tool_call.id)
                        )
                    if invalid_calls > limits.max_invalid_tool_calls:
                        raise AgentError(
                            f"{invalid_calls} tool calls had invalid arguments "
                            f"(limit {limits.max_invalid_tool_calls})",
                            agent=agent.name,
                            code="tool_error",
                        )
                    continue
                try:
                    output = validate_payload(
                        agent.output,
                        _json_text(response.text),
                        agent=agent.name,
                        code="invalid_output",
                        role="output of",
                    )
                except AgentError as exc:
                    if repairs >= limits.max_repairs:
                        raise
                    repairs += 1
                    self.run.stats.repairs += 1
                    messages.append(Message(role="assistant", content=response.text))
                    messages.append(
                        Message(role="user", content=_REPAIR_PROMPT.format(errors=exc.reason))
                    )
                    continue
                if self.recording:
                    await self._agent_span(
                        agent,
                        started,
                        t0,
                        output=output,
                        attrs=_loop_attrs(rounds, repairs, invalid_calls),
                    )
                return output
        except (AgentError, LimitError, asyncio.CancelledError) as exc:
            # A refused call (budget, rate limit, loop, kill switch...) or one cancelled (the
            # run's deadline, a sibling's failure) ends the agent call too: its span holds the
            # guard spans already recorded (a trace with no parent for them shows them detached
            # in an OTLP backend, and at the root of `corral show`).
            await self._agent_span(
                agent,
                started,
                t0,
                error=_CANCELLED if isinstance(exc, asyncio.CancelledError) else exc.to_dict(),
                attrs=_loop_attrs(rounds, repairs, invalid_calls),
            )
            raise

    async def _agent_span(
        self,
        agent: Agent[In, Out],
        started: Any,
        t0: float,
        *,
        output: BaseModel | None = None,
        error: dict[str, Any] | None = None,
        attrs: dict[str, JsonValue] | None = None,
    ) -> None:
        if not self.recording:
            return
        spent = self.usage
        await self._record(
            kind="agent",
            step_id=self.step_id,
            parent_id=self.parent_id,
            name=agent.name,
            model=self.last_model,
            input=dump_payload(self.payload),
            output=dump_payload(output) if output is not None else None,
            error=error,
            status="ok" if error is None else "error",
            started=started,
            t0=t0,
            tokens_in=spent.input_tokens,
            tokens_out=spent.output_tokens,
            cost_usd=spent.cost_usd,
            attrs={"from": self.sender, **(attrs or {})},
        )

    async def _emit(self, event: GuardEvent) -> None:
        """Log a guard's event and record it as a span under the current model step."""
        level = logging.WARNING if event.alert else logging.INFO
        agent = self.agent.name
        log.log(
            level,
            "guard %s for agent %s: %s",
            event.kind,
            agent,
            event.detail,
            extra={"run_id": self.run.run_id, "agent": agent},
        )
        self._events += 1
        await self._record(
            kind="guard",
            step_id=f"{self._model_step_id}.g{self._events}",
            parent_id=self._model_step_id,
            name=event.kind,
            output=event.detail,
            status="alert" if event.alert else "ok",
            started=self.clock.now(),
            t0=self.clock.monotonic(),
        )

    async def _choose_tier(
        self, agent: Agent[In, Out], messages: list[Message], allow_tools: bool
    ) -> str:
        """The tier of this model step when it is not simply the agent's own: routed (`auto`)
        and/or one cheaper past the budget's degrade point, each decision emitted."""
        run = self.run.guards
        tier = agent.model
        if tier == AUTO:
            tier, reason = route(
                run.guards.policies.router, tier, _route_input(agent, messages, allow_tools)
            )
            await self._emit(GuardEvent(kind="route", detail=reason or {}))
        if run.budget.should_degrade:
            cheaper = run.guards.cheaper_tier(tier)
            if cheaper is not None:
                await self._emit(
                    GuardEvent(
                        kind="degrade",
                        detail={
                            "from": tier,
                            "to": cheaper,
                            "budget_used": round(run.budget.fraction(), 3),
                        },
                    )
                )
                tier = cheaper
        return tier

    def _cheaper_tier(self, refused: LimitError, tier: str) -> str | None:
        """The tier to try after `refused` on `tier`: the next cheaper one when the run's own
        USD or token budget refused (a cheaper tier's worst case may fit), else None."""
        if (
            not isinstance(refused, BudgetExhaustedError)
            or refused.scope != "run"
            or refused.dimension not in ("usd", "tokens")
        ):
            return None
        return self.run.guards.guards.cheaper_tier(tier)

    async def _cheaper_after(self, refused: BudgetExhaustedError, tier: str) -> str:
        """The next cheaper tier to try when the run's budget has no room for `tier`'s worst
        case (a cheaper tier's may still fit, whatever the degrade point); raises `refused`
        when there is none, or when a cheaper tier cannot help (a call-count limit, a daily
        limit)."""
        run = self.run.guards
        cheaper = self._cheaper_tier(refused, tier)
        if cheaper is None:
            raise refused
        await self._emit(
            GuardEvent(
                kind="degrade",
                detail={
                    "from": tier,
                    "to": cheaper,
                    "reason": "does_not_fit",
                    "budget_used": round(run.budget.fraction(), 3),
                },
            )
        )
        return cheaper

    def _request(
        self,
        agent: Agent[In, Out],
        step_id: str,
        tier: str,
        messages: list[Message],
        allow_tools: bool,
    ) -> tuple[list[Model], ModelRequest]:
        """Model step `step_id`'s chain (`tier`'s models) and request."""
        models = self.run.resolve_chain(tier)
        request = ModelRequest._new(
            model=models[0].name,
            messages=tuple(messages),
            output_schema=agent.output_schema(),
            tools=tuple(t.spec for t in agent.tools) if allow_tools and agent.tools else (),
            max_output_tokens=agent.max_output_tokens,
            temperature=agent.temperature,
            metadata={"run_id": self.run.run_id, "agent": agent.name, "step_id": step_id},
        )
        return models, request

    def _answered(
        self, agent: Agent[In, Out], answer: ModelResponse | dict[str, Any]
    ) -> ModelResponse:
        """A model step's answer taken in: a response (answered in this process), or the
        journaled outcome (`{"response": ...}` replayed after a restart, or `{"error": ...}`,
        raised as an `AgentError`). Its usage is counted."""
        if isinstance(answer, ModelResponse):  # answered by `_call_models` in this step
            response, cost = answer, self._cost
        else:
            error = answer.get("error")
            if error is not None:
                code = "circuit_open" if error.get("code") == "circuit_open" else "provider_error"
                raise AgentError(
                    f"model call failed: {error.get('message')}",
                    agent=agent.name,
                    code=code,
                    retryable=bool(error.get("retryable")),
                    details=error,
                )
            response = _response_from_dict(answer["response"])
            cost = response.cost_usd or _ZERO
            # Replayed from the journal after a restart: the money was spent before the crash.
            self.run.guards.budget.charge(
                Cost(
                    usd=cost,
                    tokens=response.input_tokens + response.output_tokens,
                    model_calls=1,
                )
            )
        self.last_model = response.model
        self.run.stats.add(response.input_tokens, response.output_tokens, cost)
        if self.recording:  # the agent span's totals
            self.usage = self.usage + Usage(
                input_tokens=response.input_tokens,
                output_tokens=response.output_tokens,
                cost_usd=cost,
                calls=1,
            )
        return response

    async def _journaled_call(
        self,
        agent: Agent[In, Out],
        models: list[Model],
        request: ModelRequest,
        messages: list[Message],
        tier: str,
    ) -> ModelResponse | dict[str, Any]:
        """`_call_models` as a journaled step: the response object when it was answered in this
        process, else the journaled outcome (`{"response": ...}` replayed, or `{"error": ...}`).

        Its own method: the step's closure would give `run_llm` a cell per captured name."""
        fresh: ModelResponse | None = None

        async def step() -> JsonValue:
            nonlocal fresh
            answer = await self._call_models(agent, models, request, messages, tier)
            if isinstance(answer, dict):
                return answer
            fresh = answer
            return {"response": _response_dict(answer.with_cost(self._cost))}

        outcome = await self.journal.step(self._model_step_id, f"model:{agent.name}", step)
        return fresh if fresh is not None else cast(dict[str, Any], outcome)

    async def _call_models(
        self,
        agent: Agent[In, Out],
        models: list[Model],
        request: ModelRequest,
        messages: list[Message],
        tier: str,
    ) -> ModelResponse | dict[str, Any]:
        """One model step's call through the guard chain: the response, or `{"error": ...}` for
        a provider failure (journaled like an answer). A guard's refusal raises, after the
        refused step's model span is recorded (the parent of its guard spans)."""
        step_id = self._model_step_id
        started, t0 = (self.clock.now(), self.clock.monotonic()) if self.recording else (None, 0.0)
        caller = ModelCall(
            self.run.guards,
            agent.name,
            self.timeout_s,
            self._emit,
            agent.cache,
            agent.semantic_cache,
        )
        try:
            response = await caller.call(models, request)
            self._cost = caller.cost  # `response` is unpriced (see `ProviderStep`)
        except (ProviderError, CircuitOpenError) as exc:
            error = exc.to_dict()
            await self._failed_span(
                agent,
                models,
                messages,
                error,
                started,
                t0,
                tier,
                _model_attrs(caller, cached=False),
            )
            return {"error": error}
        except (LimitError, asyncio.CancelledError) as exc:
            # A refusal is not journaled: after a restart (or a raised limit) the guard decides
            # again. The refused or cancelled step still gets its model span (like a breaker's
            # refusal above): it is the parent of this step's guard spans (a retry, a queue
            # wait...), in the store and over OTLP.
            error = _CANCELLED if isinstance(exc, asyncio.CancelledError) else exc.to_dict()
            if isinstance(exc, LimitError):
                await self._emit(GuardEvent(kind="refused", detail=error, alert=True))
                if self._cheaper_tier(exc, tier) is not None:
                    raise  # the step goes on at a cheaper tier: its model span is that call's
            await self._failed_span(agent, models, messages, error, started, t0, tier, None)
            raise
        if self.recording:
            await self._record(
                kind="model",
                step_id=step_id,
                parent_id=self.step_id,
                name=agent.name,
                model=response.model,
                input=_span_messages(messages) if self.recording else None,
                output=response.text,
                started=started,
                t0=t0,
                tokens_in=response.input_tokens,
                tokens_out=response.output_tokens,
                cost_usd=self._cost,
                tier=tier,
                attrs=_model_attrs(caller, cached=response.cached),
            )
        return response

    async def _failed_span(
        self,
        agent: Agent[In, Out],
        models: list[Model],
        messages: list[Message],
        error: dict[str, Any],
        started: datetime | None,
        t0: float,
        tier: str,
        attrs: dict[str, JsonValue] | None,
    ) -> None:
        """The model span of a step that got no answer (a provider failure, a refusal, a
        cancellation): the parent of the step's guard spans."""
        await self._record(
            kind="model",
            step_id=self._model_step_id,
            parent_id=self.step_id,
            name=agent.name,
            model=models[0].name,
            input=_span_messages(messages) if self.recording else None,
            error=error,
            status="error",
            started=started,
            t0=t0,
            tier=tier,
            attrs=attrs,
        )

    async def _tool_call(self, agent: Agent[In, Out], call: ToolCall) -> tuple[str, bool]:
        """Run one model-proposed tool call; returns the tool message content and validity."""
        step_id = self._next_inner()
        tool = agent.tool_named(call.name)
        problem: dict[str, Any] | None = None
        if tool is None:
            problem = {
                "error": "unknown_tool",
                "message": f"there is no tool {call.name!r}",
                "known": [t.name for t in agent.tools],
            }
        else:
            try:
                parsed = tool.validate(call.arguments, ArgLimits.of(self.run.human_policy))
            except ToolArgumentsError as exc:
                problem = {"error": "invalid_arguments", "message": str(exc), "errors": exc.errors}
                await audit_refusal(
                    self.run,
                    tool,
                    call.arguments,
                    exc,
                    actor=f"agent:{agent.name}",
                    step_id=step_id,
                )
        if problem is not None:
            self.run.stats.invalid_tool_calls += 1
            now = self.clock.now()
            await self._record(
                kind="tool",
                step_id=step_id,
                parent_id=self.step_id,
                name=call.name,
                input=call.arguments,
                error=problem,
                status="invalid_args",
                started=now,
                t0=self.clock.monotonic(),
            )
            return json.dumps(problem), False
        assert tool is not None
        outcome = await self.tool_step(
            run=self.run,
            workflow=self.workflow,
            tool=tool,
            arguments=tool.arguments_of(parsed),
            step_id=step_id,
            parent_id=self.step_id,
            agent=agent.name,
        )
        return json.dumps(outcome), "error" not in outcome

    @staticmethod
    async def tool_step(
        *,
        run: RunServices,
        workflow: str,
        tool: Tool,
        arguments: dict[str, Any],
        step_id: str,
        parent_id: str | None,
        agent: str | None,
    ) -> dict[str, Any]:
        """Run a validated tool call as a journaled step, recording side effects by key.

        A call its tool's approval policy covers first waits (durably) for a human: a rejection
        comes back as an `{"error": {"type": "rejected", ...}}` outcome and the tool never runs;
        an edit replaces the arguments (validated and sanitized like the model's).
        """
        key = f"{run.run_id}:{step_id}"
        journal, recorder, clock = run.journal, run.recorder, run.clock
        limits = ArgLimits.of(run.human_policy)
        approved_by: str | None = None
        if tool.approval is not None and tool.approval.needed(tool.validate(arguments, limits)):
            decision = await wait_for_human(
                run,
                f"{step_id}.h",
                workflow=workflow,
                parent_id=parent_id,
                kind="approval",
                subject=tool.name,
                title=f"call {tool.name}"
                + (f" ({tool.approval.reason})" if tool.approval.reason else ""),
                payload={"arguments": arguments, "agent": agent, "reason": tool.approval.reason},
                schema=tool.spec.parameters,
                timeout_s=tool.approval.timeout_s or run.human_policy.approval_timeout_s,
                default=tool.approval.default,
            )
            if decision.action == "reject":
                return {
                    "error": {
                        "type": "rejected",
                        "message": f"{decision.by} rejected this call"
                        + (f": {decision.comment}" if decision.comment else ""),
                        "request_id": decision.request_id,
                        "by": decision.by,
                        "comment": decision.comment,
                    }
                }
            if decision.action == "edit":
                try:
                    arguments = tool.arguments_of(tool.validate(decision.value, limits))
                except ToolArgumentsError as exc:
                    await audit_refusal(
                        run, tool, decision.value, exc, actor=decision.by, step_id=step_id
                    )
                    return {"error": {"type": "invalid_edit", "message": str(exc)}}
            approved_by = decision.by
        auditor = run.auditor

        async def step() -> JsonValue:
            started, t0 = clock.now(), clock.monotonic()
            status: SpanStatus = "ok"
            if tool.side_effect and (done := await journal.effect(key)) is not None:
                outcome: dict[str, Any] = {"result": done["result"]}
                status = "replayed_effect"
            else:
                try:
                    result = await tool.invoke(arguments, idempotency_key=key, limits=limits)
                except Exception as exc:  # boundary: a user's tool must not crash the run
                    log.warning("tool %s raised %r", tool.name, exc, extra={"tool": tool.name})
                    outcome = {"error": {"type": type(exc).__name__, "message": str(exc)}}
                    status = "error"
                else:
                    if tool.side_effect:
                        await journal.record_effect(key, run.run_id, tool.name, result)
                    outcome = {"result": result}
            if tool.side_effect and auditor is not None:
                await auditor.audit(
                    at=clock.now(),
                    actor=f"agent:{agent}" if agent else f"workflow:{workflow}",
                    action="tool.replayed" if status == "replayed_effect" else "tool.call",
                    subject=f"tool:{tool.name}",
                    run_id=run.run_id,
                    details={
                        "idempotency_key": key,
                        "arguments": arguments,
                        "approved_by": approved_by,
                        **outcome,
                    },
                )
            await _record_span(
                recorder,
                clock,
                run_id=run.run_id,
                kind="tool",
                step_id=step_id,
                parent_id=parent_id,
                name=tool.name,
                agent=agent,
                input=arguments,
                output=outcome.get("result"),
                error=outcome.get("error"),
                status=status,
                started=started,
                t0=t0,
            )
            return outcome

        result: dict[str, Any] = await journal.step(step_id, f"tool:{tool.name}", step)
        return result

    async def _record(self, **fields: Any) -> None:
        if not self.recording:
            return
        await self.recorder.record_span(
            _span(self.clock, run_id=self.run.run_id, agent=self.agent.name, **fields)
        )


_CANCELLED: dict[str, Any] = {
    "code": "cancelled",
    "message": "cancelled before it finished (the run's deadline, a halt, or a failed sibling)",
}
"""The error of a model or agent span whose call was cancelled."""


def function_error(agent: str, exc: Exception) -> AgentError:
    """What a function agent that raised fails with: an `AgentError` (`function_error`) naming
    the exception, so the workflow, a fallback agent, an escalation and a supervisor see a failed
    agent, as for an LLM agent, instead of a crashed run. The traceback goes to the log (once,
    here), not into the error: it is stored with the run and shown to operators."""
    log.warning(
        "function agent %s raised %s: %s",
        agent,
        type(exc).__name__,
        exc,
        exc_info=exc,
        extra={"agent": agent},
    )
    kind = type(exc).__name__
    return AgentError(
        f"the function raised {kind}: {exc}" if str(exc) else f"the function raised {kind}",
        agent=agent,
        code="function_error",
        details={"type": kind, "message": str(exc)},
    )


_REFUSED_PREVIEW_CHARS = 2_000
_REFUSED_ERRORS = 20


async def audit_refusal(
    run: RunServices,
    tool: Tool,
    arguments: Any,
    error: ToolArgumentsError,
    *,
    actor: str,
    step_id: str,
) -> None:
    """Audit a side-effecting call that was refused before it ran (`tool.refused`).

    A refusal is what an attack looks like (an oversized or smuggled argument), so it belongs in
    the tamper-evident log as much as a call that ran. The arguments are kept as a bounded preview
    and their size: they were refused for being too big as often as not, and they never ran.
    """
    if not tool.side_effect or run.auditor is None:
        return
    # ASCII escapes: a smuggled U+202E reads as `\u202e` in the preview, not as reversed text.
    text = json.dumps(arguments, default=str)
    await run.auditor.audit(
        at=run.clock.now(),
        actor=actor,
        action="tool.refused",
        subject=f"tool:{tool.name}",
        run_id=run.run_id,
        details={
            "step_id": step_id,
            "arguments_preview": text[:_REFUSED_PREVIEW_CHARS],
            "arguments_chars": len(text),
            "errors": error.errors[:_REFUSED_ERRORS],
            "error_count": len(error.errors),
        },
    )


async def _record_span(recorder: Recorder, clock: Clock, **fields: Any) -> None:
    """Record a span built from `fields` (see `_span`), if `recorder` keeps spans."""
    if keeps_spans(recorder):
        await recorder.record_span(_span(clock, **fields))


def _span(
    clock: Clock,
    *,
    run_id: RunId,
    kind: SpanKind,
    step_id: str,
    parent_id: str | None,
    name: str,
    agent: str | None,
    started: Any,
    t0: float,
    model: str | None = None,
    input: JsonValue = None,
    output: JsonValue = None,
    error: dict[str, Any] | None = None,
    status: SpanStatus = "ok",
    tokens_in: int = 0,
    tokens_out: int = 0,
    cost_usd: Decimal = Decimal(0),
    tier: str | None = None,
    attrs: dict[str, JsonValue] | None = None,
) -> Span:
    """A finished span of `kind` started at `started` (`t0`: the clock's monotonic then)."""
    return Span._new(
        run_id=run_id,
        step_id=step_id,
        parent_id=parent_id,
        kind=kind,
        name=name,
        agent=agent,
        model=model,
        input=input,
        output=output,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost_usd,
        latency_ms=(clock.monotonic() - t0) * 1000,
        status=status,
        error=error,
        started_at=started,
        tier=tier,
        attrs=attrs,
    )


def _route_input(agent: Agent[Any, Any], messages: list[Message], allow_tools: bool) -> RouteInput:
    output: type[BaseModel] = agent.output
    fields_, depth = _shape(output)
    return RouteInput(
        agent=agent.name,
        role=agent.role,
        input_tokens=sum(len(m.content) for m in messages) // 4,
        schema_fields=fields_,
        schema_depth=depth,
        tools=len(agent.tools) if allow_tools else 0,
    )


@functools.cache
def _shape(output: type[BaseModel]) -> tuple[int, int]:
    return schema_shape(output.model_json_schema())


def _json_text(text: str) -> str:
    """The JSON object inside a model's answer: strips code fences and chatter around it."""
    stripped = text.strip()
    if stripped[:1] == "{" and stripped[-1:] == "}":
        return stripped  # the usual answer: one JSON object and nothing around it
    if stripped.startswith("```"):
        stripped = stripped.strip("`")
        stripped = stripped.removeprefix("json").strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    if start != -1 and end > start:
        return stripped[start : end + 1]
    return stripped


def _model_attrs(call: ModelCall, *, cached: bool) -> dict[str, JsonValue] | None:
    """A model span's attributes: served from cache, loaded secrets removed from its prompt."""
    attrs: dict[str, JsonValue] = {}
    if cached:
        attrs["cached"] = True
    if call.secrets_redacted:
        attrs["secrets_redacted"] = call.secrets_redacted
    return attrs or None


def _loop_attrs(rounds: int, repairs: int, invalid_calls: int) -> dict[str, JsonValue] | None:
    """What an LLM agent's loop did beyond one model call (None when it did nothing more)."""
    if not (rounds or repairs or invalid_calls):
        return None
    return {"tool_rounds": rounds, "repairs": repairs, "invalid_tool_calls": invalid_calls}


def _span_messages(messages: list[Message]) -> JsonValue:
    return [_message_dict(m) for m in messages[-2:]]


def _message_dict(message: Message) -> dict[str, Any]:
    return {"role": message.role, "content": message.content}


def _response_dict(response: ModelResponse) -> dict[str, Any]:
    return response.to_dict()


def _response_from_dict(data: dict[str, Any]) -> ModelResponse:
    return ModelResponse.from_dict(data)
