"""Redis trouble never fails a request: down, stalled or out of memory -> bypass -> recovery."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis

from gateway.cache import CacheConfig, CacheControl, Embedder, SemanticCache, build_cache
from tests.cache.helpers import answer, q_chat
from tests.support.redis import RedisServer

RESET = "How do I reset my password?"
RETRY_AFTER_S = 1.0


@pytest.fixture
async def redis_cache(
    redis_control: RedisServer, embedder: Embedder
) -> AsyncIterator[SemanticCache]:
    config = CacheConfig(
        redis_url=redis_control.url,
        key_prefix=f"f{uuid.uuid4().hex[:12]}",
        store_timeout_s=0.3,
        store_retry_after_s=RETRY_AFTER_S,
        sweep_interval_s=3600,
    )
    async with build_cache(config, embedder=embedder) as cache:
        yield cache


async def test_redis_killed_bypass_then_recovery(
    redis_control: RedisServer, redis_cache: SemanticCache
) -> None:
    if not redis_control.managed:
        pytest.skip("TEST_REDIS_URL points at a server this suite cannot kill")
    cache = redis_cache
    q = q_chat(cache, RESET)
    await cache.insert(q, answer("a"))
    assert (await cache.lookup(q)).status == "hit-exact"

    redis_control.kill()
    try:
        started = time.monotonic()
        down = await cache.lookup(q)
        assert (down.status, down.reason) == ("bypass", "store-error")
        assert time.monotonic() - started < 1.0
        # While resting, requests do not even try the store: instant bypasses, no exceptions.
        started = time.monotonic()
        many = await asyncio.gather(
            *(cache.lookup(q_chat(cache, f"{RESET} {i}")) for i in range(20))
        )
        assert {(r.status, r.reason) for r in many} == {("bypass", "store-unavailable")}
        assert time.monotonic() - started < 0.5
        assert await cache.insert(q_chat(cache, "How do I change my email?"), answer("b")) is None
        await asyncio.sleep(RETRY_AFTER_S + 0.05)  # window over: the store is tried again
        assert (await cache.lookup(q)).reason == "store-error"
        stats = await cache.stats()
        assert stats["bypasses"] == 22 and stats["insert_errors"] == 1
        assert stats["store_available"] is False and stats["entries"] is None
    finally:
        redis_control.start()

    await asyncio.sleep(RETRY_AFTER_S + 0.05)
    assert (await cache.lookup(q)).status == "miss"  # the data died with the process
    assert await cache.insert(q, answer("again")) is not None
    result = await cache.lookup(q_chat(cache, "How can I reset my password?"))
    assert result.status == "hit-semantic"
    assert result.answer is not None and result.answer.text == "again"
    assert (await cache.stats())["store_available"] is True


async def test_stalled_redis_costs_at_most_the_timeout(
    redis_control: RedisServer, redis_cache: SemanticCache
) -> None:
    cache = redis_cache
    q = q_chat(cache, RESET)
    await cache.insert(q, answer("a"))
    sleeper = threading.Thread(
        target=lambda: redis.Redis.from_url(redis_control.url).execute_command(
            "DEBUG", "SLEEP", "1.0"
        )
    )
    sleeper.start()
    await asyncio.sleep(0.3)  # the server is now blocked (for 2 s)
    started = time.monotonic()
    stalled = await cache.lookup(q)
    elapsed = time.monotonic() - started
    sleeper.join()
    assert (stalled.status, stalled.reason) == ("bypass", "store-error")
    assert elapsed < 1.2  # store_timeout_s = 0.3, not the 2 s stall
    await asyncio.sleep(RETRY_AFTER_S + 0.05)
    assert (await cache.lookup(q)).status == "hit-exact"


async def test_out_of_memory_rejects_writes_but_reads_go_on(
    redis_control: RedisServer, redis_cache: SemanticCache
) -> None:
    if not redis_control.managed:
        pytest.skip("would change the shared server's maxmemory")
    cache = redis_cache
    q = q_chat(cache, RESET)
    await cache.insert(q, answer("a"))
    admin = redis.Redis.from_url(redis_control.url)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    try:
        other = q_chat(cache, "How do I change my email?")
        assert await cache.insert(other, answer("b")) is None
        assert (await cache.stats())["insert_errors"] == 1
        # Redis answered (OOM), it is not down: reads continue without a pause.
        assert (await cache.lookup(q)).status == "hit-exact"
    finally:
        admin.config_set("maxmemory", "0")
        admin.close()
    assert await cache.insert(q_chat(cache, "How do I change my email?"), answer("b")) is not None


async def test_a_cache_starts_while_redis_is_unreachable(embedder: Embedder) -> None:
    config = CacheConfig(redis_url="redis://127.0.0.1:1", store_timeout_s=0.3)
    async with build_cache(config, embedder=embedder) as cache:
        q = q_chat(cache, RESET, control=CacheControl())
        assert (await cache.lookup(q)).status == "bypass"
        assert await cache.insert(q, answer("a")) is None
