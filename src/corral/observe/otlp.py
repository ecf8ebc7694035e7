"""OpenTelemetry export of Corral's spans over OTLP/HTTP, in the GenAI semantic conventions.

Corral records its own spans (`corral.trace.Span`) and this exporter translates them, so Jaeger,
Grafana Tempo, Phoenix or Langfuse can read a run's trace:

    run            `run {workflow}`           the root; `corral.run_id`, `enduser.id`, status
    agent call     `invoke_agent {agent}`     gen_ai.operation.name=invoke_agent, gen_ai.agent.name
    model call     `chat {model}`             gen_ai.operation.name=chat, gen_ai.request.model,
                                              gen_ai.usage.input_tokens / output_tokens
    tool call      `execute_tool {tool}`      gen_ai.operation.name=execute_tool, gen_ai.tool.name
    guard decision `guard {kind}`             corral.guard.kind, its detail as JSON

Ids are derived from the run id (the trace id) and the step id (the span id), so a span exported
before a crash and its parent exported after the resume still join up, and the run id is the
correlation id in every backend.

Export never blocks or fails a run: `spans()` appends to a bounded queue (full: the span is
dropped and counted); one daemon thread converts, batches and sends. Failures are counted and
logged at most once per minute; the SDK's own per-failure log lines are silenced for this thread.
Why not the SDK's `BatchSpanProcessor`: it takes finished SDK spans, which would mean building
them on the event loop; here the conversion happens in the export thread.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from corral.observe.policy import OtlpConfig
from corral.observe.redact import Redactor
from corral.trace import RunRecord, Span

__all__ = ["OtlpExporter", "span_id", "trace_id"]

log = logging.getLogger("corral.observe.otlp")

_THREAD = "corral-otlp-export"
_LOG_EVERY_S = 60.0
_SCOPE = InstrumentationScope("corral")


def trace_id(run_id: str) -> int:
    """The OpenTelemetry trace id of a run (128 bits from its run id)."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big") or 1


def span_id(run_id: str, step_id: str | None) -> int:
    """The span id of a step (`None`: the run's root span)."""
    key = f"{run_id}\x00{step_id if step_id is not None else '<run>'}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") or 1


