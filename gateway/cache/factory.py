"""build_cache: the SemanticCache a config asks for, over Redis 8 or the in-process store."""

from __future__ import annotations

from gateway.cache.config import CacheConfig
from gateway.cache.embedder import Embedder
from gateway.cache.memory_store import MemoryStore
from gateway.cache.redis_store import RedisStore
from gateway.cache.service import SemanticCache
from gateway.cache.store import CacheStore


def build_cache(config: CacheConfig, *, embedder: Embedder | None = None) -> SemanticCache:
    """The cache the config asks for: Redis when ``redis_url`` is set, else in-process.
    A given embedder is shared (not closed by the cache); otherwise one is created."""
    store: CacheStore
    if config.redis_url:
        store = RedisStore(
            config.redis_url,
            prefix=config.key_prefix,
            max_entries_per_scope=config.max_entries_per_scope,
            connect_timeout_s=config.redis_connect_timeout_s,
            socket_timeout_s=config.redis_socket_timeout_s,
            max_connections=config.redis_max_connections,
            tls=config.redis_tls_options(),
            wait_replicas=config.redis_wait_replicas,
            wait_timeout_ms=config.redis_wait_timeout_ms,
            build_ef=config.redis_build_ef,
            search_ef=config.redis_search_ef,
        )
    else:
        store = MemoryStore(
            max_entries_per_scope=config.max_entries_per_scope,
            max_entries=config.memory_max_entries,
            ann_min_entries=config.memory_ann_min_entries,
        )
    own = embedder is None
    return SemanticCache(store, embedder or Embedder(config.embedder), config, owns_embedder=own)
