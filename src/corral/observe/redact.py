"""Redaction and truncation of what spans and runs store or export.

Applied where data leaves the process's memory: the SQL store (in its writer thread) and the
OTLP exporter (in its export thread), never on the event loop. Three rules:

- Secrets always go: every API key Corral has loaded (`corral.secrets.loaded_secrets`) and common
  key shapes are replaced by `[REDACTED]`, whatever the policy.
- Prompts are hidden unless `TracePolicy.prompts`: a model span keeps each message's role and
  length, not its text.
- Long values are cut to `TracePolicy.max_chars` of JSON text, keeping a preview and the size, so a
  huge payload can neither bloat the database nor break a page.
"""

from __future__ import annotations

import json
import re
from typing import Any

from corral.contracts import JsonValue
from corral.secrets import loaded_secrets
from corral.telemetry import TracePolicy
from corral.trace import Span

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[REDACTED]"

_KEY_SHAPES = (
    r"sk-[A-Za-z0-9_\-]{16,}",  # OpenAI, Anthropic (sk-ant-...)
    r"(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*",
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"xox[abprs]-[A-Za-z0-9\-]{10,}",  # Slack
    r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub
)


# `json.dumps` with any non-default option builds a new encoder per call; spans and runs dump a
# few dozen fields each, so one encoder is built here and shared (it keeps no state per call).
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
_encode_plain = json.JSONEncoder(separators=(",", ":")).encode


class Redactor:
    """Turns span and run fields into the JSON text that may be stored."""

    def __init__(self, policy: TracePolicy | None = None) -> None:
        self.policy = policy or TracePolicy()
        self._shapes = re.compile("|".join((*_KEY_SHAPES, *self.policy.redact)))

    def text(self, text: str) -> str:
        """`text` with every loaded secret and key-shaped string replaced."""
        for secret in loaded_secrets():
            if secret in text:
                text = text.replace(secret, REDACTED)
        return self._shapes.sub(REDACTED, text)

    def dump(self, value: JsonValue) -> str | None:
        """JSON text for a stored field: redacted, then truncated. None stays None."""
        if value is None:
            return None
        text = self.text(_encode(value))
        limit = self.policy.max_chars
        if len(text) <= limit:
            return text
        return _encode_plain({"truncated": True, "chars": len(text), "preview": text[:limit]})

    def span_fields(self, span: Span) -> tuple[str | None, str | None, str | None, str | None]:
        """A span's input (a model span's prompt as the policy allows), output, error and attrs
        as stored JSON text, computed once per span and redactor: the store's writer thread and
        the OTLP export thread both need them, and this is most of what either pays per span."""
        memo = span.memo
        if memo and memo[0] is self:
            found: tuple[str | None, str | None, str | None, str | None] = memo[1]
            return found
        fields = (
            self.dump(self.prompt(span.input) if span.kind == "model" else span.input),
            self.dump(span.output),
            self.dump(span.error),
            self.dump(span.attrs),
        )
        memo[:] = (self, fields)  # one step under the GIL; a racing thread computes the same
        return fields

    def prompt(self, messages: JsonValue) -> JsonValue:
        """A model span's input (its messages) as the policy allows it to be kept."""
        if self.policy.prompts or not isinstance(messages, list):
            return messages
        out: list[Any] = []
        for message in messages:
            if isinstance(message, dict) and "content" in message:
                content = message.get("content")
                out.append(
                    {
                        "role": message.get("role"),
                        "chars": len(content) if isinstance(content, str) else 0,
                        "hidden": True,
                    }
                )
            else:
                out.append(message)
        return out