class _QuietExportThread(logging.Filter):
    """Drops the OTLP SDK's log lines made from the export thread (Corral logs a summary)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != _THREAD


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1e9)


class OtlpExporter:
    """Sends spans to an OTLP/HTTP endpoint from a background thread.

    Args:
        config: Endpoint, headers, batching.
        redactor: The same redaction the store applies (prompts, secrets, truncation).
        exporter: Inject a `SpanExporter` (tests); default: the SDK's OTLP/HTTP exporter.
    """

    def __init__(
        self,
        config: OtlpConfig,
        redactor: Redactor | None = None,
        *,
        exporter: SpanExporter | None = None,
    ) -> None:
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            if config.endpoint is None:
                raise ValueError("OtlpExporter needs otlp.endpoint")
            exporter = OTLPSpanExporter(
                endpoint=config.endpoint, headers=dict(config.headers), timeout=config.timeout_s
            )
        self.config = config
        self._exporter = exporter
        self._redactor = redactor or Redactor()
        self._resource = Resource.create({"service.name": config.service_name})
        self._queue: deque[Span | RunRecord] = deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._busy = False
        self._closed = False
        self.exported = 0
        """Spans the endpoint accepted."""
        self.failed = 0
        """Spans lost to failed exports."""
        self.dropped = 0
        """Spans dropped because the queue was full."""
        self._failed_logged = 0
        self._last_log = float("-inf")
        # Logger filters do not apply to child loggers: name every logger the SDK uses here.
        for name in (
            type(exporter).__module__,
            "opentelemetry.exporter.otlp.proto.http.trace_exporter",
            "opentelemetry.exporter.otlp.common.http",
            "opentelemetry.exporter.otlp.proto.common",
        ):
            logger = logging.getLogger(name)
            if not any(isinstance(f, _QuietExportThread) for f in logger.filters):
                logger.addFilter(_QuietExportThread())
        self._thread = threading.Thread(target=self._loop, name=_THREAD, daemon=True)
        self._thread.start()

    # -- the tap (called on the event loop: cheap) -------------------------------------------------

    def spans(self, spans: Sequence[Span]) -> None:
        """Queue spans for export; never blocks."""
        room = self.config.max_queue - len(self._queue)
        if room < len(spans):
            self.dropped += len(spans) - max(room, 0)
            spans = spans[: max(room, 0)]
        self._queue.extend(spans)
        if len(self._queue) >= self.config.max_batch:
            self._wake.set()

    def run(self, run: RunRecord) -> None:
        """Queue a finished run's root span (a running run is exported when it ends)."""
        if run.status != "running":
            self._queue.append(run)

    # -- lifecycle -----------------------------------------------------------------------------

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Send everything queued so far; False if that took longer than `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._queue or self._busy:
                self._wake.set()
                if not self._idle.wait(timeout=max(0.0, deadline - time.monotonic())):
                    return False
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush, stop the thread and shut the SDK exporter down."""
        if self._closed:
            return
        self.flush(timeout_s)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=timeout_s)
        self._exporter.shutdown()

    # -- the export thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(timeout=self.config.interval_s)
            self._wake.clear()
            with self._idle:
                self._busy = True
            try:
                while self._queue:
                    batch = [
                        self._queue.popleft()
                        for _ in range(min(self.config.max_batch, len(self._queue)))
                    ]
                    self._send(batch)
            finally:
                with self._idle:
                    self._busy = False
                    self._idle.notify_all()

    def _send(self, batch: list[Span | RunRecord]) -> None:
        try:
            converted = [self._convert(item) for item in batch]
            ok = self._exporter.export(converted) is SpanExportResult.SUCCESS
        except Exception as exc:  # boundary: export must never take the app down
            log.debug("OTLP export raised %r", exc)
            ok = False
        if ok:
            self.exported += len(batch)
            return
        self.failed += len(batch)
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S:
            log.warning(
                "OTLP export to %s is failing: %d spans lost since the last report (%d in all); "
                "runs are not affected",
                self.config.endpoint,
                self.failed - self._failed_logged,
                self.failed,
            )
            self._last_log, self._failed_logged = now, self.failed

    def _convert(self, item: Span | RunRecord) -> ReadableSpan:
        if isinstance(item, RunRecord):
            return self._root(item)
        span = item
        trace = trace_id(span.run_id)
        attrs: dict[str, Any] = {
            "corral.run_id": span.run_id,
            "corral.step_id": span.step_id,
            "corral.status": span.status,
            "gen_ai.conversation.id": span.run_id,
        }
        if span.agent:
            attrs["gen_ai.agent.name"] = span.agent
        kind = SpanKind.INTERNAL
        if span.kind == "agent":
            name = f"invoke_agent {span.name}"
            attrs["gen_ai.operation.name"] = "invoke_agent"
            attrs["gen_ai.agent.name"] = span.name
        elif span.kind == "model":
            name = f"chat {span.model}"
            kind = SpanKind.CLIENT
            attrs["gen_ai.operation.name"] = "chat"
            if span.model:
                provider, _, _ = span.model.partition(":")
                attrs["gen_ai.request.model"] = span.model
                attrs["gen_ai.response.model"] = span.model
                attrs["gen_ai.provider.name"] = provider
            if span.tier:
                attrs["corral.tier"] = span.tier
        elif span.kind == "tool":
            name = f"execute_tool {span.name}"
            attrs["gen_ai.operation.name"] = "execute_tool"
            attrs["gen_ai.tool.name"] = span.name
        else:
            name = f"guard {span.name}"
            attrs["corral.guard.kind"] = span.name
        if span.kind in ("agent", "model"):
            attrs["gen_ai.usage.input_tokens"] = span.tokens_in
            attrs["gen_ai.usage.output_tokens"] = span.tokens_out
            attrs["corral.cost_usd"] = str(span.cost_usd)
        redact = self._redactor
        for key, value in (
            ("corral.input", redact.prompt(span.input) if span.kind == "model" else span.input),
            ("corral.output", span.output),
            ("corral.error", span.error),
            ("corral.attrs", span.attrs),
        ):
            text = redact.dump(value)
            if text is not None:
                attrs[key] = text
        status = Status(StatusCode.OK)
        if span.status not in ("ok", "replayed_effect"):
            code = (span.error or {}).get("code") or (span.error or {}).get("error")
            attrs["error.type"] = str(code or span.status)
            status = Status(StatusCode.ERROR, str((span.error or {}).get("message", span.status)))
        start = _ns(span.started_at)
        return ReadableSpan(
            name=name,
            context=SpanContext(
                trace, span_id(span.run_id, span.step_id), True, TraceFlags(TraceFlags.SAMPLED)
            ),
            parent=SpanContext(
                trace,
                span_id(span.run_id, span.parent_id),
                True,
                TraceFlags(TraceFlags.SAMPLED),
            ),
            resource=self._resource,
            attributes=attrs,
            kind=kind,
            status=status,
            start_time=start,
            end_time=start + int(span.latency_ms * 1e6),
            instrumentation_scope=_SCOPE,
        )

    def _root(self, run: RunRecord) -> ReadableSpan:
        attrs: dict[str, Any] = {
            "corral.run_id": run.run_id,
            "corral.workflow": run.workflow,
            "corral.status": run.status,
            "corral.durable": run.durable,
            "corral.cost_usd": str(run.cost_usd),
            "gen_ai.usage.input_tokens": run.tokens_in,
            "gen_ai.usage.output_tokens": run.tokens_out,
            "gen_ai.conversation.id": run.run_id,
        }
        if run.user:
            attrs["enduser.id"] = run.user
        if run.tenant:
            attrs["corral.tenant"] = run.tenant
        if run.tags:
            attrs["corral.tags"] = list(run.tags)
        error = self._redactor.dump(run.error)
        if error is not None:
            attrs["corral.error"] = error
        start = _ns(run.started_at)
        end = _ns(run.finished_at) if run.finished_at is not None else start
        return ReadableSpan(
            name=f"run {run.workflow}",
            context=SpanContext(
                trace_id(run.run_id),
                span_id(run.run_id, None),
                True,
                TraceFlags(TraceFlags.SAMPLED),
            ),
            parent=None,
            resource=self._resource,
            attributes=attrs,
            kind=SpanKind.SERVER,
            status=Status(StatusCode.OK)
            if run.status == "succeeded"
            else Status(StatusCode.ERROR, run.status),
            start_time=start,
            end_time=end,
            instrumentation_scope=_SCOPE,
        )
