"""The semantic cache: exact and semantic tiers over Redis 8 vector sets or an in-process store.

Typical use by the HTTP layer::

    cache = build_cache(settings.cache)          # async with cache: ... (owns its lifecycle)
    control = parse_cache_control(headers.get("cache-control"), body.get("cache"))
    q = cache.query("chat", body, tenant, control)   # None: not cacheable
    result = await cache.lookup(q)                # hit-exact | hit-semantic | miss | bypass
    ...
    await cache.insert(q, CachedAnswer(...))      # after a complete answer went out
"""

from gateway.cache.config import CacheConfig, EmbedderConfig
from gateway.cache.control import CacheControl, InvalidCacheControl, parse_cache_control
from gateway.cache.embedder import Embedder
from gateway.cache.entry import CachedAnswer, LookupResult, LookupStatus, StoredEntry
from gateway.cache.factory import build_cache
from gateway.cache.memory_store import MemoryStore
from gateway.cache.policy import CacheQuery, cache_query
from gateway.cache.redis_store import RedisStore
from gateway.cache.service import SemanticCache
from gateway.cache.store import CacheStore, StoreRejected
from gateway.cache.store_calls import CacheUnavailable

__all__ = [
    "CacheConfig",
    "CacheControl",
    "CacheQuery",
    "CacheStore",
    "CacheUnavailable",
    "CachedAnswer",
    "Embedder",
    "EmbedderConfig",
    "InvalidCacheControl",
    "LookupResult",
    "LookupStatus",
    "MemoryStore",
    "RedisStore",
    "SemanticCache",
    "StoreRejected",
    "StoredEntry",
    "build_cache",
    "cache_query",
    "parse_cache_control",
]
