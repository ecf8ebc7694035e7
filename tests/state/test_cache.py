"""The `ResponseCache` contract, run against every backend (the memory one, Redis when one is
reachable, the run database)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from corral.guards.cache import ResponseCache
from corral.state.memory import MemoryCache

NOW = 1_000_000.0


@pytest.fixture(
    params=[
        "memory",
        # A real Redis server: the slow tier (the fast tier allows no network).
        pytest.param("redis", marks=pytest.mark.slow),
        "database",
    ]
)
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[ResponseCache]:
    if request.param == "memory":
        yield MemoryCache()
    elif request.param == "redis":
        pytest.importorskip("redis")
        from corral.state.redis_cache import RedisCache

        redis_cache = RedisCache("redis://127.0.0.1:6379/0", prefix=f"test:{uuid.uuid4().hex}")
        if await redis_cache.cache_get("probe", "probe", NOW) is None and redis_cache.errors:
            await redis_cache.aclose()
            pytest.skip("no Redis at 127.0.0.1:6379")
        yield redis_cache
        await redis_cache.aclose()
    else:
        from corral.store.sql import SqlStore

        store = await SqlStore.open("sqlite:///:memory:")
        yield store
        await store.close()


async def test_a_stored_answer_is_found_in_its_namespace_only(cache: ResponseCache):
    await cache.cache_put("tenant:a", "k", {"text": "hi"}, now=NOW, ttl_s=60)
    assert await cache.cache_get("tenant:a", "k", NOW + 1) == {"text": "hi"}
    assert await cache.cache_get("tenant:b", "k", NOW + 1) is None
    assert await cache.cache_get("tenant:a", "other", NOW + 1) is None


async def test_the_last_write_wins(cache: ResponseCache):
    await cache.cache_put("tenant:a", "k", {"text": "old"}, now=NOW, ttl_s=60)
    await cache.cache_put("tenant:a", "k", {"text": "new"}, now=NOW, ttl_s=60)
    assert await cache.cache_get("tenant:a", "k", NOW + 1) == {"text": "new"}


async def test_an_answer_expires_after_its_ttl(cache: ResponseCache):
    if type(cache).__name__ == "RedisCache":
        pytest.skip("Redis expires keys on its own clock (tested with the app's clock elsewhere)")
    await cache.cache_put("tenant:a", "k", {"text": "hi"}, now=NOW, ttl_s=60)
    assert await cache.cache_get("tenant:a", "k", NOW + 61) is None


@pytest.mark.slow  # a real connection, refused by a closed loopback port
async def test_an_unreachable_redis_is_logged_without_its_password(caplog):
    pytest.importorskip("redis")
    from corral.state.redis_cache import RedisCache

    cache = RedisCache("redis://:redis-pw-4c1d@127.0.0.1:9/0")
    try:
        assert await cache.cache_get("tenant:a", "k", NOW) is None
    finally:
        await cache.aclose()
    assert cache.errors == 1
    assert "redis-pw-4c1d" not in caplog.text
    assert "response cache at redis://:***@127.0.0.1:9/0 unavailable" in caplog.text


async def test_redis_stores_answers_redacted():
    """The app hands Redis its store's redactor: no secret is written to Redis either."""
    pytest.importorskip("redis")
    from corral.observe.redact import Redactor
    from corral.secrets import register_secret
    from corral.state.redis_cache import RedisCache

    key = register_secret("redis-cached-key-8e1f")
    cache = RedisCache("redis://127.0.0.1:9/0", redact=Redactor().json_text)
    written: list[tuple[str, str]] = []

    async def capture(name: str, value: str, px: int) -> None:
        written.append((name, value))

    cache._redis.set = capture  # type: ignore[method-assign]  # the write, without a server
    try:
        await cache.cache_put("tenant:a", "k", {"text": f"the key {key}"}, now=NOW, ttl_s=60)
    finally:
        await cache.aclose()
    assert written == [("corral:cache:tenant:a:k", '{"text":"the key [REDACTED]"}')]
