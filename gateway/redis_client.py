"""The Redis client that replicas coordinate through (shared flights, cluster cache stats).

One client (one connection pool) per app, built from the cache's Redis settings and closed with
the app; the cache store and the limiter keep their own, with their own timeouts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as redis

from gateway.config import Settings


@asynccontextmanager
async def shared_redis(settings: Settings) -> AsyncIterator[redis.Redis]:
    cache = settings.cache
    assert cache.redis_url, "shared_redis needs cache.redis_url"
    client = redis.Redis.from_url(
        cache.redis_url,
        socket_connect_timeout=cache.redis_connect_timeout_s,
        socket_timeout=cache.redis_socket_timeout_s,
        max_connections=cache.redis_max_connections,
        **cache.redis_tls_options(),
    )
    try:
        yield client
    finally:
        await client.aclose()
