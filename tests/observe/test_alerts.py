"""Anomaly alerts: synthetic series (step change fires, noise stays quiet), thresholds, cooldown,
the webhook over real HTTP, storage and acknowledgement."""

from __future__ import annotations

import random
import statistics
from collections import deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from corral import Agent, App, AppConfig, ModelPrice, RunContext
from corral.errors import ConfigError, ProviderError
from corral.guards import BreakerPolicy, GuardPolicies, LoopPolicy, RetryPolicy
from corral.observe import AlertPolicy
from corral.observe.alerts import Detector, _median
from corral.store import queries
from corral.testing import FakeClock, FakeModel

T0 = datetime(2026, 11, 22, tzinfo=UTC)


def feed(detector: Detector, values: list[float], metric: str = "latency_ms") -> list[int]:
    """Indexes of the values that raised an alert."""
    fired = []
    for i, value in enumerate(values):
        if detector.observe("triage", metric, value, at=T0 + timedelta(seconds=i)):
            fired.append(i)
    return fired


def noise(n: int, mean: float, sd: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [max(0.0, rng.gauss(mean, sd)) for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_noise_stays_quiet(seed):
    detector = Detector(AlertPolicy(cooldown_s=0))
    assert feed(detector, noise(2000, 800, 120, seed)) == []


def test_a_step_change_fires_within_the_recent_window_and_once_per_cooldown():
    detector = Detector(AlertPolicy(cooldown_s=3600))
    series = noise(200, 800, 120, 1) + noise(100, 2400, 120, 2)  # latency triples at run 200
    fired = feed(detector, series)
    assert fired and 200 <= fired[0] < 203  # the median of 5 moves after 3 changed runs
    assert len(fired) == 1  # then the cooldown holds it
    mean, _, n = detector.baseline("triage", "latency_ms") or (0, 0, 0)
    assert n == 100 and mean > 2000  # the baseline has moved to the new normal


def test_a_single_bad_run_does_not_page_but_every_run_mode_does():
    series = noise(100, 800, 50, 3)
    series[60] = 1600
    assert feed(Detector(AlertPolicy(cooldown_s=0)), series) == []
    assert 60 in feed(Detector(AlertPolicy(cooldown_s=0, recent=1)), series)


def test_cost_above_120_percent_of_baseline_is_a_cost_alert():
    detector = Detector(AlertPolicy(cooldown_s=0, sigmas=100))  # only the cost rule can fire
    series = noise(60, 0.010, 0.0005, 4) + [0.013] * 5
    fired = feed(detector, series, metric="cost_usd")
    assert fired == [62, 63, 64]  # once the median of the last 5 runs is the new cost
    [alert] = detector.observe("triage", "cost_usd", 0.013, at=T0 + timedelta(days=1))
    assert alert.kind == "cost" and alert.limit == pytest.approx(1.2 * alert.baseline)


def test_hard_thresholds_fire_from_the_first_run_per_agent_or_for_all():
    detector = Detector(
        AlertPolicy(thresholds={"latency_ms": 5000, "triage.error_rate": 0.5}, cooldown_s=0)
    )
    [alert] = detector.observe("triage", "latency_ms", 6000, at=T0)
    assert alert.kind == "threshold" and alert.limit == 5000
    assert detector.observe("writer", "error_rate", 0.9, at=T0) == []
    assert detector.observe("triage", "error_rate", 0.9, at=T0)[0].metric == "error_rate"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"thresholds": {"latency": 1.0}}, "alerts.thresholds.latency"),
        ({"min_samples": 500}, "alerts.min_samples"),
        ({"cost_ratio": 0.9}, "alerts.cost_ratio"),
        ({"webhook_url": "hooks.example.com"}, "alerts.webhook_url"),
    ],
)
def test_bad_alert_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError) as info:
        AlertPolicy(**kwargs)
    assert info.value.key == key


class Q(BaseModel):
    text: str


class A(BaseModel):
    answer: str


