"""The telemetry policies, under their old import path: they live in the core, `corral.telemetry`
(the core's `corral.config` must not import an adapter). New code imports them from there."""

from __future__ import annotations

from corral.telemetry import AlertPolicy, OtlpConfig, RetentionPolicy, TracePolicy

__all__ = ["AlertPolicy", "OtlpConfig", "RetentionPolicy", "TracePolicy"]
