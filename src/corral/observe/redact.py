"""Redaction and truncation of what spans and runs store or export, and of log lines.

Applied where data leaves the process's memory: the SQL store (in its writer thread: spans, runs,
journaled steps, effects, cached answers, human requests), the durable engine's records, the OTLP
exporter (in its export thread) and log records, never on the event loop's hot path. Three rules:

- Secrets always go: every secret Corral has loaded (`corral.secrets.loaded_secrets`), common key
  shapes (`sk-...`, `sk_live_...`, `AIza...`, `hf_...`, `github_pat_...`, JWTs, PEM private keys,
  `Bearer ...`, `Basic ...`, AWS, Slack, GitHub), the password of a URL and 32+ hex digits after
  a key-like name (`api_key=`, `"token": "..."`) are replaced by `[REDACTED]`, whatever the
  policy, plus the app's own patterns (`[trace] redact`). The loaded secrets are one pattern,
  rebuilt only when a secret is loaded; each key shape runs only when its literal start (`sk-`,
  `eyJ`, `://`) is in the text, so text without a key costs a few substring tests.
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

# Each shape is its own pattern, run only when its literal start is in the text (a substring
# test, far cheaper than a regex pass): one alternation of all of them would be tried at every
# character, about 10x slower on a 4 KB payload (measured), and most text holds no key at all.
_SHAPES = tuple(
    (start, re.compile(shape))
    for start, shape in (
        ("sk-", r"sk-[A-Za-z0-9_\-]{16,}"),  # OpenAI, Anthropic (sk-ant-...)
        ("sk_", r"sk_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe secret key
        ("rk_", r"rk_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe restricted key
        ("AIza", r"AIza[0-9A-Za-z_\-]{35}"),  # Google API key
        ("hf_", r"hf_[A-Za-z0-9]{30,}"),  # Hugging Face
        ("github_pat_", r"github_pat_[A-Za-z0-9_]{22,}"),  # GitHub fine-grained token
        ("gh", r"gh[pousr]_[A-Za-z0-9]{30,}"),  # GitHub
        ("AKIA", r"AKIA[0-9A-Z]{16}"),  # AWS access key id
        ("xox", r"xox[abprs]-[A-Za-z0-9\-]{10,}"),  # Slack
        ("eyJ", r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),  # JWT
        # Basic credentials: base64 whose length is a multiple of 4 (not "Basic Information").
        (
            "Basic",
            r"Basic\s+(?:[A-Za-z0-9+/]{4}){3,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
            r"(?![A-Za-z0-9+/=])",
        ),
        # A PEM private key, up to its END line; in JSON text it stays inside its string
        # (escaped newlines included), and a key cut short is redacted to the end of its string.
        (
            "PRIVATE KEY-----",
            r"-----BEGIN[A-Z ]*PRIVATE KEY-----(?:[^\"\\]|\\.)*?"
            r"(?:-----END[A-Z ]*PRIVATE KEY-----|(?=\")|$)",
        ),
    )
)
_BEARER = re.compile(r"(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*")
_URL_PASSWORD = re.compile(r"(://[^\s/@:\"'\\]*:)(?!\*\*\*@)[^\s/@\"'\\]+(?=@)")
"""The password of a URL (`scheme://user:password@`): the user and the host stay; one already
masked (`:***@`, `corral.secrets.hide_url_password`) stays as it is."""
_HEX_VALUE = re.compile(r"([:=]\s*\\?[\"']?)[0-9a-fA-F]{32,}(?![0-9a-fA-F])")
"""32+ hex digits after `:` or `=`; redacted when a key-like name comes just before."""
_KEY_NAMES = ("key", "secret", "token", "pass", "pwd")
"""Substrings (of the lowered text) without which `_HEX_VALUE` cannot redact anything."""
_KEY_NAME = re.compile(r"(?i:key|secret|token|password|passwd|pwd)s?\\?[\"']?\s*\Z")


def _hex_value(match: re.Match[str]) -> str:
    """`api_key=<hex>`, `"token": "<hex>"`: the hex goes, the name stays. Other hex (a hash, a
    run id) stays."""
    before = match.string[max(0, match.start() - 24) : match.start()]
    if _KEY_NAME.search(before) is None:
        return match.group(0)
    return f"{match.group(1)}{REDACTED}"


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
        self._app = re.compile("|".join(self.policy.redact)) if self.policy.redact else None
        self._secrets: tuple[int, tuple[str, ...], re.Pattern[str] | None] = (-1, (), None)

    def _loaded(self) -> tuple[tuple[str, ...], re.Pattern[str] | None]:
        """Every form of every loaded secret, and one pattern matching any (longest first),
        rebuilt only when a secret was loaded since (one tuple swap: safe across the writer and
        export threads)."""
        generation, forms, pattern = self._secrets
        now = secrets_generation()
        if generation != now:
            ordered = sorted(loaded_secrets(), key=len, reverse=True)
            forms = tuple(form for secret in ordered for form in _forms(secret))
            pattern = re.compile("|".join(map(re.escape, forms))) if forms else None
            self._secrets = (now, forms, pattern)
        return forms, pattern

    def _redact(self, text: str) -> tuple[str, int]:
        """`text` redacted, and how many replacements were made (0: `text` itself)."""
        found = 0
        forms, pattern = self._loaded()
        if pattern is not None:
            for form in forms:  # a substring test per form is cheaper than one regex pass
                if form in text:
                    text, n = pattern.subn(REDACTED, text)
                    found += n
                    break
        for start, shape in _SHAPES:
            if start in text:
                text, n = shape.subn(REDACTED, text)
                found += n
        lowered = text.lower()
        if "bearer" in lowered:
            text, n = _BEARER.subn(REDACTED, text)
            found += n
        if "://" in text:
            text, n = _URL_PASSWORD.subn(rf"\1{REDACTED}", text)
            found += n
        if any(name in lowered for name in _KEY_NAMES):
            redacted = _HEX_VALUE.sub(_hex_value, text)
            if redacted != text:
                text, found = redacted, found + 1
        if self._app is not None:
            text, n = self._app.subn(REDACTED, text)
            found += n
        return text, found

    def text(self, text: str) -> str:
        """`text` with every loaded secret and key-shaped string replaced."""
        return self._redact(text)[0]

    def json_text(self, text: str) -> str:
        """JSON `text` with every secret replaced, still valid JSON: replaced in place when that
        keeps it JSON (nearly always), else value by value."""
        redacted, found = self._redact(text)
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
