"""Anomaly and threshold alerts per agent: which agent is degrading right now.

After every run, each agent that ran contributes one value per metric: its error rate in that run,
its mean call latency (ms) and its cost (USD); the workflow contributes its cost per task. The
`Detector` keeps a rolling window of the last `AlertPolicy.window` values per (subject, metric)
and raises:

- `anomaly`: the current value (the median of the last `recent` runs) is more than `sigmas`
  standard deviations from the baseline's mean (once it holds `min_samples` values);
- `cost`: a current cost above `cost_ratio` (120%) of its baseline mean;
- `threshold`: above a hard limit from `AlertPolicy.thresholds`, from the first run.

Guards raise their own alerts as they happen, through `AlertMonitor.guard_alert` (the guard
chain's `Alarm`): `agent_stopped` when the same error `guards.loops.error_streak` times in a row
stops an agent for the rest of its run.

The same (kind, subject, metric) fires at most once per `cooldown_s`. `AlertMonitor` is the
`Tap` that feeds the detector from the spans of finished runs and delivers alerts: stored in
the run database (listed and acknowledged with `corral alerts` and the dashboard), logged, and
POSTed as JSON to `webhook_url` when set. Delivery happens off the hot path and never fails a
run. The webhook uses the standard library's `urllib` in a worker thread: one POST per alert
does not justify an HTTP client dependency in the embedded default.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from corral.clock import Clock
from corral.guards.step import GuardAlertKind
from corral.observe.webhook import post_json
from corral.secrets import url_host
from corral.state.memory import MemoryCooldowns
from corral.telemetry import AlertPolicy
from corral.trace import RunRecord, Span

__all__ = ["Alert", "AlertMonitor", "Cooldowns", "Detector"]


class Cooldowns(Protocol):
    """Which alerts fired recently: set-if-absent with expiry.

    Contract: `claim(key, at=t, cooldown_s=c)` is True, and holds the key until `t + c`, when
    the key is free at `t`; False while it is held. Atomic: of many processes claiming the
    same free key at once, exactly one gets True (Redis: `SET key 1 NX PX c`). Synchronous for
    the in-memory backend; a shared backend claims in its own round trip, so a detector
    behind one is used from a thread or gains an async variant (the contract is the same).
    `tests/state/test_cooldowns.py` is the contract, parametrized over backends.
    """

    def claim(self, key: str, *, at: float, cooldown_s: float) -> bool:
        """Take `key` for `cooldown_s` from `at` (epoch seconds); False if it is taken."""
        ...


log = logging.getLogger("corral.alerts")

AlertKind = Literal["anomaly", "cost", "threshold"] | GuardAlertKind
_COSTS = frozenset({"cost_usd", "cost_per_task"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One alert, as stored and sent."""

    kind: AlertKind
    subject: str
    """The agent's name, or `workflow:NAME` for a workflow's cost per task."""
    metric: str
    value: float
    baseline: float | None
    limit: float | None
    run_id: str | None
    message: str
    at: datetime

    @property
    def key(self) -> str:
        """What dedup and cooldown compare."""
        return f"{self.kind}:{self.subject}:{self.metric}"


