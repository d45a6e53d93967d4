"""The Redis client that replicas coordinate through (shared flights, cluster cache stats).

One client (one connection pool) per app, built from the cache's Redis settings and closed with
the app; the cache store and the limiter keep their own, with their own timeouts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.config import Settings
from gateway.redis_connect import RedisClient, connect, ready


@asynccontextmanager
async def shared_redis(settings: Settings) -> AsyncIterator[RedisClient]:
    """A single server's client or a Redis Cluster's (redis+cluster://), see redis_connect."""
    cache = settings.cache
    assert cache.redis_url, "shared_redis needs cache.redis_url"
    client = connect(
        cache.redis_url,
        connect_timeout_s=cache.redis_connect_timeout_s,
        socket_timeout_s=cache.redis_socket_timeout_s,
        max_connections=cache.redis_max_connections,
        tls=cache.redis_tls_options(),
    )
    await ready(client)
    try:
        yield client
    finally:
        await client.aclose()
