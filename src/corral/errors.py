"""Every exception Corral raises, grouped by what the caller can do about it.

```
CorralError                      code="corral_error"
├── ConfigError                  fix the configuration; raised at startup
├── UsageError                   a developer called the API wrong
│   ├── UnknownNameError         a workflow, agent, tool or model name that is not registered
│   ├── PayloadError             a payload that is not JSON or does not fit its schema
│   ├── NotFoundError            a run, human request, token or control that does not exist
│   └── ConflictError            the thing was already done (a decided request, a used token)
├── AgentError                   an agent could not produce a valid output (never garbage)
├── LimitError                   a guard refused the call before it was made; carries its numbers
│   ├── DeadlineExceededError    the run ran past its deadline
│   ├── BudgetExhaustedError     a budget (USD, tokens, calls, turns; run or daily) has no room
│   ├── LoopDetectedError        turns, repeated calls, ping-pong, recursion, same-error streak
│   ├── CircuitOpenError         a circuit breaker is open (or its half-open probes are taken)
│   ├── RateLimitedError         the local rate limiter could not admit the call in time
│   ├── DeadlockError            every agent waits and nothing can wake them
│   └── KilledError              an operator halted the run, the agent or the app
├── RejectedError                a human rejected an approval or an escalation
├── TakenOverError               a human took the run over; it ends here, handled outside
├── ProviderError                a model or tool backend failed; `retryable`: can a retry help
│   ├── ProviderTimeoutError
│   └── ProviderRateLimitError   HTTP 429; carries `retry_after_s`
└── StateError                   durable state missing, corrupt, locked or from a newer schema
```

Each class has a stable class-level `code` used by the CLI, the HTTP API and logs, and typed
attributes. Messages are built in `__init__`; callers never parse them.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AgentError",
    "BudgetExhaustedError",
    "CircuitOpenError",
    "ConfigError",
    "ConflictError",
    "CorralError",
    "DeadlineExceededError",
    "DeadlockError",
    "KilledError",
    "LimitError",
    "LoopDetectedError",
    "NotFoundError",
    "PayloadError",
    "ProviderError",
    "ProviderRateLimitError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "RejectedError",
    "StateError",
    "TakenOverError",
    "UnknownNameError",
    "UsageError",
]


class CorralError(Exception):
    """Root of every error Corral raises."""

    code: ClassVar[str] = "corral_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: `code`, `message` and the typed attributes."""
        return {"code": self.code, "message": self.message}


class ConfigError(CorralError):
    """The configuration is invalid; `key` is the dotted path of the offending setting."""

    code = "config_error"

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.reason = message

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "key": self.key}


class UsageError(CorralError):
    """The API was called in a way it does not support."""

    code = "usage_error"


class UnknownNameError(UsageError):
    """A name (workflow, agent, tool, model tier) that nothing is registered under."""

    code = "unknown_name"

    def __init__(
        self,
        kind: str,
        name: str,
        known: list[str] | tuple[str, ...],
        *,
        known_as: str | None = None,
        hint: str = "",
    ) -> None:
        """`known_as` names the list when it is not "{kind}s" (a tier list for "model or
        tier"); `hint` is appended (what else would have worked)."""
        choices = ", ".join(sorted(known)) or "none are registered"
        super().__init__(
            f"unknown {kind} {name!r}; known {known_as or kind + 's'}: {choices}{hint}"
        )
        self.kind = kind
        self.name = name
        self.known = tuple(sorted(known))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "kind": self.kind, "name": self.name, "known": self.known}


class PayloadError(UsageError):
    """A payload that does not validate against its schema or cannot be stored as JSON."""

    code = "invalid_payload"

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "errors": self.errors}


class NotFoundError(UsageError):
    """A run, human request, API token or control that does not exist (HTTP 404)."""

    code = "not_found"

    def __init__(self, kind: str, key: str, *, hint: str = "list them to see what exists") -> None:
        super().__init__(f"no {kind} {key!r}; {hint}")
        self.kind = kind
        self.key = key

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "kind": self.kind, "key": self.key}


class ConflictError(UsageError):
    """The request was valid once but is not now: a decided approval, a revoked token (HTTP 409)."""

    code = "conflict"


class AgentError(CorralError):
    """An agent failed to produce a valid output.

    The workflow receives this instead of the agent's output; nothing invalid is ever handed to
    the next agent. `code` on the instance is specific (`invalid_input`, `invalid_output`,
    `provider_error`, `tool_error`, `cannot_answer`, ...); `details` holds the validation errors or
    the provider's status.
    """

    code = "agent_error"

    def __init__(
        self,
        message: str,
        *,
        agent: str,
        code: str = "agent_error",
        retryable: bool = False,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"agent {agent!r}: {message}")
        self.agent = agent
        self.code = code  # type: ignore[misc]  # instance code refines the class-level default
        self.retryable = retryable
        self.details = details or {}
        self.reason = message

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "agent": self.agent,
            "retryable": self.retryable,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentError:
        """Rebuild an error recorded by `to_dict` (used when replaying a journal)."""
        err = cls(
            str(data.get("reason") or data.get("message", "")),
            agent=str(data.get("agent", "?")),
            code=str(data.get("code", "agent_error")),
            retryable=bool(data.get("retryable", False)),
            details=dict(data.get("details") or {}),
        )
        err.message = str(data.get("message", err.message))
        return err


class LimitError(CorralError):
    """A guard refused a call before it was made.

    `details` carries the guard's numbers (limit, spent, retry_after_s, cycle, ...) so a caller,
    `corral show` and alerts can say exactly why without parsing the message.
    """

    code = "limit_exceeded"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **self.details}