async def test_a_degrading_agent_is_alerted_stored_posted_and_acknowledged(serve, tmp_path):
    hook = FastAPI()
    posted: list[dict] = []

    @hook.post("/alerts")
    async def receive(request: Request) -> dict:
        posted.append(await request.json())
        return {}

    url = await serve(hook)
    clock = FakeClock(start=T0)
    model = FakeModel(name="fake:model")
    config = AppConfig(
        database=f"sqlite:///{tmp_path / 'c.db'}",
        durable=False,
        tiers={"small": "fake:model"},
        prices={"fake": ModelPrice(input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))},
        alerts=AlertPolicy(min_samples=10, webhook_url=f"{url}/alerts"),
    )
    app = App(config, models={"fake:model": model}, clock=clock)
    agent = Agent(name="answerer", instructions="Answer.", input=Q, output=A)

    @app.workflow
    async def ask(ctx: RunContext, q: Q) -> A:
        return await ctx.call(agent, q)

    async with app:
        for i in range(30):
            # Healthy for 20 runs, then every answer fails validation (error rate 0 -> 1).
            model.push({"answer": "ok"} if i < 20 else "not json", "still not json")
            await app.run("ask", {"text": f"q{i}"})
        assert app.alerts is not None
        await app.alerts.drain()
        stored = await app.store.query(queries.list_alerts)
        first = stored[-1]
        assert await app.store.acknowledge_alert(first["id"], "oncall", T0)
        assert not await app.store.acknowledge_alert(first["id"], "oncall", T0)  # only once
        left = await app.store.query(queries.list_alerts)
    kinds = {(a["kind"], a["agent"], a["metric"]) for a in stored}
    assert ("anomaly", "answerer", "error_rate") in kinds
    assert len([a for a in stored if a["metric"] == "error_rate"]) == 1  # dedup + cooldown
    assert {p["key"] for p in posted} == {a["key"] for a in stored}
    error = next(p for p in posted if p["metric"] == "error_rate")
    assert error["subject"] == "answerer" and error["value"] > 0.5 and error["run_id"]
    assert len(left) == len(stored) - 1


async def test_baselines_survive_a_restart(tmp_path):
    clock = FakeClock(start=T0)
    model = FakeModel(name="fake:model")
    config = AppConfig(
        database=f"sqlite:///{tmp_path / 'c.db'}",
        durable=False,
        tiers={"small": "fake:model"},
        alerts=AlertPolicy(min_samples=10),
    )
    agent = Agent(name="answerer", instructions="Answer.", input=Q, output=A)

    def build() -> App:
        app = App(config, models={"fake:model": model}, clock=clock)

        @app.workflow
        async def ask(ctx: RunContext, q: Q) -> A:
            return await ctx.call(agent, q)

        return app

    async with build() as app:
        for i in range(30):
            model.push({"answer": "ok"})
            assert (await app.run("ask", {"text": f"q{i}"})).ok
    async with build() as app:
        assert app.alerts is not None
        mean, std, n = app.alerts.detector.baseline("answerer", "error_rate") or (1, 1, 0)
        assert (mean, std, n) == (0.0, 0.0, 25)  # the last 5 runs are the "recent" window
        assert app.alerts.detector.baseline("workflow:ask", "cost_per_task") is not None
        for i in range(3):  # failures right after the restart are judged against the old normal
            model.push("not json", "still not json")
            await app.run("ask", {"text": f"bad{i}"})
        await app.alerts.drain()
        kinds = {(a.kind, a.metric) for a in app.alerts.delivered}
    assert ("anomaly", "error_rate") in kinds


def test_the_recent_median_matches_statistics_median():
    rng = random.Random(7)
    for size in range(1, 12):
        values = deque(rng.uniform(-5, 5) for _ in range(size))
        assert _median(values) == statistics.median(values)


