"""Observability: redaction, OpenTelemetry export, the cost ledger, metrics and alerts.

Importing this package loads only the policies; exporters and the metrics endpoint load their
libraries when used.
"""

from corral.telemetry import AlertPolicy, OtlpConfig, RetentionPolicy, TracePolicy

__all__ = ["AlertPolicy", "OtlpConfig", "RetentionPolicy", "TracePolicy"]
