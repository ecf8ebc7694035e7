"""Redaction and truncation of what spans and runs store or export, and of log lines.

Applied where data leaves the process's memory: the SQL store (in its writer thread: spans, runs,
journaled steps, effects, cached answers, human requests), the durable engine's records, the OTLP
exporter (in its export thread) and log records, never on the event loop's hot path. Three rules:

- Secrets always go: every secret Corral has loaded (`corral.secrets.loaded_secrets`), common key
  shapes (`sk-...`, `sk_live_...`, `AIza...`, `hf_...`, `github_pat_...`, JWTs, PEM private keys,
  `Bearer ...`, `Basic ...`, AWS, Slack, GitHub), the password of a URL and 32+ hex digits after
  a key-like name (`api_key=`, `"token": "..."`) are replaced by `[REDACTED]`, whatever the
  policy, plus the app's own patterns (`[trace] redact`). One pattern holds them all, rebuilt
  only when a new secret is loaded.
- Prompts are hidden unless `TracePolicy.prompts`: a model span keeps each message's role and
  length, not its text.
- Long values are cut to `TracePolicy.max_chars` of JSON text, keeping a preview and the size, so a
  huge payload can neither bloat the database nor break a page.

Stored JSON stays JSON: a secret is replaced inside its string (its JSON-escaped forms are
matched too), and text whose redaction would break the JSON is redacted value by value instead.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from corral.contracts import JsonValue
from corral.secrets import loaded_secrets, secrets_generation
from corral.telemetry import TracePolicy
from corral.trace import Span

__all__ = ["REDACTED", "RedactingFilter", "Redactor", "install_log_redaction", "redact_record"]

REDACTED = "[REDACTED]"

_KEY_SHAPES = (
    r"sk-[A-Za-z0-9_\-]{16,}",  # OpenAI, Anthropic (sk-ant-...)
    r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe secret and restricted keys
    r"AIza[0-9A-Za-z_\-]{35}",  # Google API key
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
    r"github_pat_[A-Za-z0-9_]{22,}",  # GitHub fine-grained token
    r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"xox[abprs]-[A-Za-z0-9\-]{10,}",  # Slack
    r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # a JWT
    r"(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*",
    # Basic credentials: base64 whose length is a multiple of 4 (not "Basic Information").
    r"Basic\s+(?:[A-Za-z0-9+/]{4}){3,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?(?![A-Za-z0-9+/=])",
    # A PEM private key, up to its END line; in JSON text it stays inside its string (escaped
    # newlines included), and a key cut short is redacted to the end of its string.
    r"-----BEGIN[A-Z ]*PRIVATE KEY-----(?:[^\"\\]|\\.)*?"
    r"(?:-----END[A-Z ]*PRIVATE KEY-----|(?=\")|$)",
    # The password of a URL (`scheme://user:password@`): the user and the host stay.
    r"(?P<corral_url>[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:\"'\\]*:)[^\s/@\"'\\]+(?=@)",
    # 32+ hex digits right after a key-like name (`api_key=...`, `"token": "..."`).
    r"(?P<corral_name>(?i:key|secret|token|password|passwd|pwd)s?\\?[\"']?\s*[:=]\s*\\?[\"']?)"
    r"[0-9a-fA-F]{32,}(?![0-9a-fA-F])",
)


def _replace(match: re.Match[str]) -> str:
    """A match's replacement: `[REDACTED]`, after the URL's user or the key's name it keeps."""
    keep = match.group("corral_url") or match.group("corral_name")
    return f"{keep}{REDACTED}" if keep else REDACTED


def _forms(secret: str) -> tuple[str, ...]:
    """A secret as it appears in text, in JSON text and in JSON inside JSON (a DBOS record)."""
    once = json.dumps(secret)[1:-1]
    twice = json.dumps(once)[1:-1]
    return tuple(dict.fromkeys((secret, once, twice)))


