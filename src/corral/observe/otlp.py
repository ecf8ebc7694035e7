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
runs; `_otlp_wire` encodes the same protobuf in ~10 us (bench/observe.py). With
`child_process` the thread turns spans into rows (`_otlp_rows`) and a child process
(`_otlp_child`) encodes and POSTs them, off the runs' interpreter.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
import urllib.error
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from corral.observe import _otlp_child
from corral.observe._otlp_rows import (
    Row,
    encode_request,
    encode_row,
    post,
    span_bytes,
    trace_bytes,
)
from corral.observe.redact import Redactor
from corral.telemetry import OtlpConfig
from corral.trace import RunRecord, Span

__all__ = ["OtlpExporter", "span_id", "trace_id"]

log = logging.getLogger("corral.observe.otlp")

_THREAD = "corral-otlp-export"
_LOG_EVERY_S = 60.0
_CHILD = Path(_otlp_child.__file__)


def trace_id(run_id: str) -> int:
    """The OpenTelemetry trace id of a run (128 bits from its run id)."""
    return int.from_bytes(trace_bytes(run_id), "big")


def span_id(run_id: str, step_id: str | None) -> int:
    """The span id of a step (`None`: the run's root span)."""
    return int.from_bytes(span_bytes(run_id, step_id), "big")


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
        send: Callable[[bytes], None] | None = None,
    ) -> None:
        self._child: _Child | None = None
        if send is None:
            if config.endpoint is None:
                raise ValueError("OtlpExporter needs otlp.endpoint")
            if config.child_process:
                self._child = _Child(config)
            send = post(config.endpoint, dict(config.headers), config.timeout_s)
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
        """CPU seconds the export thread spent (turning spans into rows, and with the child off,
        encoding and sending them): the part that shares the GIL with the runs."""
        self.child_cpu_s = 0.0
        """CPU seconds the export child spent encoding and sending."""
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
        if self._child is not None:
            self._child.close(timeout_s)

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
            rows = [self._row(item) for item in batch]
            ok = self._through_child(rows) if self._child is not None else None
            if ok is None:  # no child (off, or it cannot start here): encode in this thread
                self._send_bytes(
                    encode_request(self._resource, "corral", list(map(encode_row, rows)))
                )
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

    def _through_child(self, rows: list[Row]) -> bool | None:
        """Export through the child: whether the endpoint took the rows, or None when the child
        cannot be started at all (then the thread exports from now on).

        Raises:
            OSError: the child died (it is started again for the next batch).
        """
        assert self._child is not None
        try:
            exported, failed, error, cpu_s = self._child.export(rows)
        except OSError:
            if self._child.startable:
                raise
            log.warning(
                "the OTLP export child cannot start (%s); exporting from the export thread",
                self._child.start_error,
            )
            self._child = None
            return None
        self.child_cpu_s += cpu_s
        if failed:
            log.debug("OTLP export failed: %s", error)
        return failed == 0

    def _row(self, item: Span | RunRecord) -> Row:
        """The item as plain data for `_otlp_rows.encode_row`, payloads redacted."""
        if isinstance(item, RunRecord):
            run = item
            start = _ns(run.started_at)
            return (
                "r",
                run.run_id,
                run.workflow,
                run.status,
                run.durable,
                str(run.cost_usd),
                run.tokens_in,
                run.tokens_out,
                run.user,
                run.tenant,
                tuple(run.tags),
                self._redactor.dump(run.error) if run.error is not None else None,
                start,
                _ns(run.finished_at) if run.finished_at is not None else start,
            )
        span = item
        error_type, error_message = None, ""
        if span.status not in ("ok", "replayed_effect"):
            error = span.error or {}
            # The status message is error text a tool or provider wrote: redacted like the
            # payloads (it is not one of them, so `span_fields` does not cover it).
            redact = self._redactor.text
            error_type = redact(str(error.get("code") or error.get("error") or span.status))
            error_message = redact(str(error.get("message", span.status)))
        human: tuple[tuple[str, str], ...] = ()
        if span.kind == "human" and span.attrs:
            human = tuple(
                (key, str(span.attrs[key]))
                for key in ("request_id", "action", "by")
                if span.attrs.get(key) is not None
            )
        return (
            "s",
            span.run_id,
            span.step_id,
            span.parent_id,
            span.kind,
            span.name,
            span.agent,
            span.model,
            span.tier,
            span.status,
            span.tokens_in,
            span.tokens_out,
            str(span.cost_usd),
            span.latency_ms,
            _ns(span.started_at),
            error_type,
            error_message,
            tuple(self._redactor.span_fields(span)),
            human,
        )


def _child_command() -> list[str]:
    """This interpreter, without site-packages, running the child by path."""
    return [sys.executable, "-S", str(_CHILD)]


class _Child:
    """The export child process (`_otlp_child`), started on first use and again if it dies."""

    def __init__(self, config: OtlpConfig) -> None:
        self._config = {
            "endpoint": config.endpoint,
            "headers": dict(config.headers),
            "timeout_s": config.timeout_s,
            "service_name": config.service_name,
        }
        self._proc: subprocess.Popen[bytes] | None = None
        self.startable = True
        """False once starting the child failed (no interpreter to run it): the exporter then
        encodes in its thread instead."""
        self.start_error = ""

    def export(self, rows: list[Row]) -> tuple[int, int, str, float]:
        """Have the child send `rows`; (exported, failed, error, child CPU seconds).

        Raises:
            OSError: the child could not be started or died (it is started again next time).
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._stop()
            try:
                proc = self._proc = subprocess.Popen(
                    _child_command(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            except OSError as exc:
                self.startable, self.start_error = False, repr(exc)
                raise
            assert proc.stdin is not None
            _otlp_child.write_frame(proc.stdin, self._config)
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            _otlp_child.write_frame(proc.stdin, rows)
            reply = _otlp_child.read_frame(proc.stdout)  # blocks without holding the GIL
        except (OSError, ValueError) as exc:
            self._stop()
            raise OSError(f"the OTLP export child failed: {exc!r}") from exc
        if reply is None:
            self._stop()
            raise OSError("the OTLP export child exited")
        exported, failed, error, cpu_s = reply
        return exported, failed, error, cpu_s

    def close(self, timeout_s: float) -> None:
        """End the child (it exits at the end of its input)."""
        self._stop(timeout_s)

    def _stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        assert proc.stdout is not None
        with contextlib.suppress(OSError):  # the child may be gone already
            proc.stdin.close()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
