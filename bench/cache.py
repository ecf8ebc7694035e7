"""Cache lookup overhead with 10,000 entries in the run database (SQLite WAL): exact and semantic.

    .venv/bin/python bench/cache.py [--entries 10000] [--lookups 2000]

Measures `cache_key` (hashing the normalized request) plus a `cache_get` hit and a miss against
the SQL store, as the guard chain does before every cacheable call. Median and p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from corral.guards.cache import cache_key
from corral.model import Message, ModelRequest
from corral.store.sql import SqlStore


def request(i: int) -> ModelRequest:
    return ModelRequest(
        model="sim:small",
        messages=(
            Message(role="system", content="You triage support tickets. " * 20),
            Message(role="user", content=f"ticket {i}: my invoice is wrong " * 5),
        ),
        output_schema={"type": "object", "properties": {"category": {"type": "string"}}},
    )


async def semantic_lookups(
    store: SqlStore, entries: int, lookups: int
) -> list[tuple[str, list[float]]]:
    """Semantic lookups (embed the query + search) over `entries` stored vectors."""
    try:
        import numpy as np

        from corral.models.embeddings import default_embedder
        from corral.models.semantic_cache import StoredSemanticCache
    except ModuleNotFoundError:
        return []
    embedder = default_embedder()
    cache = StoredSemanticCache(store, embedder)
    scope = ("tenant:*", "triage", "schema")
    value = {"text": "{}", "model": "sim:small", "tool_calls": []}
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((entries, embedder.dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = time.time()
    await asyncio.gather(
        *(
            store.semantic_add(
                '["tenant:*", "triage", "schema"]', embedder.name, v.tobytes(), value, now + 3600
            )
            for v in vectors
        )
    )
    samples = []
    for i in range(lookups):
        t0 = time.perf_counter()
        await cache.lookup(scope, f"ticket {i}: my invoice is wrong", now=now, threshold=0.95)
        samples.append((time.perf_counter() - t0) * 1000)
    search = []
    index = await cache._index('["tenant:*", "triage", "schema"]', now)
    query = vectors[0]
    for _ in range(lookups):
        t0 = time.perf_counter()
        sims = index.vectors @ query
        int(np.argmax(sims))
        search.append((time.perf_counter() - t0) * 1000)
    return [
        (f"semantic ({embedder.name}: embed + search)", samples),
        ("semantic search alone", search),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    store = await SqlStore.open(f"sqlite:///{tempfile.mkdtemp()}/cache.db")
    value = {"text": '{"category": "billing"}', "model": "sim:small", "tool_calls": []}
    now = time.time()
    await asyncio.gather(
        *(
            store.cache_put("tenant:*", cache_key(request(i)), value, now=now, ttl_s=3600)
            for i in range(args.entries)
        )
    )
    hit, miss = [], []
    for i in range(args.lookups):
        t0 = time.perf_counter()
        found = await store.cache_get("tenant:*", cache_key(request(i % args.entries)), time.time())
        hit.append((time.perf_counter() - t0) * 1000)
        assert found is not None
        t0 = time.perf_counter()
        found = await store.cache_get("tenant:*", cache_key(request(-i - 1)), time.time())
        miss.append((time.perf_counter() - t0) * 1000)
        assert found is None
    semantic = await semantic_lookups(store, args.entries, min(args.lookups, 300))
    await store.close()
    print("| lookup | entries | median ms | p99 ms |\n| --- | --- | --- | --- |")
    rows = [("exact hit (key + read)", hit), ("exact miss (key + read)", miss), *semantic]
    for label, samples in rows:
        samples.sort()
        p99 = samples[int(len(samples) * 0.99) - 1]
        print(f"| {label} | {args.entries} | {statistics.median(samples):.3f} | {p99:.3f} |")


if __name__ == "__main__":
    asyncio.run(main())