# `json.dumps` with any non-default option builds a new encoder per call; spans and runs dump a
# few dozen fields each, so one encoder is built here and shared (it keeps no state per call).
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
_encode_plain = json.JSONEncoder(separators=(",", ":")).encode


class Redactor:
    """Turns span and run fields into the JSON text that may be stored."""

    def __init__(self, policy: TracePolicy | None = None) -> None:
        self.policy = policy or TracePolicy()
        self._built: tuple[int, re.Pattern[str]] = (-1, re.compile(REDACTED))

    def _pattern(self) -> re.Pattern[str]:
        """Every loaded secret, key shape and app pattern as one pattern, rebuilt only when a
        secret was loaded since (one tuple swap: safe across the writer and export threads)."""
        generation, pattern = self._built
        now = secrets_generation()
        if generation != now:
            literals = [
                re.escape(form)
                for secret in sorted(loaded_secrets(), key=len, reverse=True)
                for form in _forms(secret)
            ]
            pattern = re.compile("|".join((*literals, *_KEY_SHAPES, *self.policy.redact)))
            self._built = (now, pattern)
        return pattern

    def text(self, text: str) -> str:
        """`text` with every loaded secret and key-shaped string replaced."""
        return self._pattern().sub(_replace, text)

    def json_text(self, text: str) -> str:
        """JSON `text` with every secret replaced, still valid JSON: replaced in place when that
        keeps it JSON (nearly always), else value by value."""
        redacted, found = self._pattern().subn(_replace, text)
        if not found:
            return text
        try:
            json.loads(redacted)
        except ValueError:
            return _encode(self.value(json.loads(text)))
        return redacted

    def value(self, value: Any) -> Any:
        """`value` (JSON-shaped data) with every string in it, keys included, redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def dump(self, value: JsonValue) -> str | None:
        """JSON text for a stored field: redacted, then truncated. None stays None."""
        if value is None:
            return None
        text = self.json_text(_encode(value))
        limit = self.policy.max_chars
        if len(text) <= limit:
            return text
        return _encode_plain({"truncated": True, "chars": len(text), "preview": text[:limit]})

    def whole(self, value: JsonValue) -> str:
        """JSON text for a field that is read back (a journaled step, an effect, a cached
        answer): redacted, never truncated."""
        return self.json_text(_encode(value))

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


# -- log records ---------------------------------------------------------------------------------


def redact_record(record: logging.LogRecord, redactor: Redactor) -> None:
    """Redact a log record's message and traceback in place. A record without a secret keeps
    its message template and arguments (what log aggregators group by)."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a malformed call: the handler reports it as it would
        return
    redacted = redactor.text(message)
    if redacted != message:
        record.msg, record.args = redacted, None
    if record.exc_info and not record.exc_text:
        # The formatter reuses `exc_text`, so the traceback it prints is the redacted one.
        record.exc_text = redactor.text(_TRACEBACKS.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redactor.text(record.stack_info)


_TRACEBACKS = logging.Formatter()


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record passing through it (loaded secrets, key
    shapes, URL passwords, the app's patterns). `install_log_redaction` covers every logger of
    the process; add this to a handler of your own instead if you configure logging yourself."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, self.redactor)
        return True


_log_redactor: Redactor | None = None


def install_log_redaction(redactor: Redactor) -> None:
    """Redact every log record made in this process from now on, whatever logger makes it
    (Corral's, the provider SDK's, httpx's, DBOS's) and whatever handler prints it.

    A logger's filters do not apply to its children's records and the core configures no
    handlers, so this wraps the log record factory instead: each record is redacted once, when
    it is made (only records at an enabled level are made). Installed once per process by the
    app when it opens; a later app's redactor replaces the earlier one's.
    """
    global _log_redactor
    if _log_redactor is None:
        make = logging.getLogRecordFactory()

        def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            if _log_redactor is not None:
                redact_record(record, _log_redactor)
            return record

        logging.setLogRecordFactory(redacted_record)
    _log_redactor = redactor
