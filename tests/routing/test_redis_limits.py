"""Per-key limits shared through a real Redis 8 (one Lua script per operation), and what a
replica does when that Redis is down, stalled, or back again."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis as sync_redis

from gateway.routing.config import KeyLimit, RateLimitConfig
from gateway.routing.errors import KeyRateLimited
from gateway.routing.ratelimit import LocalLimiter
from gateway.routing.redis_limits import SharedLimiter, build_limiter, per_replica
from tests.support.redis import RedisServer
from tests.support.servers import free_port

Make = Callable[..., SharedLimiter]


@pytest.fixture
async def shared(redis_server: str) -> AsyncIterator[Make]:
    """Makes limiters on the session's Redis; those of one test share a fresh key prefix."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    made: list[SharedLimiter] = []

    def make(url: str = redis_server, **config: object) -> SharedLimiter:
        config.setdefault("redis_timeout_s", 5.0)  # a busy CI machine is not a Redis outage
        limiter = SharedLimiter(url, RateLimitConfig.model_validate(config), prefix=prefix)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


async def outcomes(limiter: SharedLimiter, *args: object, **kwargs: object) -> bool:
    try:
        await limiter.acquire(*args, **kwargs)  # type: ignore[arg-type]
    except KeyRateLimited:
        return False
    return True


async def test_concurrent_acquires_on_two_replicas_take_exactly_the_limit(shared: Make) -> None:
    config = {"keys": {"k": {"requests_per_minute": 10}}}
    one, two = shared(**config), shared(**config)
    results = await asyncio.gather(*(outcomes((one, two)[i % 2], "k") for i in range(50)))
    assert sum(results) == 10  # in-process buckets would let 10 through on each replica
    assert one.failures == two.failures == 0


async def test_a_refusal_says_how_long_to_wait(shared: Make) -> None:
    limiter = shared(keys={"r": {"requests_per_minute": 6}, "t": {"tokens_per_minute": 600}})
    for _ in range(6):
        await limiter.acquire("r")
    with pytest.raises(KeyRateLimited) as refused:
        await limiter.acquire("r")
    assert refused.value.retry_after_s == 10  # one request every 10 s
    await limiter.acquire("t", tokens=600)
    with pytest.raises(KeyRateLimited) as refused:
        await limiter.acquire("t", tokens=300)
    assert refused.value.retry_after_s == 30  # 10 tokens a second
    with pytest.raises(KeyRateLimited) as refused:
        await limiter.acquire("t", tokens=601)  # can never fit
    assert refused.value.retry_after_s == 60
    assert "601 tokens" in str(refused.value)


async def test_settle_refunds_and_takes_debts(shared: Make, redis_server: str) -> None:
    limiter = shared(keys={"k": {"tokens_per_minute": 1000}})
    await limiter.acquire("k", tokens=800)
    assert not await outcomes(limiter, "k", tokens=300)
    await limiter.settle("k", estimated=800, actual=100)  # 700 come back
    await limiter.acquire("k", tokens=300)
    await limiter.settle("k", estimated=300, actual=1300)  # 1000 more used: into debt
    with pytest.raises(KeyRateLimited) as refused:
        await limiter.acquire("k", tokens=1)
    # level about 900 - 300 - 1000 = -400: 401 tokens at 1000 / 60 per second is 24.06 s
    assert refused.value.retry_after_s == 25
    client = sync_redis.Redis.from_url(redis_server)
    key = next(iter(client.scan_iter(f"{limiter._prefix}:rl:*")))
    assert 25_000 < client.pttl(key) <= 85_000  # gone once the bucket would be full again
    client.close()


async def test_no_limit_no_redis_call() -> None:
    dead = SharedLimiter(f"redis://127.0.0.1:{free_port()}", RateLimitConfig())
    for _ in range(20):
        await dead.acquire("anyone", tokens=10**6)
    assert dead.failures == 0
    await dead.aclose()


