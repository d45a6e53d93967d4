"""A Redis Cluster master failing over while requests flow: no lookup, insert, rate-limit
token or shared flight fails (the cache bypasses, the limiter falls back to its share, a flight
leads alone while the slots move), and every entry the cache acknowledged before the failover
is served after it.

"Acknowledged" is exact: ``SemanticCache.insert`` returned an entry id, which with
``cache.redis_wait_replicas: 1`` means the entry's master AND its replica had it (WAIT). Two
failovers: a coordinated ``CLUSTER FAILOVER`` (the replica takes over only once it has every
write), and a master killed (SIGKILL) whose replica is promoted by the cluster itself. For the
second the replica is frozen first, so the writes of that moment are NOT acknowledged (insert
returns None): without the WAIT they would have been reported stored, and could be lost.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.cache import (
    CacheConfig,
    CacheControl,
    CacheQuery,
    Embedder,
    SemanticCache,
    build_cache,
)
from gateway.cache.redis_keys import RedisKeys
from gateway.redis_connect import connect, ready
from gateway.routing.config import RateLimitConfig, SharedFlightConfig
from gateway.routing.redis_limits import SharedLimiter
from gateway.routing.shared_flight import BYTES, SharedFlights, flight_key
from tests.cache.helpers import answer, q_chat
from tests.support.redis import RedisServer
from tests.support.redis_cluster import LocalCluster

NAMESPACES = [f"team{i}" for i in range(9)]
RETRY_AFTER_S = 0.2


@pytest.fixture
async def acked_cache(
    redis_cluster: LocalCluster, embedder: Embedder
) -> AsyncIterator[SemanticCache]:
    config = CacheConfig(
        redis_url=redis_cluster.url,
        key_prefix=f"f{uuid.uuid4().hex[:12]}",
        store_timeout_s=1.0,
        store_retry_after_s=RETRY_AFTER_S,
        sweep_interval_s=3600,
        redis_wait_replicas=1,
        redis_wait_timeout_ms=300,
    )
    async with build_cache(config, embedder=embedder) as cache:
        yield cache
        redis_cluster.heal()
        await cache.flush()


@dataclass
class Parts:
    """The other Redis users on the request path: the limiter and shared flights."""

    limiter: SharedLimiter
    flights: SharedFlights


@pytest.fixture
async def parts(redis_cluster: LocalCluster) -> AsyncIterator[Parts]:
    prefix = f"p{uuid.uuid4().hex[:12]}"
    limits = RateLimitConfig.model_validate(
        {"default": {"requests_per_minute": 1_000_000}, "redis_timeout_s": 0.5}
    )
    limiter = SharedLimiter(redis_cluster.url, limits, prefix=prefix)
    await limiter.ready()
    client = connect(redis_cluster.url, connect_timeout_s=0.5, socket_timeout_s=0.5)
    await ready(client)
    flights = SharedFlights(client, SharedFlightConfig(lease_ms=600, retry_s=0.2), prefix=prefix)
    yield Parts(limiter, flights)
    await limiter.aclose()
    await client.aclose()


async def engine(meta: dict[str, Any]) -> AsyncIterator[bytes]:
    yield b"answer"


@dataclass
class Load:
    """Workers that each take a rate-limit token, run a shared flight, then look up and insert a
    fresh question (over every namespace) until stopped."""

    cache: SemanticCache
    parts: Parts
    acked: dict[str, tuple[CacheQuery, str]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    failed: list[BaseException] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self, w: int) -> None:
        n = 0
        while not self.stop.is_set():
            text = f"Worker {w} asks question number {n}: what is the status of order {n}?"
            namespace = NAMESPACES[n % len(NAMESPACES)]
            q = q_chat(self.cache, text, control=CacheControl(namespace=namespace))
            try:
                await self.parts.limiter.acquire(f"key-{w}")
                flight = self.parts.flights.wrap(flight_key([w, n]), engine, BYTES)
                assert [event async for event in flight({})] == [b"answer"]
                self.statuses[(await self.cache.lookup(q)).status] += 1
                entry_id = await self.cache.insert(q, answer(text))
            except BaseException as exc:  # the contract: never; record it for the assert
                self.failed.append(exc)
                return
            if entry_id is not None:
                self.acked[text] = (q, entry_id)
            else:
                self.statuses["not-acknowledged"] += 1
            n += 1
            await asyncio.sleep(0.005)

    async def run(self, workers: int = 3) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.worker(w)) for w in range(workers)]

    async def finish(self, tasks: list[asyncio.Task[None]]) -> None:
        self.stop.set()
        await asyncio.gather(*tasks)


async def served(cache: SemanticCache, entries: dict[str, tuple[CacheQuery, str]]) -> list[str]:
    """The texts among ``entries`` that the cache no longer serves from the exact tier."""
    await asyncio.sleep(RETRY_AFTER_S + 0.05)  # the store may be resting after the failover
    missing = []
    for text, (q, _) in entries.items():
        result = await cache.lookup(q)
        if result.status != "hit-exact" or result.answer is None or result.answer.text != text:
            missing.append(text)
    return missing


async def test_coordinated_failover_of_every_master_under_load(
    redis_cluster: LocalCluster, acked_cache: SemanticCache, parts: Parts
) -> None:
    load = Load(acked_cache, parts)
    tasks = await load.run()
    await asyncio.sleep(1.0)
    for master in redis_cluster.masters():
        before = len(load.acked)
        await asyncio.to_thread(redis_cluster.failover, master)
        await asyncio.sleep(0.3)
        assert len(load.acked) > before  # the cache kept storing through each failover
    await load.finish(tasks)

    assert load.failed == []  # no request failed
    assert parts.flights.led > 0
    assert len(load.acked) > 30, load.statuses
    assert await served(acked_cache, load.acked) == []  # no acknowledged entry lost
    assert await acked_cache.store.count() >= len(load.acked)


def scopes_on(
    cluster: LocalCluster, cache: SemanticCache, master: RedisServer
) -> list[CacheControl]:
    keys = RedisKeys(cache.config.key_prefix)
    controls = []
    for namespace in NAMESPACES:
        control = CacheControl(namespace=namespace)
        q = q_chat(cache, "probe", control=control)
        if cluster.master_of(keys.vectors(q.scope)).port == master.port:
            controls.append(control)
    return controls


async def test_killed_master_keeps_every_acknowledged_entry_and_no_request_fails(
    redis_cluster: LocalCluster, acked_cache: SemanticCache, parts: Parts
) -> None:
    cache = acked_cache
    victim = next(m for m in redis_cluster.masters() if scopes_on(redis_cluster, cache, m))
    replica = redis_cluster.replica_of(victim)
    on_victim = scopes_on(redis_cluster, cache, victim)
    load = Load(cache, parts)
    tasks = await load.run()
    await asyncio.sleep(1.0)

    replica.pause()  # the victim's writes from now on reach no replica
    try:
        unacked: dict[str, tuple[CacheQuery, str]] = {}
        for n, control in enumerate(on_victim * 2):
            text = f"Written while the replica lags, number {n}"
            q = q_chat(cache, text, control=control)
            assert await cache.insert(q, answer(text)) is None  # WAIT saw no replica
            unacked[text] = (q, "")
        victim.kill()
    finally:
        replica.resume()
    await asyncio.to_thread(redis_cluster.wait_healthy)  # the replica was promoted
    assert replica in redis_cluster.masters()
    await asyncio.sleep(1.0)  # and requests flow on the new master
    await load.finish(tasks)

    assert load.failed == []
    assert load.statuses["bypass"] > 0  # while the slots moved
    assert await served(cache, load.acked) == []  # every acknowledged entry survived
    # The unacknowledged ones were promised nothing: some may even have survived (bytes the
    # master had written to the frozen replica's socket are read once it resumes).
    assert cache.counters.insert_errors >= len(unacked)