class Detector:
    """Rolling baselines and the three alert rules (pure: no I/O, time passed in).

    The current value of a metric is the median of its last `AlertPolicy.recent` runs, compared
    with the baseline of the `window` runs before those: one slow or failed run among normal ones
    does not page anyone, however extreme; a step change does within `recent` runs.
    """

    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy
        self._series: dict[tuple[str, str], _Series] = {}
        self.cooldowns: Cooldowns = MemoryCooldowns()
        """Which alerts fired recently (shared between processes when the backend is)."""

    def baseline(self, subject: str, metric: str) -> tuple[float, float, int] | None:
        """(mean, standard deviation, samples) of a baseline window, or None while empty."""
        series = self._series.get((subject, metric))
        return None if series is None or not series.base else series.stats()

    def seed(self, subject: str, metric: str, value: float) -> None:
        """Add a past run's value to the windows without checking it (restoring baselines)."""
        series = self._of(subject, metric)
        series.recent.append(value)
        if len(series.recent) > self.policy.recent:
            series.push(series.recent.popleft())

    def _of(self, subject: str, metric: str) -> _Series:
        series = self._series.get((subject, metric))
        if series is None:
            series = self._series[(subject, metric)] = _Series(self.policy.window)
        return series

    def observe(
        self, subject: str, metric: str, value: float, *, at: datetime, run_id: str | None = None
    ) -> list[Alert]:
        """Add one run's value; returns the alerts it raises (after dedup and cooldown)."""
        found: list[Alert] = []
        self.observe_into(found, subject, metric, value, at, run_id)
        return found

    def observe_into(
        self,
        found: list[Alert],
        subject: str,
        metric: str,
        value: float,
        at: datetime,
        run_id: str | None,
    ) -> None:
        """`observe`, appending the alerts raised to `found`: the monitor feeds a run's dozen
        values through here, so the common case (no alert) is spelled out in one function."""
        p = self.policy
        limits = p.thresholds
        if limits:
            limit = limits.get(f"{subject}.{metric}", limits.get(metric))
            if limit is not None and value > limit and self._due("threshold", subject, metric, at):
                found.append(
                    Alert(
                        kind="threshold",
                        subject=subject,
                        metric=metric,
                        value=value,
                        baseline=None,
                        limit=limit,
                        run_id=run_id,
                        message=f"{subject} {metric} {value:.6g} is above its limit {limit:.6g}",
                        at=at,
                    ),
                )
        series = self._series.get((subject, metric))
        if series is None:
            series = self._of(subject, metric)
        recent = series.recent
        recent.append(value)
        size = len(recent)
        if size > p.recent:
            series.push(recent.popleft())
        elif size < p.recent:
            return
        if len(series.base) < max(p.min_samples, 1):
            return
        mean, std, n = series.stats()
        current = _median(recent)
        # A flat baseline has std 0: then a move of more than 1% of the mean is a change.
        spread = max(std, abs(mean) * 0.01, 1e-12)
        if abs(current - mean) > p.sigmas * spread and self._due("anomaly", subject, metric, at):
            found.append(
                Alert(
                    kind="anomaly",
                    subject=subject,
                    metric=metric,
                    value=current,
                    baseline=mean,
                    limit=p.sigmas * spread,
                    run_id=run_id,
                    message=(
                        f"{subject} {metric} {current:.6g} (median of the last {p.recent} "
                        f"runs) is {abs(current - mean) / spread:.1f} standard deviations "
                        f"from its baseline {mean:.6g} over {n} runs"
                    ),
                    at=at,
                ),
            )
        if (
            metric in _COSTS
            and mean > 0
            and current > p.cost_ratio * mean
            and self._due("cost", subject, metric, at)
        ):
            found.append(
                Alert(
                    kind="cost",
                    subject=subject,
                    metric=metric,
                    value=current,
                    baseline=mean,
                    limit=p.cost_ratio * mean,
                    run_id=run_id,
                    message=(
                        f"{subject} {metric} ${current:.6g} is {current / mean:.0%} of its "
                        f"baseline ${mean:.6g} (limit {p.cost_ratio:.0%})"
                    ),
                    at=at,
                ),
            )

    def _due(self, kind: AlertKind, subject: str, metric: str, at: datetime) -> bool:
        """Whether this alert may fire at `at` (the same one did not within the cooldown); if
        so it is taken as fired. Checked before the alert and its message are built: under a
        steady anomaly most runs fall in the cooldown."""
        key = f"{kind}:{subject}:{metric}"  # `Alert.key`
        return self.cooldowns.claim(key, at=at.timestamp(), cooldown_s=self.policy.cooldown_s)


def _median(values: deque[float]) -> float:
    """`statistics.median` for the few recent values, without its generality (once per run)."""
    ordered = sorted(values)
    half = len(ordered) // 2
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2


class _Series:
    """One (subject, metric): its last `recent` values, and the `size` values before them (the
    baseline) with running sums, so its mean and deviation cost O(1) per run."""

    __slots__ = ("base", "recent", "size", "squares", "total")

    def __init__(self, size: int) -> None:
        self.recent: deque[float] = deque()
        self.base: deque[float] = deque()
        self.size = size
        self.total = 0.0
        self.squares = 0.0

    def push(self, value: float) -> None:
        """Move a value into the baseline (the oldest falls out past `size`)."""
        base = self.base
        base.append(value)
        self.total += value
        self.squares += value * value
        if len(base) > self.size:
            old = base.popleft()
            self.total -= old
            self.squares -= old * old

    def stats(self) -> tuple[float, float, int]:
        n = len(self.base)
        mean = self.total / n
        return mean, math.sqrt(max(0.0, self.squares / n - mean * mean)), n


class AlertStore(Protocol):
    async def add_alert(self, alert: dict[str, Any]) -> int: ...


@dataclass(slots=True)
class _RunTally:
    calls: int = 0
    errors: int = 0
    latency_ms: float = 0.0
    cost: Decimal = Decimal(0)


