"""The one place that picks where cached answers live.

The guard chain's `CacheStep` talks to two protocols (`corral.guards.cache.ResponseCache`,
`SemanticCache`); this picks their backends from the cache policy when the app opens:

- exact answers: Redis when `backend = "redis"` (shared by every worker), else the run
  database (`SqlStore`'s cache table);
- similar answers: the run database, with numpy installed (`pip install corral[semantic]`).

A process without a database (tests) uses `corral.state.memory.MemoryCache`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from corral.guards.cache import ResponseCache, SemanticCache
from corral.guards.policy import CachePolicy

if TYPE_CHECKING:
    from corral.store.sql import SqlStore

__all__ = ["open_caches"]

log = logging.getLogger(__name__)


def open_caches(
    policy: CachePolicy, store: SqlStore
) -> tuple[ResponseCache | None, SemanticCache | None]:
    """The exact and the semantic cache for `policy` (None, None when caching is off)."""
    if not policy.enabled:
        return None, None
    exact: ResponseCache
    if policy.backend == "redis":
        from corral.state.redis_cache import RedisCache

        exact = RedisCache(policy.redis_url)
    else:
        exact = store
    try:
        from corral.models.semantic_cache import StoredSemanticCache
    except ModuleNotFoundError as exc:  # numpy missing: no semantic cache
        log.warning("semantic cache unavailable (%s): pip install corral[semantic]", exc)
        return exact, None
    return exact, StoredSemanticCache(store)