class DeadlineExceededError(LimitError):
    """The run passed its deadline."""

    code = "deadline_exceeded"

    def __init__(self, deadline_s: float) -> None:
        super().__init__(f"run exceeded its deadline of {deadline_s:g}s", deadline_s=deadline_s)
        self.deadline_s = deadline_s


class BudgetExhaustedError(LimitError):
    """A call does not fit a budget; refused before it was made.

    Args:
        dimension: `usd`, `tokens`, `model_calls` or `agent_turns`.
        scope: `run`, or `tenant:<id>` / `user:<id>` / `project:<id>` for daily limits.
        limit: The limit.
        spent: Committed so far (reservations of calls in flight included).
        needed: What this call would have reserved.
    """

    code = "budget_exhausted"

    def __init__(self, *, dimension: str, scope: str, limit: Any, spent: Any, needed: Any) -> None:
        super().__init__(
            f"{scope} budget for {dimension} is exhausted: limit {limit}, spent {spent}, "
            f"this call needs {needed}",
            dimension=dimension,
            scope=scope,
            limit=str(limit),
            spent=str(spent),
            needed=str(needed),
        )
        self.dimension = dimension
        self.scope = scope


class LoopDetectedError(LimitError):
    """A loop guard stopped the run: `kind` is `turns`, `agent_turns`, `repeated_call`,
    `ping_pong`, `recursion` or `error_streak`; `cycle` names the agents when there is one."""

    code = "loop_detected"

    def __init__(self, message: str, *, kind: str, **details: Any) -> None:
        super().__init__(message, kind=kind, **details)
        self.kind = kind


class CircuitOpenError(LimitError):
    """The breaker for `key` is open (or half-open with every probe taken); not called."""

    code = "circuit_open"

    def __init__(self, key: str, *, state: str, retry_after_s: float | None) -> None:
        wait = f"; retry in {retry_after_s:.1f}s" if retry_after_s is not None else ""
        super().__init__(
            f"circuit {key} is {state.lower()}{wait}",
            key=key,
            state=state,
            retry_after_s=retry_after_s,
        )
        self.key = key
        self.retry_after_s = retry_after_s


class RateLimitedError(LimitError):
    """The local rate limiter could not admit the call within its wait limit."""

    code = "rate_limited"

    def __init__(self, key: str, *, waited_s: float, retry_after_s: float | None) -> None:
        super().__init__(
            f"rate limit {key}: not admitted after waiting {waited_s:.1f}s",
            key=key,
            waited_s=waited_s,
            retry_after_s=retry_after_s,
        )
        self.key = key
        self.retry_after_s = retry_after_s


class DeadlockError(LimitError):
    """Every participant waits on another and nothing pending can wake them."""

    code = "deadlock"

    def __init__(self, cycle: list[str], *, waiting: dict[str, str]) -> None:
        shown = " -> ".join([*cycle, cycle[0]]) if cycle else "(no cycle: nothing can progress)"
        super().__init__(f"deadlock: {shown}", cycle=cycle, waiting=waiting)
        self.cycle = cycle


class KilledError(LimitError):
    """An operator halted this run, this agent or the whole app."""

    code = "killed"

    def __init__(self, scope: str, *, reason: str = "") -> None:
        super().__init__(
            f"halted by the kill switch ({scope})" + (f": {reason}" if reason else ""),
            scope=scope,
            reason=reason,
        )
        self.scope = scope


class RejectedError(CorralError):
    """A human rejected what the run asked for (a tool call, the task, an escalation), or the
    request timed out with `reject` as its default. Nothing that needed the approval ran."""

    code = "rejected"

    def __init__(
        self, what: str, *, request_id: str, by: str | None = None, comment: str = ""
    ) -> None:
        who = by or "a human"
        super().__init__(f"{who} rejected {what}" + (f": {comment}" if comment else ""))
        self.request_id = request_id
        self.by = by
        self.comment = comment

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "request_id": self.request_id,
            "by": self.by,
            "comment": self.comment,
        }


class TakenOverError(CorralError):
    """A human took an escalated run over: the run stops and the human finishes the work."""

    code = "taken_over"

    def __init__(self, agent: str, *, request_id: str, by: str | None, comment: str = "") -> None:
        super().__init__(
            f"{by or 'a human'} took the run over at agent {agent!r}"
            + (f": {comment}" if comment else "")
        )
        self.agent = agent
        self.request_id = request_id
        self.by = by
        self.comment = comment

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "agent": self.agent,
            "request_id": self.request_id,
            "by": self.by,
            "comment": self.comment,
        }


class ProviderError(CorralError):
    """A model or tool backend failed.

    Args:
        message: What went wrong.
        retryable: Set by the adapter that knows: 429, 5xx, timeouts and connection errors are
            retryable; 400/401/403/422 are not.
        provider: The provider name (`sim`, `local`, `openai`, ...).
        status: The HTTP-like status, when there is one.
    """

    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        provider: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.provider = provider
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "retryable": self.retryable,
            "provider": self.provider,
            "status": self.status,
        }


class ProviderTimeoutError(ProviderError):
    """The backend did not answer in time."""

    code = "provider_timeout"

    def __init__(self, message: str, *, provider: str = "", timeout_s: float | None = None) -> None:
        super().__init__(message, retryable=True, provider=provider, status=None)
        self.timeout_s = timeout_s


class ProviderRateLimitError(ProviderError):
    """The backend answered 429; `retry_after_s` is its Retry-After, when it sent one."""

    code = "rate_limited"

    def __init__(
        self, message: str, *, provider: str = "", retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, retryable=True, provider=provider, status=429)
        self.retry_after_s = retry_after_s

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "retry_after_s": self.retry_after_s}


class StateError(CorralError):
    """Durable state is missing, corrupt, locked, or written by a newer Corral."""

    code = "state_error"