class AlertMonitor:
    """The `Tap` that turns finished runs into metric values, and alerts into deliveries; also
    the guard chain's `Alarm` (`guard_alert`).

    Args:
        policy: Baselines, rules and sinks.
        store: Where alerts are kept (the run database).
        clock: The app's clock (alert times, cooldowns).
    """

    def __init__(self, policy: AlertPolicy, store: AlertStore, clock: Clock) -> None:
        self.detector = Detector(policy)
        self.policy = policy
        self._store = store
        self._clock = clock
        self._runs: dict[str, dict[str, _RunTally]] = {}
        self._subjects: dict[str, str] = {}  # workflow name -> its alert subject
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered: list[Alert] = []
        self.webhook_failures = 0

    async def restore(self, store: Any) -> int:
        """Rebuild the baselines from the last runs in the run database (so a restart does not
        forget what normal looks like); returns how many runs were read."""
        from corral.store.queries import recent_run_values

        past = await store.query(recent_run_values, self.policy.window + self.policy.recent)
        for run in past:
            for agent, values in run["agents"].items():
                for metric, value in values.items():
                    self.detector.seed(agent, metric, value)
            self.detector.seed(f"workflow:{run['workflow']}", "cost_per_task", run["cost_usd"])
        return len(past)

    def spans(self, spans: Sequence[Span]) -> None:
        for span in spans:
            if span.kind == "agent":
                # get, then create: `setdefault` would build a dict and a tally per span
                agents = self._runs.get(span.run_id)
                if agents is None:
                    agents = self._runs[span.run_id] = {}
                tally = agents.get(span.name)
                if tally is None:
                    tally = agents[span.name] = _RunTally()
                tally.calls += 1
                tally.errors += span.status != "ok"
                tally.latency_ms += span.latency_ms
                tally.cost += span.cost_usd

    def run(self, run: RunRecord) -> None:
        if run.status == "running":
            return
        tallies = self._runs.pop(run.run_id, None)  # None: no agent spans (recording off)
        now = run.finished_at or self._clock.now()
        run_id = run.run_id
        found: list[Alert] = []
        observe = self.detector.observe_into
        if tallies:
            for agent, t in sorted(tallies.items()):
                observe(found, agent, "error_rate", t.errors / t.calls, now, run_id)
                observe(found, agent, "latency_ms", t.latency_ms / t.calls, now, run_id)
                observe(found, agent, "cost_usd", float(t.cost), now, run_id)
        subject = self._subjects.get(run.workflow)
        if subject is None:
            subject = self._subjects[run.workflow] = f"workflow:{run.workflow}"
        observe(found, subject, "cost_per_task", float(run.cost_usd), now, run_id)
        if found:
            self._start(self._deliver(found))

    def guard_alert(
        self,
        *,
        kind: GuardAlertKind,
        subject: str,
        metric: str,
        value: float,
        limit: float | None,
        run_id: str,
        message: str,
    ) -> None:
        """A guard's alert (`agent_stopped`), delivered like the others: stored, logged and sent
        to the webhook, at most once per (kind, subject, metric) per cooldown."""
        at = self._clock.now()
        if not self.detector._due(kind, subject, metric, at):
            return
        alert = Alert(
            kind=kind,
            subject=subject,
            metric=metric,
            value=value,
            baseline=None,
            limit=limit,
            run_id=run_id,
            message=message,
            at=at,
        )
        self._start(self._deliver([alert]))

    def _start(self, delivery: Coroutine[Any, Any, None]) -> None:
        """Deliver off the hot path; `drain` waits for it."""
        task = asyncio.get_running_loop().create_task(delivery)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, found: list[Alert]) -> None:
        # One line per run, not one per metric: a run that moves every metric of every agent
        # (a benchmark's first durable run) raised ~18 WARNINGs. Each alert is stored, sent,
        # and logged in full at DEBUG.
        run_id = found[0].run_id
        log.warning(
            "run %s raised %d alert%s (%s); `corral alerts list` shows them",
            run_id,
            len(found),
            "" if len(found) == 1 else "s",
            ", ".join(f"{a.kind} {a.subject} {a.metric}" for a in found),
            extra={"run_id": run_id, "alerts": [a.key for a in found]},
        )
        for alert in found:
            log.debug("alert %s: %s", alert.kind, alert.message, extra={"alert": alert.key})
            try:
                await self._store.add_alert(
                    {
                        "key": alert.key,
                        "kind": alert.kind,
                        "agent": alert.subject,
                        "metric": alert.metric,
                        "value": alert.value,
                        "baseline": alert.baseline,
                        "limit_value": alert.limit,
                        "run_id": alert.run_id,
                        "message": alert.message,
                        "created_at": alert.at,
                    }
                )
            except Exception:  # boundary: alerting must never take the app down
                log.exception("could not store alert %s", alert.key)
            if self.policy.webhook_url:
                try:
                    await asyncio.to_thread(
                        post_json,
                        self.policy.webhook_url,
                        _payload(alert),
                        user_agent="corral-alerts",
                    )
                except Exception as exc:  # boundary: a down webhook is logged, not raised
                    self.webhook_failures += 1
                    log.warning(
                        "alert webhook at %s failed: %s", url_host(self.policy.webhook_url), exc
                    )
            self.delivered.append(alert)

    async def drain(self) -> None:
        """Wait for alerts being delivered (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _payload(alert: Alert) -> dict[str, Any]:
    data = asdict(alert)
    data["at"] = alert.at.isoformat()
    data["key"] = alert.key
    return data
