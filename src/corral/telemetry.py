"""Telemetry policies, what Corral keeps, exports and alerts on: frozen policies read from
`corral.toml`.

    [trace]             what stored spans hold (prompts hidden by default, secrets always)
    [otlp]              OpenTelemetry export over OTLP/HTTP (off unless an endpoint is set)
    [alerts]            rolling baselines, thresholds and where alerts go
    [retention]         how long runs, spans and alerts are kept (`corral prune`)

Core, stdlib only: `corral.config` reads these without importing an exporter; the adapters that
act on them (`corral.observe`: redaction, OTLP export, alerts; `corral.store`: retention) import
them from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from corral.errors import ConfigError

__all__ = ["AlertPolicy", "OtlpConfig", "RetentionPolicy", "TracePolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TracePolicy:
    """What a stored or exported span may contain."""

    prompts: bool = False
    """Keep the text of the messages sent to a model. Off: each message keeps its role and
    length only. Agent payloads and outputs are always kept (truncated and redacted)."""
    max_chars: int = 4000
    """Longest JSON text kept per span field; longer values keep a preview and their size."""
    redact: tuple[str, ...] = ()
    """Your own secrets' shapes: regular expressions (Python `re` syntax) whose matches are
    replaced by `[REDACTED]` wherever Corral redacts (tables, spans, exports, logs), on top of
    the secrets Corral has loaded and common key shapes (`sk-...`, `Bearer ...`, JWTs, ...)."""

    def __post_init__(self) -> None:
        if self.max_chars < 100:
            raise ConfigError(f"must be >= 100, got {self.max_chars}", key="trace.max_chars")
        for index, pattern in enumerate(self.redact):
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"{pattern!r} is not a regular expression ({exc}); fix or remove it",
                    key=f"trace.redact.{index}",
                ) from exc
            if compiled.match(""):
                raise ConfigError(
                    f"{pattern!r} matches the empty string, so it would redact everything "
                    "(and nothing); make it match at least one character",
                    key=f"trace.redact.{index}",
                )


@dataclass(frozen=True, slots=True, kw_only=True)
class OtlpConfig:
    """OpenTelemetry export (OTLP/HTTP, protobuf): Jaeger, Tempo, Phoenix, Langfuse..."""

    endpoint: str | None = None
    """Traces URL, e.g. `http://localhost:4318/v1/traces`. Unset: no export."""
    headers: dict[str, str] = field(default_factory=dict)
    """Sent with every export (e.g. an auth header); values are never logged."""
    service_name: str = "corral"
    interval_s: float = 2.0
    """Most time a span waits before it is sent."""
    max_batch: int = 512
    max_queue: int = 20_000
    """Spans waiting beyond this are dropped (and counted), never blocking a run."""
    timeout_s: float = 5.0
    child_process: bool = True
    """Encode and send in a child process (started on the first export, restarted if it dies):
    the export thread then only hands each span over as plain data, ~9 us of the runs'
    interpreter time per span instead of ~50 (bench/observe.py, 2-core VM); the child's own
    ~55 us per span runs on another core. False: the export thread encodes and sends itself
    (no extra process)."""

    def __post_init__(self) -> None:
        for key in ("interval_s", "timeout_s"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"must be > 0, got {getattr(self, key)}", key=f"otlp.{key}")
        for key in ("max_batch", "max_queue"):
            if getattr(self, key) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, key)}", key=f"otlp.{key}")
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"{self.endpoint!r} is not an http(s) URL, e.g. http://localhost:4318/v1/traces",
                key="otlp.endpoint",
            )


_METRICS = ("error_rate", "latency_ms", "cost_usd")


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertPolicy:
    """Anomaly detection per agent metric, hard thresholds, and the sinks alerts go to."""

    enabled: bool = True
    window: int = 100
    """Runs in the rolling baseline of each (agent, metric)."""
    recent: int = 5
    """Runs whose median is the value compared with the baseline (1: every run on its own,
    which on normal noise alerts about 5% of the time at 2 sigmas)."""
    min_samples: int = 20
    """No anomaly alert until the baseline holds this many runs."""
    sigmas: float = 2.0
    """An anomaly: further than this many standard deviations from the rolling mean."""
    cost_ratio: float = 1.2
    """A cost alert: an agent's cost per run above this multiple of its baseline mean."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """Hard limits per metric (`error_rate`, `latency_ms`, `cost_usd`), for every agent
    (`latency_ms`) or one (`triage.latency_ms`): a value above it alerts at once."""
    cooldown_s: float = 600.0
    """The same alert (agent, metric, kind) fires at most once per cooldown."""
    webhook_url: str | None = None
    """JSON POST of every alert; the log sink is always on."""

    def __post_init__(self) -> None:
        if self.recent < 1:
            raise ConfigError(f"must be >= 1, got {self.recent}", key="alerts.recent")
        if self.window < 2 or not 2 <= self.min_samples <= self.window:
            raise ConfigError(
                f"need 2 <= min_samples <= window, got {self.min_samples} and {self.window}",
                key="alerts.min_samples",
            )
        for key, ok, rule in (
            ("sigmas", self.sigmas > 0, "> 0"),
            ("cost_ratio", self.cost_ratio > 1, "> 1"),
            ("cooldown_s", self.cooldown_s >= 0, ">= 0"),
        ):
            if not ok:
                raise ConfigError(f"must be {rule}, got {getattr(self, key)}", key=f"alerts.{key}")
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError(
                f"{self.webhook_url!r} is not an http(s) URL", key="alerts.webhook_url"
            )
        for name in self.thresholds:
            metric = name.rsplit(".", 1)[-1]
            if metric not in _METRICS:
                raise ConfigError(
                    f"unknown metric {metric!r}; metrics are {list(_METRICS)}",
                    key=f"alerts.thresholds.{name}",
                )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPolicy:
    """How long finished runs (with their spans and steps) and alerts are kept."""

    days: float = 30.0

    def __post_init__(self) -> None:
        if self.days <= 0:
            raise ConfigError(f"must be > 0, got {self.days}", key="retention.days")
