"""What a guard step is: the types every step of the guard chain shares, and yours too.

A guard step is an interceptor around the rest of the chain: it gets the call in flight and
`next`, the rest of the chain. It may refuse before calling `next` (raise a `LimitError`),
wait, call `next` once or several times (retries, fallbacks), and settle what it acquired when
`next` returns or raises, cancellation included:

    class OutsideHoursError(LimitError):
        code = "outside_hours"

    class OfficeHours:
        \"\"\"Refuses `batch` runs' model calls outside office hours.\"\"\"

        def __init__(self, clock: Clock) -> None:
            self.clock = clock

        async def __call__(self, call: ModelCall, next: Next) -> ModelResponse:
            if call.run.priority == "batch" and not 9 <= self.clock.now().hour < 17:
                raise OutsideHoursError("batch work runs 9-17 only", agent=call.agent)
            return await next(call)

    app.guards.add(OfficeHours(app.clock), before="budget")

The built-in steps and their order are in `corral.guards.chain`; each lives in the module of
its guard (`budget.py`, `breaker.py`, ...), where its whole reach can be read.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from corral.model import Model, ModelRequest, ModelResponse

if TYPE_CHECKING:
    from corral.guards.chain import RunGuards

__all__ = [
    "STEP_NAMES",
    "Alarm",
    "Emit",
    "GuardAlertKind",
    "GuardEvent",
    "GuardStep",
    "ModelCall",
    "Next",
    "StepName",
]

StepName = Literal[
    "redact",
    "agent_breaker",
    "fallback",
    "cache",
    "retry",
    "kill_switch",
    "error_streak",
    "budget",
    "breaker",
    "limiter",
    "provider",
]
"""The built-in steps, outermost first (`provider` is the end of the chain)."""

STEP_NAMES: tuple[StepName, ...] = get_args(StepName)


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardEvent:
    """One guard decision: `kind` is `degrade`, `retry`, `retry_denied`, `fallback`, `breaker`,
    `queued`, `paused`, `refused`, `cache_hit`, `secret_redacted` or `agent_stopped` (or a
    custom step's own); `detail` carries its numbers (free-form JSON)."""

    kind: str
    detail: dict[str, Any] = field(default_factory=dict)
    alert: bool = False
    """Worth an operator's attention (an agent stopped, a breaker opened)."""


Emit = Callable[[GuardEvent], Awaitable[None]]
"""Records a guard decision (the agent call turns it into a `guard` span)."""


GuardAlertKind = Literal["agent_stopped"]
"""The alerts guards raise themselves (stored with the anomaly, cost and threshold alerts)."""


class Alarm(Protocol):
    """Where a guard's alerts go to be stored and sent (`corral alerts`, the dashboard, the
    alert webhook): the app's `corral.observe.alerts.AlertMonitor` when alerts are on.

    Called on the event loop in the hot path, like a `Tap`: it only hands the alert off (its
    delivery never fails or slows the call)."""

    def guard_alert(
        self,
        *,
        kind: GuardAlertKind,
        subject: str,
        metric: str,
        value: float,
        limit: float | None,
        run_id: str,
        message: str,
    ) -> None:
        """Raise one alert about `subject` (an agent), e.g. `agent_stopped`."""
        ...


_ZERO = Decimal(0)
_NOTHING_HELD = (_ZERO, 0)


class ModelCall:
    """One agent's model call on its way through the guard chain.

    Steps read who is calling and what is asked, and the steps that own a field write it:
    `fallback` sets `model` and `request` per model of the tier's chain, `retry` counts
    `attempt`, the provider sets `sent_at` and `cost`. A plain slotted class, not a dataclass:
    one is built per model call and its fields change as it travels.

    Args:
        run: The run's guard state (budget, loop guard, priority, tenant, user).
        agent: The calling agent's name.
        timeout_s: The provider call's timeout.
        emit: Where guard decisions go.
        cache: The agent allows the exact response cache.
        semantic: The agent opted into the semantic cache.
    """

    __slots__ = (
        "agent",
        "attempt",
        "cost",
        "emit",
        "give_up",
        "held",
        "input_tokens",
        "model",
        "models",
        "request",
        "run",
        "secrets_redacted",
        "sent_at",
        "timeout_s",
        "use_cache",
        "use_semantic",
    )

    def __init__(
        self,
        run: RunGuards,
        agent: str,
        timeout_s: float,
        emit: Emit,
        cache: bool = True,
        semantic: bool = False,
    ) -> None:
        self.run = run
        self.agent = agent
        self.timeout_s = timeout_s
        self.emit = emit
        self.use_cache = cache
        self.use_semantic = semantic
        self.models: list[Model] = []
        """The tier's chain: the primary model, then its fallbacks."""
        self.model: Model
        """The model this attempt goes to."""
        self.request: ModelRequest
        """The request as the current model gets it."""
        self.input_tokens = 0
        """The request's input, estimated (`estimate_input_tokens`)."""
        self.attempt = 0
        """1 for a model's first attempt, 2 for its first retry, ..."""
        self.held: tuple[Decimal, int] = _NOTHING_HELD
        """What the budget holds for this attempt (USD, tokens): set by `budget`."""
        self.give_up = False
        """Set by `error_streak`: this agent is stopped, so retrying is pointless."""
        self.sent_at: float | None = None
        """When the provider was called (clock.monotonic) in this attempt; None: not yet."""
        self.cost = _ZERO
        """What the returned answer cost (USD; 0 for a cached answer)."""
        self.secrets_redacted = 0
        """Loaded secret values `redact` replaced in the messages (0: none were there)."""

    def call(self, models: list[Model], request: ModelRequest) -> Awaitable[ModelResponse]:
        """Answer `request` with the first model of `models` that can.

        Returns the chain's coroutine (no coroutine of its own: one level fewer per call).
        What the answer cost is `cost` afterwards (the response's `cost_usd` may be unset).

        Raises:
            LimitError: a guard refused (budget, kill switch, error streak, rate-limit wait).
            CircuitOpenError: every model's breaker (or the agent's) is open.
            ProviderError: every model failed; the last failure.
        """
        self.models = models
        self.model = models[0]
        self.request = request
        self.input_tokens = estimate_input_tokens(request)
        return self.run.guards.chain(self)


Next = Callable[[ModelCall], Awaitable[ModelResponse]]
"""The rest of the chain."""


class GuardStep(Protocol):
    """One guard around the rest of the chain (see the module docstring for an example).

    Raise a `corral.errors.LimitError` subclass (or your own `CorralError`) to refuse a call;
    the run sees it as it is. Let `asyncio.CancelledError` propagate and release what you
    acquired in `finally`.

    An `async def __call__` is the usual form. A plain `def` returning `next(call)` itself
    when the step has nothing to do (as the kill switch does while nothing is halted) adds no
    coroutine level to the call.
    """

    def __call__(self, call: ModelCall, next: Next) -> Awaitable[ModelResponse]: ...


def estimate_input_tokens(request: ModelRequest) -> int:
    """Tokens the request's messages will count as, estimated per script: about 4 characters
    a token for ASCII, one token per CJK, kana or hangul character, 2 characters a token for
    other scripts (tokenizers split those far finer than English). Each model's own ratio of
    counted to estimated tokens is learned from its answers (`corral.guards.budget`)."""
    chars = 0
    extra = 0
    for message in request.messages:  # a loop: no generator per call
        content = message.content
        chars += len(content)
        if not content.isascii():
            extra += _non_ascii_extra(content)
    return (chars // 4) + extra + 4 * len(request.messages) + 1


_WIDE = re.compile(
    "[\u1100-\u11ff\u2e80-\u9fff\ua000-\ua4cf\uac00-\ud7af\uf900-\ufaff"
    "\uff00-\uffef\U00020000-\U0003ffff]"
)
"""CJK ideographs, kana, hangul, fullwidth forms: about one token each."""


def _non_ascii_extra(text: str) -> int:
    """Tokens `text` counts beyond its characters / 4: a wide character counts 1 instead of
    1/4, another non-ASCII character 1/2."""
    wide = len(text) - len(_WIDE.sub("", text))
    other = len(text) - len(text.encode("ascii", "ignore")) - wide
    return (wide * 3) // 4 + other // 4
