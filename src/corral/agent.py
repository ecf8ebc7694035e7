"""Agents: an LLM with typed input and output, or a plain function with the same contract.

Control flow lives in workflows; an agent is one unit of work with a schema on each side. Where
logic is static, prefer a `FunctionAgent` (deterministic code is cheaper and never hallucinates).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, get_type_hints

from pydantic import BaseModel

from corral.contracts import model_json
from corral.humans import Escalation
from corral.model import Message
from corral.tool import Tool

__all__ = ["Agent", "AgentLimits", "FunctionAgent", "Rejection", "function_agent"]

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLimits:
    """Bounds on one call of one agent."""

    max_tool_rounds: int = 4
    """Model turns that may request tools before the agent must answer."""
    max_invalid_tool_calls: int = 3
    """Tool calls with invalid arguments tolerated before the agent fails with `tool_error`."""
    max_repairs: int = 1
    """Repair attempts after an invalid output (the validation error is fed back each time)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """An earlier answer of an agent and why it was rejected (a pipeline gate's `repair`, a
    reviewer, a check in the workflow).

    `ctx.call(agent, payload, rejections=[...])` shows the model each rejected answer followed by
    its reason, so the new answer can address the reason instead of repeating the same one. A
    `FunctionAgent` cannot read them: it is simply called again.
    """

    answer: BaseModel
    """The rejected answer (the agent's output)."""
    reason: str
    """Why it was rejected, in words the model can act on."""

    def messages(self) -> tuple[Message, Message]:
        """The answer as the model's turn, then the reason as the user's reply."""
        why = self.reason.strip()
        return (
            Message(role="assistant", content=model_json(self.answer)),
            Message(
                role="user",
                content=(
                    "Your previous answer was rejected"
                    + (f": {why}" if why else "")
                    + ("" if why.endswith((".", "!", "?")) else ".")
                    + " Answer again, fixing that, with only one JSON object that matches the "
                    "schema."
                ),
            ),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent(Generic[In, Out]):
    """An LLM agent with a typed contract.

    Args:
        name: Unique within an app; appears in traces, costs and errors.
        instructions: The system prompt.
        input: Pydantic model every payload sent to this agent must satisfy.
        output: Pydantic model the agent must answer with; the model is asked for JSON matching
            its schema and the answer is validated, with one repair attempt.
        tools: Tools the model may call.
        model: A tier name (`small`, `medium`, `large`), `auto` (the router picks a tier per
            call from the call's complexity) or a concrete model (`sim:small`).
        max_output_tokens: Upper bound on the answer's length (also the budget reservation).
        temperature: Sampling temperature.
        limits: Per-call bounds (tool rounds, invalid tool calls, repairs).
        fallback: An agent with the same contract to try when this one fails.
        escalation: When a hard case goes to a human instead of failing (low confidence, cannot
            answer, a guard stop); see `corral.Escalation`.
        cache: Whether this agent's calls may be answered from the response cache.
        role: A hint for routing (`planner`, `reviewer`, `judge`, `synthesizer` count as heavy).
    """

    name: str
    instructions: str
    input: type[In]
    output: type[Out]
    tools: tuple[Tool, ...] = ()
    model: str = "small"
    max_output_tokens: int = 512
    temperature: float = 0.0
    limits: AgentLimits = AgentLimits()
    fallback: Agent[In, Out] | FunctionAgent[In, Out] | None = None
    escalation: Escalation | None = None
    cache: bool = True
    """Use the response cache when it is enabled (`guards.cache`); False for agents whose
    answers must always be fresh."""
    role: str | None = None
    """What the agent does (`planner`, `reviewer`, ...): a hint for `model="auto"` routing."""
    semantic_cache: bool = False
    """Opt in to the semantic cache: an input that means the same as an earlier one (cosine
    similarity >= `guards.cache.semantic_threshold`) gets that answer. Needs the cache on."""

    def __post_init__(self) -> None:
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ValueError(f"agent {self.name!r} lists a tool twice: {names}")

    def tool_named(self, name: str) -> Tool | None:
        """The tool called `name`, if this agent has it."""
        return next((t for t in self.tools if t.name == name), None)

    def output_schema(self) -> Mapping[str, Any]:
        """The JSON schema the model's answer must satisfy (computed once per output model).

        The mapping is shared between calls: treat it as read-only.
        """
        return _schema_of(self.output)

    def messages(
        self,
        payload: In,
        payload_json: str | None = None,
        rejections: Sequence[Rejection] = (),
    ) -> list[Message]:
        """The opening conversation for one call: instructions, schema, then the payload
        (`payload_json`, when the caller already has the payload as JSON), then each earlier
        answer that was rejected with its reason."""
        messages = [
            _system_message(self.instructions, self.output),
            Message._new(
                role="user",
                content=model_json(payload) if payload_json is None else payload_json,
            ),
        ]
        for rejection in rejections:
            messages.extend(rejection.messages())
        return messages


@functools.cache
def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    # Pydantic rebuilds a model's JSON schema on every call (about 350 us for a one-field model);
    # agents ask for it on every model call, so it is computed once per class.
    return model.model_json_schema()


@functools.lru_cache(maxsize=1024)
def _system_message(instructions: str, output: type[BaseModel]) -> Message:
    # Messages are frozen: every call of an agent shares its system message.
    return Message(role="system", content=_system_prompt(instructions, output))


@functools.lru_cache(maxsize=1024)
def _system_prompt(instructions: str, output: type[BaseModel]) -> str:
    schema = json.dumps(_schema_of(output), separators=(",", ":"))
    return (
        f"{instructions.strip()}\n\n"
        "Answer with one JSON object that matches this JSON schema, and nothing else:\n"
        f"{schema}"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionAgent(Generic[In, Out]):
    """Deterministic code with an agent's contract: validated input in, validated output out."""

    name: str
    fn: Callable[[In], Out | Awaitable[Out]]
    input: type[In]
    output: type[Out]
    fallback: Agent[In, Out] | FunctionAgent[In, Out] | None = None
    escalation: Escalation | None = None

    async def run(self, payload: In) -> Out:
        """Call the function (awaiting it when it is async)."""
        result = self.fn(payload)
        if inspect.isawaitable(result):
            return await result
        return result


def function_agent(fn: Callable[[Any], Any] | None = None, /, *, name: str | None = None) -> Any:
    """Make a `FunctionAgent` from a function annotated `(payload: In) -> Out`.

    Example:
        ```python
        @function_agent
        def normalize(ticket: Ticket) -> CleanTicket:
            return CleanTicket(text=ticket.text.strip())
        ```
    """

    def build(func: Callable[[Any], Any]) -> FunctionAgent[Any, Any]:
        hints = get_type_hints(func)
        params = list(inspect.signature(func).parameters)
        if len(params) != 1:
            raise TypeError(f"function agent {func.__name__!r} must take exactly one parameter")
        in_type, out_type = hints.get(params[0]), hints.get("return")
        for label, typ in (("parameter", in_type), ("return", out_type)):
            if not (isinstance(typ, type) and issubclass(typ, BaseModel)):
                raise TypeError(
                    f"function agent {func.__name__!r}: the {label} annotation must be a "
                    f"Pydantic model, got {typ!r}"
                )
        assert isinstance(in_type, type)
        assert isinstance(out_type, type)
        return FunctionAgent(name=name or func.__name__, fn=func, input=in_type, output=out_type)

    if fn is not None:
        return build(fn)
    return build
