"""Store specifics: Redis key layout, TTLs, score conversion, stale vectors; memory bounds."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis.asyncio as aioredis

from gateway.cache import (
    CacheConfig,
    CacheControl,
    Embedder,
    MemoryStore,
    RedisStore,
    SemanticCache,
    build_cache,
)
from gateway.cache.entry import StoredEntry
from gateway.cache.redis_keys import RedisKeys
from gateway.cache.redis_search import cosine_to_score
from tests.cache.helpers import answer, q_chat

RESET = "How do I reset my password?"


@pytest.fixture
async def redis_cache(redis_server: str, embedder: Embedder) -> AsyncIterator[SemanticCache]:
    config = CacheConfig(redis_url=redis_server, key_prefix=f"s{uuid.uuid4().hex[:12]}")
    async with build_cache(config, embedder=embedder) as cache:
        assert isinstance(cache.store, RedisStore)
        yield cache
        await cache.flush()


@pytest.fixture
async def raw(redis_server: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server)
    yield client
    await client.aclose()


def test_build_cache_picks_the_store_from_the_config() -> None:
    assert isinstance(build_cache(CacheConfig()).store, MemoryStore)
    assert isinstance(build_cache(CacheConfig(redis_url="redis://127.0.0.1:1")).store, RedisStore)


def test_score_conversion() -> None:
    assert cosine_to_score(1.0) == 1.0
    assert cosine_to_score(0.95) == pytest.approx(0.975)
    assert cosine_to_score(-1.0) == 0.0


async def test_vsim_scores_are_converted_cosines(
    redis_cache: SemanticCache, raw: aioredis.Redis, embedder: Embedder
) -> None:
    q = q_chat(redis_cache, RESET)
    await redis_cache.insert(q, answer("a"))
    probe = await embedder.embed("How can I reset my password?")
    cosine = float(probe @ await embedder.embed(RESET))
    key = RedisKeys(redis_cache.config.key_prefix).vectors(q.scope)
    reply = await raw.execute_command(
        "VSIM", key, "FP32", probe.astype("<f4").tobytes(), "WITHSCORES"
    )
    (score,) = reply.values() if isinstance(reply, dict) else [float(reply[1])]
    assert float(score) == pytest.approx(cosine_to_score(cosine), abs=0.005)  # Q8 moves it a bit


async def test_every_key_but_the_indexes_expires(
    redis_cache: SemanticCache, raw: aioredis.Redis
) -> None:
    prefix = redis_cache.config.key_prefix
    await redis_cache.insert(q_chat(redis_cache, RESET), answer("a"))
    faq = CacheControl(namespace="faq", ttl_s=60)
    await redis_cache.insert(
        q_chat(redis_cache, "How do I change my email?", control=faq), answer("b")
    )
    keys = sorted([k.decode() async for k in raw.scan_iter(match=f"{prefix}:*")])
    # P:{scope}:KIND... for a scope's keys (one hash tag), P:KIND... for the others
    kinds = sorted({k.split("}:")[1].split(":")[0] if "}:" in k else k.split(":")[1] for k in keys})
    assert kinds == ["e", "id", "ns", "scopes", "v", "x", "z"]
    for key in keys:
        ttl = await raw.pttl(key)
        if key == f"{prefix}:scopes" or key.startswith(f"{prefix}:ns:"):
            assert ttl == -1, key  # small index sets, cleaned by the sweep
        else:
            assert ttl > 0, key


async def test_stale_vectors_are_removed_when_a_search_meets_them(
    redis_cache: SemanticCache,
) -> None:
    short = q_chat(redis_cache, RESET, control=CacheControl(ttl_s=0.5))
    await redis_cache.insert(short, answer("a"))
    await redis_cache.insert(q_chat(redis_cache, "How do I change my email?"), answer("b"))
    await asyncio.sleep(0.7)
    assert await redis_cache.store.scope_size(short.scope) == 2
    assert (
        await redis_cache.lookup(q_chat(redis_cache, "How can I reset my password?"))
    ).status == "miss"
    assert await redis_cache.store.scope_size(short.scope) == 1  # removed on read, no sweep


async def test_the_sweep_forgets_empty_scopes(
    redis_cache: SemanticCache, raw: aioredis.Redis
) -> None:
    prefix = redis_cache.config.key_prefix
    q = q_chat(redis_cache, RESET, control=CacheControl(ttl_s=0.3, namespace="tmp"))
    await redis_cache.insert(q, answer("a"))
    assert await raw.sismember(f"{prefix}:scopes", q.scope)
    await asyncio.sleep(0.5)
    await redis_cache.sweep()
    assert not await raw.sismember(f"{prefix}:scopes", q.scope)
    assert not await raw.exists(f"{prefix}:ns:tmp")


async def test_memory_store_global_bound(embedder: Embedder) -> None:
    async with build_cache(CacheConfig(memory_max_entries=10), embedder=embedder) as cache:
        for i in range(15):
            await cache.insert(q_chat(cache, f"Question {i}?", tenant=f"t{i}"), answer(str(i)))
        assert (await cache.stats())["entries"] == 10
        assert (await cache.lookup(q_chat(cache, "Question 0?", tenant="t0"))).status == "miss"
        assert (
            await cache.lookup(q_chat(cache, "Question 14?", tenant="t14"))
        ).status == "hit-exact"


async def test_memory_store_search_is_exact_cosine() -> None:
    store = MemoryStore(clock=time.time)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i, vector in enumerate(vectors):
        entry = StoredEntry(
            f"id{i}", "default:s", f"k{i}", f"t{i}", answer("a"), time.time(), time.time() + 60
        )
        await store.add(entry, vector)
    found = await store.search("default:s", vectors[7], k=3)
    want = np.argsort(-(vectors @ vectors[7]))[:3]
    assert [n.entry.entry_id for n in found] == [f"id{i}" for i in want]
    assert found[0].similarity == pytest.approx(1.0, abs=1e-6)
    assert await store.search("default:s", vectors[7], k=3, min_similarity=0.999) == found[:1]
    assert await store.delete("id7") and await store.scope_size("default:s") == 49


@pytest.mark.parametrize(
    ("settings", "vadd_tail", "vsim_tail"),
    [
        ({"redis_build_ef": 37, "redis_search_ef": 2}, [b"EF", b"37"], [b"EF", b"3"]),
        ({}, [b"EF", b"100"], [b"COUNT", b"3"]),  # the defaults: 100, and Redis' own for VSIM
    ],
)
async def test_redis_build_and_search_ef_reach_vadd_and_vsim(
    redis_server: str,
    embedder: Embedder,
    raw: aioredis.Redis,
    settings: dict[str, int],
    vadd_tail: list[bytes],
    vsim_tail: list[bytes],
) -> None:
    """cache.redis_build_ef goes with every VADD (one insert: the ADD script; a warm-up:
    pipelined VADDs), cache.redis_search_ef with every search (at least k). The slow log at
    0 us records every command, those run by scripts included (long arguments shortened)."""
    config = CacheConfig(redis_url=redis_server, key_prefix=f"s{uuid.uuid4().hex[:12]}")
    config = config.model_copy(update=settings)
    previous = (await raw.config_get("slowlog-log-slower-than"))["slowlog-log-slower-than"] or 0
    await raw.config_set("slowlog-log-slower-than", 0)
    await raw.slowlog_reset()
    try:
        async with build_cache(config, embedder=embedder) as cache:
            store = cache.store
            q = q_chat(cache, RESET)
            await cache.insert(q, answer("a"))
            rng = np.random.default_rng(3)
            vectors = rng.normal(size=(3, 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            now = time.time()
            await store.add_many(
                [
                    (StoredEntry(f"b{i}", q.scope, f"bk{i}", "t", answer("b"), now, now + 60), v)
                    for i, v in enumerate(vectors)
                ]
            )
            found = await store.search(q.scope, vectors[1], k=3)
            assert found[0].entry.entry_id == "b1"
            assert found[0].similarity == pytest.approx(1.0, abs=1e-6)
            log = [entry["command"].split(b" ") for entry in await raw.slowlog_get(128)]
            await cache.flush()
    finally:
        await raw.config_set("slowlog-log-slower-than", previous)
    vadds = [command[-2:] for command in log if command[0].upper() == b"VADD"]
    assert vadds == [vadd_tail] * 4  # the insert's (in its script) and the warm-up's
    searches = [command[-2:] for command in log if command[0].upper() == b"VSIM"]
    assert searches == [vsim_tail]  # EF: max(EF, k)
