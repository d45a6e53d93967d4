"""The parts replicas coordinate through, on a real Redis Cluster (redis+cluster:// URL): the
shared limiter, shared flights (Lua scripts + pub/sub), the cluster's cache stats and the
Responses state. Each must work there exactly as on one Redis, with no fallback taken."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

from gateway.cache.cluster_stats import ClusterStats
from gateway.cache.stats import CacheCounters
from gateway.redis_connect import connect, is_cluster, ready
from gateway.responses_state import RedisResponseStore, StoredResponse
from gateway.routing.config import RateLimitConfig, SharedFlightConfig
from gateway.routing.errors import KeyRateLimited
from gateway.routing.redis_limits import SharedLimiter
from gateway.routing.shared_flight import BYTES, SharedFlights, flight_key
from tests.support.redis_cluster import LocalCluster

# The default lease: with 600 ms a leader lost its lease once in CI (its renewal came too late
# on the loaded 2-core box) and a follower called the engine too. Takeover is tested elsewhere.
FLIGHTS = SharedFlightConfig(lease_ms=3000, answer_ttl_s=5, redis_timeout_s=2)


async def client(cluster: LocalCluster) -> Any:
    """As the app's shared_redis: connected and the slot map learnt."""
    made = connect(cluster.url, connect_timeout_s=2, socket_timeout_s=2)
    await ready(made)
    return made


async def test_limits_are_enforced_across_replicas_on_a_cluster(
    redis_cluster: LocalCluster,
) -> None:
    assert is_cluster(redis_cluster.url)
    prefix = f"l{uuid.uuid4().hex[:12]}"
    config = RateLimitConfig.model_validate(
        {"default": {"requests_per_minute": 10}, "redis_timeout_s": 5.0}
    )
    replicas = [SharedLimiter(redis_cluster.url, config, prefix=prefix) for _ in range(3)]
    keys = [f"key-{i}" for i in range(8)]
    for limiter in replicas:
        await limiter.ready()  # as the app's start does: the slot map before the burst

    async def taken(limiter: SharedLimiter, key: str) -> bool:
        try:
            await limiter.acquire(key)
        except KeyRateLimited:
            return False
        return True

    try:
        outcomes = await asyncio.gather(
            *(taken(replicas[i % 3], key) for key in keys for i in range(15))
        )
        for k, key in enumerate(keys):
            assert sum(outcomes[k * 15 : (k + 1) * 15]) == 10, key
        assert sum(r.failures for r in replicas) == 0  # Redis answered: no per-replica share
        owners = {redis_cluster.master_of(f"{prefix}:rl:{key}").port for key in keys}
        assert len(owners) > 1  # the keys' buckets spread over the masters
    finally:
        for limiter in replicas:
            await limiter.aclose()


async def test_identical_flights_on_three_replicas_make_one_call_on_a_cluster(
    redis_cluster: LocalCluster,
) -> None:
    prefix = uuid.uuid4().hex
    clients = [await client(redis_cluster) for _ in range(3)]
    replicas = [SharedFlights(c, FLIGHTS, prefix=prefix) for c in clients]
    calls = 0

    async def engine(meta: dict[str, Any]) -> AsyncIterator[bytes]:
        nonlocal calls
        calls += 1
        for word in (b"one", b"two", b"three"):
            await asyncio.sleep(0.05)
            yield word

    async def collect(flights: SharedFlights, key: str) -> list[bytes]:
        return [e async for e in flights.wrap(key, engine, BYTES)({})]

    try:
        for n in range(4):  # four keys: their slots fall on different masters
            key = flight_key(["tenant", "scope", f"question {n}"])
            answers = await asyncio.gather(*(collect(r, key) for r in replicas))
            assert answers == [[b"one", b"two", b"three"]] * 3
        assert calls == 4
        assert sum(r.followed for r in replicas) == 8
        assert sum(r.alone for r in replicas) == 0  # no Redis trouble: never led alone
    finally:
        for c in clients:
            await c.aclose()


async def test_cluster_stats_and_responses_state_on_a_cluster(
    redis_cluster: LocalCluster,
) -> None:
    prefix = f"s{uuid.uuid4().hex[:12]}"
    shared = await client(redis_cluster)
    counters = [CacheCounters(), CacheCounters()]
    try:
        stats = [ClusterStats(shared, c, prefix=prefix) for c in counters]
        counters[0].misses, counters[1].misses = 3, 4
        assert all([await s.flush() for s in stats])  # MULTI on one slot ({prefix:stats})
        totals = await stats[0].totals()
        assert totals is not None and totals["misses"] == 7

        store = RedisResponseStore(redis_cluster.url, prefix=prefix)
        try:
            for n in range(6):
                await store.put("acme", StoredResponse({"id": f"resp_{n}"}, [n]))
            found = await store.get("acme", "resp_4")
            assert found is not None and found.history == [4]
            assert await store.get("other-tenant", "resp_4") is None
            assert await store.delete("acme", "resp_4")
        finally:
            await store.close()
    finally:
        await shared.aclose()
