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
dropped and counted); one daemon thread encodes, batches and POSTs (protobuf, OTLP/HTTP).
Failures are counted and logged at most once per minute. Why not the OpenTelemetry SDK's
`BatchSpanProcessor` and exporter: they take SDK span objects, and building plus encoding those
measured ~110 us per span on the bench machine, paid in a thread that shares the GIL with the
runs; `_otlp_wire` encodes the same protobuf in ~10 us (bench/observe.py).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from corral.observe._otlp_wire import encode_attributes, encode_request, encode_span
from corral.observe.policy import OtlpConfig
from corral.observe.redact import Redactor
from corral.trace import RunRecord, Span

__all__ = ["OtlpExporter", "span_id", "trace_id"]

log = logging.getLogger("corral.observe.otlp")

_THREAD = "corral-otlp-export"
_LOG_EVERY_S = 60.0
_INTERNAL, _SERVER, _CLIENT = 1, 2, 3
_OK, _ERROR = 1, 2


_PAYLOAD_KEYS = ("corral.input", "corral.output", "corral.error", "corral.attrs")


def trace_id(run_id: str) -> int:
    """The OpenTelemetry trace id of a run (128 bits from its run id)."""
    return int.from_bytes(_trace_bytes(run_id), "big")


def span_id(run_id: str, step_id: str | None) -> int:
    """The span id of a step (`None`: the run's root span)."""
    return int.from_bytes(_span_bytes(run_id, step_id), "big")


@functools.lru_cache(maxsize=4096)
def _trace_bytes(run_id: str) -> bytes:
    return hashlib.sha256(run_id.encode()).digest()[:16]


@functools.lru_cache(maxsize=16384)
def _span_bytes(run_id: str, step_id: str | None) -> bytes:
    key = f"{run_id}\x00{step_id if step_id is not None else '<run>'}"
    return hashlib.sha256(key.encode()).digest()[:8]


@functools.lru_cache(maxsize=1024)
def _shape(
    kind: str, name: str, agent: str | None, model: str | None, tier: str | None
) -> tuple[str, int, bytes]:
    """(span name, span kind, encoded attributes) that every span of this agent / model / tool
    shares: worked out and encoded once, not per span (most of a span's attributes)."""
    attrs: dict[str, Any] = {}
    if agent:
        attrs["gen_ai.agent.name"] = agent
    span_kind = _INTERNAL
    if kind == "agent":
        title = f"invoke_agent {name}"
        attrs["gen_ai.operation.name"] = "invoke_agent"
        attrs["gen_ai.agent.name"] = name
    elif kind == "model":
        title = f"chat {model}"
        span_kind = _CLIENT
        attrs["gen_ai.operation.name"] = "chat"
        if model:
            attrs["gen_ai.request.model"] = model
            attrs["gen_ai.provider.name"] = model.partition(":")[0]
        if tier:
            attrs["corral.tier"] = tier
    elif kind == "tool":
        title = f"execute_tool {name}"
        attrs["gen_ai.operation.name"] = "execute_tool"
        attrs["gen_ai.tool.name"] = name
    elif kind == "workflow":
        title = f"workflow {name}"
        attrs["corral.workflow"] = name
    elif kind == "human":
        title = f"human {name}"
        attrs["corral.human.kind"] = name.partition(":")[0]
    else:
        title = f"guard {name}"
        attrs["corral.guard.kind"] = name
    return title, span_kind, encode_attributes(attrs)


@functools.lru_cache(maxsize=4096)
def _run_attribute(run_id: str) -> bytes:
    """`corral.run_id`, encoded once per run (every span of the run carries it)."""
    return encode_attributes({"corral.run_id": run_id})


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1e9)


