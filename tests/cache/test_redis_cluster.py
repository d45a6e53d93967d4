"""The cache on a real Redis Cluster (three masters, three replicas, redis+cluster:// URL):
each scope's keys on one slot, the scopes spread over the masters, every operation working
across them (search, exact tier, by-id calls, count, sweep, namespace delete, flush)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.cache import CacheConfig, CacheControl, Embedder, SemanticCache, build_cache
from gateway.cache.redis_keys import RedisKeys
from tests.cache.helpers import answer, q_chat
from tests.support.redis_cluster import LocalCluster

NAMESPACES = [f"team{i}" for i in range(12)]
RESET = "How do I reset my password?"


@pytest.fixture
async def cluster_cache(
    redis_cluster: LocalCluster, embedder: Embedder
) -> AsyncIterator[SemanticCache]:
    config = CacheConfig(
        redis_url=redis_cluster.url,
        key_prefix=f"c{uuid.uuid4().hex[:12]}",
        store_timeout_s=5.0,  # behaviour, not outages: a busy machine must not bypass
        sweep_interval_s=3600,
        redis_wait_replicas=1,
        redis_wait_timeout_ms=2000,
    )
    async with build_cache(config, embedder=embedder) as cache:
        yield cache
        await cache.flush()


def keys_by_master(cluster: LocalCluster, prefix: str) -> dict[int, list[str]]:
    """The store's keys on each master (by port), read from the masters themselves."""
    found: dict[int, list[str]] = {}
    for master in cluster.masters():
        keys = list(cluster.client(master).scan_iter(match=f"{prefix}:*", count=1000))
        found[master.port] = [str(k) for k in keys]
    return found


async def test_scopes_spread_over_masters_and_each_scope_stays_on_one(
    redis_cluster: LocalCluster, cluster_cache: SemanticCache
) -> None:
    cache = cluster_cache
    stored = {}
    for namespace in NAMESPACES:
        q = q_chat(cache, RESET, control=CacheControl(namespace=namespace))
        entry_id = await cache.insert(q, answer(f"answer of {namespace}"))
        assert entry_id is not None, cache.counters.as_dict()
        stored[namespace] = (q, entry_id)

    for namespace, (q, _) in stored.items():
        exact = await cache.lookup(q)
        assert exact.status == "hit-exact"
        assert exact.answer is not None and exact.answer.text == f"answer of {namespace}"
        near = q_chat(
            cache, "How can I reset my password?", control=CacheControl(namespace=namespace)
        )
        semantic = await cache.lookup(near)
        assert semantic.status == "hit-semantic", semantic
        assert semantic.answer is not None and semantic.answer.text == f"answer of {namespace}"

    prefix = cache.config.key_prefix
    placed = keys_by_master(redis_cluster, prefix)
    holding = [port for port, keys in placed.items() if keys]
    assert len(holding) >= 2, placed  # 12 scopes over 3 masters: not all on one
    keys = RedisKeys(prefix)
    for namespace, (q, _) in stored.items():
        tag = keys.tag(q.scope)
        owners = {port for port, found in placed.items() if any(k.startswith(tag) for k in found)}
        assert len(owners) == 1, (namespace, owners)  # v, z, e, x of one scope: one master

    assert await cache.store.count() == len(NAMESPACES)
    some_id = stored["team3"][1]
    entry = await cache.get(some_id)
    assert entry is not None and entry.answer.text == "answer of team3"
    assert await cache.store.raise_min_similarity(some_id, 0.99)
    assert await cache.delete(some_id)
    assert (await cache.lookup(stored["team3"][0])).status == "miss"
    assert await cache.store.delete_namespace("team4") == 1
    assert (await cache.lookup(stored["team4"][0])).status == "miss"
    assert await cache.store.count() == len(NAMESPACES) - 2
    assert await cache.flush() == len(NAMESPACES) - 2
    assert not any(keys_by_master(redis_cluster, prefix).values())


async def test_sweep_on_a_cluster_removes_expired_entries_and_forgets_empty_scopes(
    redis_cluster: LocalCluster, cluster_cache: SemanticCache
) -> None:
    cache = cluster_cache
    kept = []
    for namespace in NAMESPACES[:6]:  # one short-lived entry beside a kept one
        short = CacheControl(namespace=namespace, ttl_s=0.3)
        assert await cache.insert(q_chat(cache, RESET, control=short), answer("a"))
        q = q_chat(cache, "How do I change my email?", control=CacheControl(namespace=namespace))
        assert await cache.insert(q, answer("kept"))
        kept.append(q)
    for namespace in NAMESPACES[6:]:  # scopes that expire whole
        short = CacheControl(namespace=namespace, ttl_s=0.3)
        assert await cache.insert(q_chat(cache, RESET, control=short), answer("a"))
    await asyncio.sleep(0.5)
    assert await cache.store.sweep() == 6
    prefix = cache.config.key_prefix
    owner = redis_cluster.client(redis_cluster.master_of(f"{prefix}:scopes"))
    indexed = set(owner.smembers(f"{prefix}:scopes"))
    assert indexed == {q.scope for q in kept}
    assert await cache.store.count() == 6
    for q in kept:
        assert (await cache.lookup(q)).status == "hit-exact"