async def test_a_run_that_raises_many_alerts_logs_one_warning(tmp_path, caplog):
    """A benchmark's first durable run logged ~18 WARNINGs: one per metric per agent."""
    import logging

    model = FakeModel(name="fake:model")
    config = AppConfig(
        database=f"sqlite:///{tmp_path / 'c.db'}",
        durable=False,
        tiers={"small": "fake:model"},
        prices={"fake": ModelPrice(input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))},
        alerts=AlertPolicy(thresholds={"latency_ms": -1, "cost_usd": -1, "error_rate": -1}),
    )
    agents = [Agent(name=n, instructions="Answer.", input=Q, output=A) for n in ("one", "two")]
    app = App(config, models={"fake:model": model}, clock=FakeClock(start=T0))

    @app.workflow
    async def ask(ctx: RunContext, q: Q) -> A:
        for agent in agents:
            await ctx.call(agent, q)
        return A(answer="ok")

    caplog.set_level(logging.DEBUG, logger="corral.alerts")
    async with app:
        model.push({"answer": "a"}, {"answer": "b"})
        result = await app.run("ask", {"text": "q"})
        assert app.alerts is not None
        await app.alerts.drain()
        assert len(app.alerts.delivered) == 6  # 3 metrics x 2 agents
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    [line] = [r.getMessage() for r in warnings if r.name == "corral.alerts"]
    assert line.startswith(f"run {result.run_id} raised 6 alerts (threshold one error_rate, ")
    assert line.endswith("; `corral alerts list` shows them")
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "alert" in r.getMessage()]
    assert len(debug) == 6


async def test_an_agent_stopped_by_an_error_streak_is_a_stored_and_posted_alert(serve, tmp_path):
    """It used to be a log line and a span only; and the tier's fallback model went on serving
    the stopped agent."""
    hook = FastAPI()
    posted: list[dict] = []

    @hook.post("/alerts")
    async def receive(request: Request) -> dict:
        posted.append(await request.json())
        return {}

    url = await serve(hook)
    down = ProviderError("upstream down", retryable=True, status=503, provider="fake")
    primary = FakeModel([down] * 6, name="fake:primary")
    backup = FakeModel(name="fake:backup")
    config = AppConfig(
        database=f"sqlite:///{tmp_path / 'c.db'}",
        durable=False,
        tiers={"small": "fake:primary"},
        fallbacks={"small": ("fake:backup",)},
        guards=GuardPolicies(
            loops=LoopPolicy(error_streak=3),
            retry=RetryPolicy(max_attempts=3, base_delay_s=0),
            breaker=BreakerPolicy(minimum_calls=100, window_size=100),
        ),
        alerts=AlertPolicy(webhook_url=f"{url}/alerts"),
    )
    app = App(
        config,
        models={"fake:primary": primary, "fake:backup": backup},
        clock=FakeClock(start=T0),
    )
    agent = Agent(name="answerer", instructions="Answer.", input=Q, output=A)

    @app.workflow
    async def ask(ctx: RunContext, q: Q) -> A:
        return await ctx.call(agent, q)

    async with app:
        first = await app.run("ask", {"text": "q1"})
        second = await app.run("ask", {"text": "q2"})
        assert app.alerts is not None
        await app.alerts.drain()
        stored = await app.store.query(queries.list_alerts)
    assert first.error["code"] == "provider_error"
    assert backup.requests == []  # the stopped agent was not handed to the fallback model
    [alert] = [a for a in stored if a["kind"] == "agent_stopped"]
    assert (alert["agent"], alert["metric"], alert["run_id"]) == (
        "answerer",
        "error_streak",
        first.run_id,
    )
    assert alert["value"] == 3 and alert["limit_value"] == 3
    assert "the same error from fake:primary 3 times in a row" in alert["message"]
    # The second run's stop is the same alert within the cooldown: stored and posted once.
    assert second.error["code"] == "provider_error"
    assert [p["kind"] for p in posted] == ["agent_stopped"]
    assert posted[0]["subject"] == "answerer" and posted[0]["run_id"] == first.run_id
