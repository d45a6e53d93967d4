"""Redis clients from the gateway's one Redis URL: a single server, or a Redis Cluster.

- ``redis://host:port`` / ``rediss://`` (TLS): one server (or a proxy in front of several).
- ``redis+cluster://host:port[,host:port...]`` / ``rediss+cluster://``: a Redis Cluster. The
  hosts are seeds (give several: any one that answers is enough); the client learns the slot
  map from them, sends each key to the master of its slot, and follows MOVED and failovers.

A URL and not a separate flag, because every part that talks to Redis (cache store, limiter,
shared flights, cluster stats, Responses state) is handed the URL: the scheme carries the mode
to all of them, and ``GATEWAY_CACHE__REDIS_URL`` alone switches a deployment. Keys that must
meet in one multi-key command or script share a hash tag (``{...}``) in every mode, so the code
is the same on one server and on a cluster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

# Every way a Redis call can fail: RedisClusterException (e.g. a slot no master serves while a
# failover moves it) is not a RedisError.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.RedisError,
    RedisClusterException,
    OSError,
    TimeoutError,
)

RedisClient = redis.Redis | RedisCluster
CLUSTER_NODE_CONNECTIONS = 1_000_000  # see connect()


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_cluster(url: str | None) -> bool:
    return scheme(url or "") in CLUSTER_SCHEMES


def is_tls(url: str | None) -> bool:
    return scheme(url or "") in ("rediss", "rediss+cluster")


def cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """(the URL as redis-py reads it, with the first seed only; every seed as (host, port))."""
    kind, rest = url.split("://", 1)
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    seeds: list[tuple[str, int]] = []
    for host in filter(None, hosts.split(",")):
        parsed = urlsplit(f"//{host}")
        if not parsed.hostname:
            raise ValueError(f"bad seed {host!r} in Redis Cluster URL")
        seeds.append((parsed.hostname, parsed.port or 6379))
    if not seeds:
        raise ValueError("a redis+cluster:// URL needs at least one host:port")
    first = f"{seeds[0][0]}:{seeds[0][1]}"
    return f"{CLUSTER_SCHEMES[kind.lower()]}://{userinfo}{at}{first}{tail}", seeds


def connect(
    url: str,
    *,
    connect_timeout_s: float,
    socket_timeout_s: float,
    max_connections: int | None = None,
    tls: Mapping[str, Any] | None = None,
    **options: Any,
) -> RedisClient:
    """A client for ``url`` (see the module docstring); ``options`` go to redis-py (e.g.
    ``retry``). ``max_connections`` bounds a single server's pool only: redis-py's cluster
    client fails a call at once when a node's pool is full (it cannot wait), and on that
    failure it drops every connection of every node, in-flight ones included (seen breaking
    concurrent calls with AttributeError). So on a cluster the pools are not bounded here;
    callers that must bound their connections bound their concurrency (RedisStore does)."""
    common: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": socket_timeout_s,
        **(tls or {}),
        **options,
    }
    if not is_cluster(url):
        if max_connections is not None:
            common["max_connections"] = max_connections
        return redis.Redis.from_url(url, **common)
    common["max_connections"] = CLUSTER_NODE_CONNECTIONS
    single, seeds = cluster_seeds(url)
    kwargs: dict[str, Any] = dict(parse_url(single))
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    if kwargs.pop("connection_class", None) is not None:  # rediss: SSLConnection
        kwargs["ssl"] = True
    nodes = [ClusterNode(host, port) for host, port in seeds]
    return RedisCluster(startup_nodes=nodes, **kwargs, **common)


def pooled_client(
    url: str,
    connect_timeout_s: float,
    socket_timeout_s: float,
    max_connections: int,
    tls: Mapping[str, Any] | None = None,
) -> RedisClient:
    """The cache store's client: one quick retry (a pooled socket may predate a restart; past
    it the request bypasses). On one server at most ``max_connections``, a call waiting up to
    ``connect_timeout_s`` for a free one; on a cluster the store bounds its concurrency."""
    retry = Retry(NoBackoff(), 1)
    if is_cluster(url):
        return connect(
            url,
            connect_timeout_s=connect_timeout_s,
            socket_timeout_s=socket_timeout_s,
            max_connections=max_connections,
            tls=tls,
            retry=retry,
        )
    pool = redis.BlockingConnectionPool.from_url(
        url,
        **(tls or {}),
        max_connections=max_connections,
        timeout=connect_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        retry=retry,
    )
    return redis.Redis.from_pool(pool)


async def ready(client: RedisClient) -> None:
    """Learn a cluster's slot map now, before the request path's concurrent calls: redis-py
    8.1 was seen to break a connection mid-connect (an AttributeError, not a RedisError) when
    many calls raced a cold cluster client. A cluster that cannot be reached yet is no error
    here: the client then learns the map on its first call."""
    if isinstance(client, RedisCluster):
        with contextlib.suppress(*REDIS_ERRORS):
            await client.initialize()
