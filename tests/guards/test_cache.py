"""Exact response cache: hits cost $0 and are marked; misses, TTL, namespaces, errors, temperature."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from corral import Agent, App, AppConfig, RunContext, SimConfig
from corral.guards import CachePolicy, GuardPolicies
from corral.guards.cache import cache_key
from corral.model import Message, ModelRequest
from corral.models.sim import SimModel
from corral.testing import CountingModel, SpanRecorder, VirtualClock


class Q(BaseModel):
    text: str


class A(BaseModel):
    answer: str


def make(
    tmp_path: Any, *, policy: CachePolicy | None = None, sim: SimConfig | None = None, **agent: Any
) -> tuple[App, CountingModel, SpanRecorder, VirtualClock]:
    clock = VirtualClock()
    model = CountingModel(SimModel("sim:small", sim or SimConfig(), clock=clock))
    recorder = SpanRecorder()
    app = App(
        AppConfig(
            database=f"sqlite:///{tmp_path / 'c.db'}",
            durable=False,
            guards=GuardPolicies(cache=policy or CachePolicy(enabled=True, ttl_s=60)),
        ),
        clock=clock,
        recorder=recorder,
        models={"sim:small": model},
    )
    answerer = Agent(name="answerer", instructions="Answer.", input=Q, output=A, **agent)

    @app.workflow
    async def ask(ctx: RunContext, q: Q) -> A:
        return await ctx.call(answerer, q)

    return app, model, recorder, clock


def hits(recorder: SpanRecorder, run_id: str) -> list[Any]:
    return [s for s in recorder.spans_of(run_id, "guard") if s.name == "cache_hit"]


async def test_the_same_request_is_answered_from_the_run_database_for_free(tmp_path):
    app, model, recorder, _ = make(tmp_path)
    async with app:
        first = await app.run("ask", {"text": "what is corral"})
        second = await app.run("ask", {"text": "what is corral"})
        other = await app.run("ask", {"text": "something else"})
    assert model.calls == 2  # the repeat never reached the provider
    assert second.output == first.output
    assert second.cost_usd == 0 and first.cost_usd > 0
    [hit] = hits(recorder, second.run_id)
    assert hit.output["saved_usd"] == str(first.cost_usd)
    assert not hits(recorder, first.run_id) and not hits(recorder, other.run_id)


async def test_entries_expire_after_their_ttl(tmp_path):
    app, model, _, clock = make(tmp_path, policy=CachePolicy(enabled=True, ttl_s=60))
    async with app:
        await app.run("ask", {"text": "q"})
        await clock.sleep(61)
        await app.run("ask", {"text": "q"})
    assert model.calls == 2


async def test_tenants_never_see_each_others_answers(tmp_path):
    app, model, _, _ = make(tmp_path)
    async with app:
        await app.run("ask", {"text": "q"}, tenant="acme")
        await app.run("ask", {"text": "q"}, tenant="globex")
        await app.run("ask", {"text": "q"}, tenant="acme")
    assert model.calls == 2


async def test_errors_are_never_cached(tmp_path):
    app, model, _, _ = make(tmp_path, sim=SimConfig(error_rate=1.0))
    async with app:
        first = await app.run("ask", {"text": "q"})
        second = await app.run("ask", {"text": "q"})
    assert not first.ok and not second.ok
    assert model.calls == 6  # 3 attempts each; nothing answered from the cache


async def test_high_temperature_calls_and_opted_out_agents_are_not_cached(tmp_path):
    hot, hot_model, _, _ = make(tmp_path / "a", temperature=0.9)
    fresh, fresh_model, _, _ = make(tmp_path / "b", cache=False)
    off, off_model, _, _ = make(tmp_path / "c", policy=CachePolicy())  # disabled by default
    for app in (hot, fresh, off):
        async with app:
            await app.run("ask", {"text": "q"})
            await app.run("ask", {"text": "q"})
    assert hot_model.calls == fresh_model.calls == off_model.calls == 2


def test_the_key_covers_everything_that_changes_the_answer():
    base = ModelRequest(model="m", messages=(Message(role="user", content="hi"),))
    variants = [
        ModelRequest(model="m2", messages=base.messages),
        ModelRequest(model="m", messages=(Message(role="user", content="hi!"),)),
        ModelRequest(model="m", messages=base.messages, temperature=0.1),
        ModelRequest(model="m", messages=base.messages, max_output_tokens=1),
        ModelRequest(model="m", messages=base.messages, output_schema={"type": "object"}),
    ]
    keys = {cache_key(base), *(cache_key(v) for v in variants)}
    assert len(keys) == 1 + len(variants)
    same = ModelRequest(model="m", messages=(Message(role="user", content="hi"),))
    assert cache_key(same) == cache_key(base)


REDIS_URL = "redis://127.0.0.1:6379/15"


@__import__("pytest").mark.slow  # the Redis server
async def test_the_cache_can_live_in_redis_for_many_workers(tmp_path):
    redis = __import__("pytest").importorskip("redis.asyncio", reason="pip install corral[redis]")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # any connection failure means "no server here"
        await client.aclose()
        __import__("pytest").skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    await client.flushdb()
    policy = CachePolicy(enabled=True, backend="redis", redis_url=REDIS_URL)
    first_app, first_model, _, _ = make(tmp_path / "w1", policy=policy)
    second_app, second_model, recorder, _ = make(tmp_path / "w2", policy=policy)
    async with first_app:
        await first_app.run("ask", {"text": "shared question"})
    async with second_app:  # another worker, another database: the answer comes from Redis
        result = await second_app.run("ask", {"text": "shared question"})
    assert first_model.calls == 1 and second_model.calls == 0
    assert hits(recorder, result.run_id)
    assert await client.dbsize() == 1
    await client.flushdb()
    await client.aclose()


@__import__("pytest").mark.slow  # a real connection, refused by a closed loopback port
async def test_an_unreachable_redis_cache_never_fails_a_run(tmp_path):
    __import__("pytest").importorskip("redis.asyncio", reason="pip install corral[redis]")
    policy = CachePolicy(enabled=True, backend="redis", redis_url="redis://127.0.0.1:9/0")
    app, model, _, _ = make(tmp_path, policy=policy)
    async with app:
        first = await app.run("ask", {"text": "q"})
        second = await app.run("ask", {"text": "q"})
        errors = app.guards.cache.errors  # type: ignore[union-attr]
    assert first.ok and second.ok and model.calls == 2 and errors >= 2
