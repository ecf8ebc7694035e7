"""Prometheus exposition of Corral's metrics, computed from the run database at scrape time.

The run database is the source of truth across processes (a worker records, `corral serve`
reads), so each scrape aggregates the last `window` (default 1h) of spans into gauges labelled
with the window, rather than keeping counters in one process's memory. Live state that only an
in-process app knows (breaker states, limiter queue depth by priority) is added when the app is
given. Rendered with `prometheus_client`'s own registry and text format.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from corral.guards.policy import PRIORITIES
from corral.store import queries
from corral.store.sql import SqlStore

if TYPE_CHECKING:
    from corral.app import App

__all__ = ["render"]

_BREAKER = {"CLOSED": 0, "DISABLED": 0, "HALF_OPEN": 1, "OPEN": 2, "FORCED_OPEN": 2}


class _Snapshot(Collector):
    def __init__(
        self,
        metrics: dict[str, dict[str, Any]],
        waits: dict[str, dict[str, Any]],
        app: App | None,
        window: str,
        pending: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.metrics, self.waits, self.app, self.window = metrics, waits, app, window
        self.pending = pending or {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        w = self.window
        labels = ["agent", "window"]

        def family(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"corral_agent_{name}", doc, labels=labels + (extra or []))

        calls = family("calls", "Agent calls in the window, by outcome.", ["outcome"])
        latency = family("latency_ms", "Agent call latency percentiles (ms).", ["quantile"])
        tokens = family("tokens", "Model tokens in the window.", ["direction"])
        cost = family("cost_usd", "Model spend in the window (USD).")
        counts = {
            key: family(key, f"{doc} in the window.")
            for key, doc in (
                ("retries", "Model-call retries"),
                ("fallbacks", "Fallbacks to another model"),
                ("repairs", "Output repair attempts"),
                ("cache_hits", "Answers served from cache"),
                ("secrets_redacted", "Loaded secret values removed from prompts"),
            )
        }
        tools = family("tool_calls", "Tool calls in the window, by outcome.", ["outcome"])
        success = family("success_ratio", "Share of agent calls that succeeded.")
        breaker = family("breaker_state", "0 closed, 1 half-open, 2 open (last seen or live).")
        for agent, m in self.metrics.items():
            calls.add_metric([agent, w, "ok"], m["calls"] - m["errors"])
            calls.add_metric([agent, w, "error"], m["errors"])
            for q in ("p50", "p95", "p99"):
                if m[f"{q}_ms"] is not None:
                    latency.add_metric([agent, w, f"0.{q[1:]}"], m[f"{q}_ms"])
            tokens.add_metric([agent, w, "input"], m["tokens_in"])
            tokens.add_metric([agent, w, "output"], m["tokens_out"])
            cost.add_metric([agent, w], float(m["cost_usd"]))
            for key, fam in counts.items():
                fam.add_metric([agent, w], m[key])
            tools.add_metric([agent, w, "ok"], m["tool_calls"] - m["tool_errors"])
            tools.add_metric([agent, w, "error"], m["tool_errors"])
            if m["success_rate"] is not None:
                success.add_metric([agent, w], m["success_rate"])
            breaker.add_metric([agent, w], _BREAKER.get(str(m["breaker"]).upper(), 0))
        yield from (calls, latency, tokens, cost, *counts.values(), tools, success, breaker)
        queued = GaugeMetricFamily(
            "corral_limiter_queued_calls",
            "Calls that waited for the rate limiter.",
            labels=["key", "window"],
        )
        wait = GaugeMetricFamily(
            "corral_limiter_wait_seconds",
            "Rate-limiter wait percentiles.",
            labels=["key", "window", "quantile"],
        )
        for key, v in self.waits.items():
            queued.add_metric([key, w], v["queued"])
            for q in ("p50", "p95"):
                if v[f"{q}_s"] is not None:
                    wait.add_metric([key, w, f"0.{q[1:]}"], v[f"{q}_s"])
        yield queued
        yield wait
        waiting = GaugeMetricFamily(
            "corral_human_requests_pending",
            "Approvals, escalations and reviews waiting for a human now.",
            labels=["kind"],
        )
        oldest = GaugeMetricFamily(
            "corral_human_request_oldest_seconds",
            "Age of the oldest request waiting for a human, by kind.",
            labels=["kind"],
        )
        for kind in ("approval", "escalation", "review"):
            found = self.pending.get(kind, {"pending": 0, "oldest_s": 0.0})
            waiting.add_metric([kind], found["pending"])
            oldest.add_metric([kind], found["oldest_s"])
        yield waiting
        yield oldest
        if self.app is not None:
            held = GaugeMetricFamily(
                "corral_runs_held", "Runs held at a step boundary by an operator's pause now."
            )
            held.add_metric([], len(self.app.guards.kill.held))
            yield held
            depth = GaugeMetricFamily(
                "corral_limiter_queue_depth", "Calls waiting now, by priority.", labels=["priority"]
            )
            levels = self.app.guards.limiter.queue_depths()
            for name, level in PRIORITIES.items():
                depth.add_metric([name], levels.get(level, 0))
            yield depth
            live = GaugeMetricFamily(
                "corral_breaker_state",
                "Live breaker state: 0 closed, 1 half-open, 2 open.",
                labels=["key"],
            )
            for key, state in self.app.guards.breakers.states().items():
                live.add_metric([key], _BREAKER.get(state, 0))
            yield live


async def render(
    store: SqlStore, app: App | None, since: datetime, window: str
) -> tuple[bytes, str]:
    """The Prometheus text exposition and its content type."""
    metrics = await store.query(queries.agent_metrics, since)
    waits = await store.query(queries.queue_waits, since)
    now = app.clock.now() if app is not None else datetime.now(UTC)
    pending = await store.query(queries.pending_requests, now)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(metrics, waits, app, window, pending))
    return generate_latest(registry), CONTENT_TYPE_LATEST
