"""Every exception Corral raises, grouped by what the caller can do about it.

```
CorralError                      code="corral_error"
├── ConfigError                  fix the configuration; raised at startup
├── UsageError                   a developer called the API wrong
│   ├── UnknownNameError         a workflow, agent, tool or model name that is not registered
│   └── PayloadError             a payload that is not JSON or does not fit its schema
├── AgentError                   an agent could not produce a valid output (never garbage)
├── LimitError                   a guard refused the call before it was made
│   └── DeadlineExceededError    the run ran past its deadline
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
    "ConfigError",
    "CorralError",
    "DeadlineExceededError",
    "LimitError",
    "PayloadError",
    "ProviderError",
    "ProviderRateLimitError",
    "ProviderTimeoutError",
    "StateError",
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

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "key": self.key}


class UsageError(CorralError):
    """The API was called in a way it does not support."""

    code = "usage_error"


class UnknownNameError(UsageError):
    """A name (workflow, agent, tool, model tier) that nothing is registered under."""

    code = "unknown_name"

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        choices = ", ".join(sorted(known)) or "none are registered"
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {choices}")
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
    """A guard refused a call before it was made."""

    code = "limit_exceeded"


class DeadlineExceededError(LimitError):
    """The run passed its deadline."""

    code = "deadline_exceeded"

    def __init__(self, deadline_s: float) -> None:
        super().__init__(f"run exceeded its deadline of {deadline_s:g}s")
        self.deadline_s = deadline_s


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