async def test_redis_down_each_replica_enforces_its_share(shared: Make) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    limiter = shared(dead, replicas=2, keys={"k": {"requests_per_minute": 10}})
    started = time.monotonic()
    results = [await outcomes(limiter, "k") for _ in range(8)]
    assert results == [True] * 5 + [False] * 3  # 10 / 2 replicas, never an error
    assert limiter.failures >= 1
    assert time.monotonic() - started < 2


async def test_warnings_are_rate_limited_and_settle_falls_back(
    shared: Make, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    limiter = shared(dead, redis_retry_s=0, keys={"k": {"tokens_per_minute": 100}})
    with caplog.at_level(logging.WARNING, logger="gateway.routing.redis_limits"):
        await limiter.acquire("k", tokens=100)
        assert not await outcomes(limiter, "k", tokens=50)
        await limiter.settle("k", estimated=100, actual=40)  # in-process: 60 come back
        await limiter.acquire("k", tokens=50)
    assert limiter.failures == 4  # every call tried Redis (no rest), none raised
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


def test_the_share_is_rounded_down_and_at_least_one() -> None:
    config = RateLimitConfig(
        replicas=3,
        default=KeyLimit(requests_per_minute=10, tokens_per_minute=2),
        keys={"x": KeyLimit(tokens_per_minute=3000)},
    )
    shared = per_replica(config)
    assert shared.default == KeyLimit(requests_per_minute=3, tokens_per_minute=1)
    assert shared.keys["x"] == KeyLimit(tokens_per_minute=1000)


async def test_without_a_redis_url_the_limits_are_in_process() -> None:
    assert isinstance(build_limiter(RateLimitConfig(), None), LocalLimiter)
    assert isinstance(build_limiter(RateLimitConfig(), "redis://x:1"), SharedLimiter)


async def test_a_dead_then_restarted_redis(shared: Make) -> None:
    server = RedisServer()
    server.start()
    try:
        config = {"replicas": 2, "redis_retry_s": 0.2, "keys": {"k": {"requests_per_minute": 4}}}
        limiter = shared(server.url, **config)
        assert [await outcomes(limiter, "k") for _ in range(3)] == [True] * 3
        server.kill()
        # the shared bucket is out of reach: this replica's share (2) applies, requests served
        assert [await outcomes(limiter, "k") for _ in range(3)] == [True, True, False]
        assert limiter.failures >= 1
        server.start()
        await asyncio.sleep(0.3)
        failures = limiter.failures
        assert await outcomes(limiter, "k")  # a fresh shared bucket (the data died with it)
        assert limiter.failures == failures
        client = sync_redis.Redis.from_url(server.url)
        assert client.hget(f"{limiter._prefix}:rl:k", "r") is not None  # back on Redis
        client.close()
    finally:
        server.cleanup()


async def test_a_stalled_redis_falls_back_within_the_timeout(shared: Make) -> None:
    server = RedisServer()
    server.start()
    try:
        limiter = shared(server.url, redis_timeout_s=0.2, keys={"k": {"requests_per_minute": 5}})
        await limiter.acquire("k")  # connected, script loaded
        client = sync_redis.Redis.from_url(server.url)
        stall = threading.Thread(target=client.execute_command, args=("DEBUG", "SLEEP", "2.5"))
        stall.start()
        await asyncio.sleep(0.4)
        started = time.monotonic()
        await limiter.acquire("k")
        assert time.monotonic() - started < 1.2  # not the 2 s that Redis is still asleep
        assert limiter.failures == 1
        stall.join()
        client.close()
        await asyncio.sleep(limiter._cfg.redis_retry_s)
        assert [await outcomes(limiter, "k") for _ in range(4)] == [True, True, True, False]
        # back on Redis (no new failure). The timed-out script still ran once Redis woke up:
        # 1 + 1 + 3 taken there (a stalled call may count twice; it never counts zero times).
        assert limiter.failures == 1
    finally:
        server.cleanup()
