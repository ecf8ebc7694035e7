"""The OTLP exporter's rows: error text is redacted in the span status too."""

from __future__ import annotations

from datetime import UTC, datetime

from corral.contracts import RunId
from corral.observe.otlp import OtlpExporter
from corral.secrets import register_secret
from corral.telemetry import OtlpConfig
from corral.trace import Span


def test_a_spans_status_message_is_redacted_like_its_attributes():
    key = register_secret("otlp-status-key-2210")
    sent: list[bytes] = []
    exporter = OtlpExporter(OtlpConfig(child_process=False), send=sent.append)
    span = Span(
        run_id=RunId("r1"),
        step_id="1.1",
        parent_id="1",
        kind="tool",
        name="fetch",
        agent="helper",
        status="error",
        error={"code": "tool_error", "message": f"401 for {key} (token sk-{'a' * 24})"},
        started_at=datetime.now(UTC),
    )
    try:
        exporter.spans([span])
        assert exporter.flush()
    finally:
        exporter.close()
    body = b"".join(sent)
    assert b"401 for [REDACTED] (token [REDACTED])" in body
    assert key.encode() not in body and b"sk-aaaa" not in body