def _post(url: str, headers: dict[str, str], timeout_s: float) -> Callable[[bytes], None]:
    def send(body: bytes) -> None:
        request = urllib.request.Request(
            url,
            data=body,
            headers={**headers, "Content-Type": "application/x-protobuf"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()

    return send


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
        send: Callable[[bytes], None] | None = None,
    ) -> None:
        if send is None:
            if config.endpoint is None:
                raise ValueError("OtlpExporter needs otlp.endpoint")
            send = _post(config.endpoint, dict(config.headers), config.timeout_s)
        self.config = config
        self._send_bytes = send
        self._redactor = redactor or Redactor()
        self._resource: dict[str, Any] = {"service.name": config.service_name}
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
        self.cpu_s = 0.0
        """CPU seconds the export thread spent converting, encoding and sending."""
        self._failed_logged = 0
        self._last_log = float("-inf")
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
        started = time.thread_time()
        try:
            self._export(batch)
        finally:
            self.cpu_s += time.thread_time() - started

    def _export(self, batch: list[Span | RunRecord]) -> None:
        try:
            body = encode_request(self._resource, "corral", [self._convert(i) for i in batch])
            self._send_bytes(body)
            ok = True
        except (OSError, urllib.error.URLError, ValueError) as exc:
            log.debug("OTLP export failed: %r", exc)
            ok = False
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

    def _convert(self, item: Span | RunRecord) -> bytes:
        if isinstance(item, RunRecord):
            return self._root(item)
        span = item
        name, kind, shared = _shape(span.kind, span.name, span.agent, span.model, span.tier)
        attrs: dict[str, Any] = {"corral.step_id": span.step_id}
        if span.kind == "human":
            for key in ("request_id", "action", "by"):
                if (span.attrs or {}).get(key) is not None:
                    attrs[f"corral.human.{key}"] = str((span.attrs or {})[key])
        if span.kind in ("agent", "model"):
            attrs["gen_ai.usage.input_tokens"] = span.tokens_in
            attrs["gen_ai.usage.output_tokens"] = span.tokens_out
            attrs["corral.cost_usd"] = str(span.cost_usd)
        texts = self._redactor.span_fields(span)
        for key, text in zip(_PAYLOAD_KEYS, texts, strict=True):
            if text is not None:
                attrs[key] = text
        code, message = _OK, ""
        attrs["corral.status"] = span.status
        if span.status not in ("ok", "replayed_effect"):
            error = span.error or {}
            attrs["error.type"] = str(error.get("code") or error.get("error") or span.status)
            code, message = _ERROR, str(error.get("message", span.status))
        start = _ns(span.started_at)
        return encode_span(
            trace_id=_trace_bytes(span.run_id),
            span_id=_span_bytes(span.run_id, span.step_id),
            parent_span_id=_span_bytes(span.run_id, span.parent_id),
            name=name,
            kind=kind,
            start_ns=start,
            end_ns=start + int(span.latency_ms * 1e6),
            attributes=attrs,
            status_code=code,
            status_message=message,
            encoded=shared + _run_attribute(span.run_id),
        )

    def _root(self, run: RunRecord) -> bytes:
        attrs: dict[str, Any] = {
            "corral.run_id": run.run_id,
            "corral.workflow": run.workflow,
            "corral.status": run.status,
            "corral.durable": run.durable,
            "corral.cost_usd": str(run.cost_usd),
            "gen_ai.usage.input_tokens": run.tokens_in,
            "gen_ai.usage.output_tokens": run.tokens_out,
        }
        if run.user:
            attrs["enduser.id"] = run.user
        if run.tenant:
            attrs["corral.tenant"] = run.tenant
        if run.tags:
            attrs["corral.tags"] = list(run.tags)
        if run.error is not None:
            attrs["corral.error"] = self._redactor.dump(run.error)
        start = _ns(run.started_at)
        return encode_span(
            trace_id=_trace_bytes(run.run_id),
            span_id=_span_bytes(run.run_id, None),
            parent_span_id=None,
            name=f"run {run.workflow}",
            kind=_SERVER,
            start_ns=start,
            end_ns=_ns(run.finished_at) if run.finished_at is not None else start,
            attributes=attrs,
            status_code=_OK if run.status == "succeeded" else _ERROR,
            status_message="" if run.status == "succeeded" else run.status,
        )
