"""Per-API-key requests and tokens per minute, with a computed Retry-After."""

from __future__ import annotations

import pytest

from gateway.errors import RateLimited
from gateway.routing.config import KeyLimit, RateLimitConfig
from gateway.routing.ratelimit import RateLimiter
from tests.routing.helpers import FakeClock


def limiter(clock: FakeClock, **keys: KeyLimit) -> RateLimiter:
    return RateLimiter(RateLimitConfig(keys=keys), clock=clock)


def test_requests_per_minute_with_retry_after() -> None:
    clock = FakeClock()
    rl = limiter(clock, a=KeyLimit(requests_per_minute=3))
    for _ in range(3):
        rl.acquire("a")
    with pytest.raises(RateLimited) as limited:
        rl.acquire("a")
    assert limited.value.status_code == 429
    assert limited.value.headers() == {"Retry-After": "20"}  # one request refills in 60/3 s
    clock.advance(19)
    with pytest.raises(RateLimited):
        rl.acquire("a")
    clock.advance(1)
    rl.acquire("a")
    assert rl.remaining("a")["requests"] == 0


def test_keys_are_independent_and_unlisted_keys_use_the_default() -> None:
    clock = FakeClock()
    rl = RateLimiter(
        RateLimitConfig(default=KeyLimit(requests_per_minute=1), keys={"vip": KeyLimit()}),
        clock=clock,
    )
    rl.acquire("x")
    rl.acquire("y")  # another key: its own bucket
    with pytest.raises(RateLimited):
        rl.acquire("x")
    for _ in range(100):
        rl.acquire("vip")  # no limits configured for this key


def test_tokens_per_minute_and_settling_the_real_usage() -> None:
    clock = FakeClock()
    rl = limiter(clock, t=KeyLimit(tokens_per_minute=600))
    rl.acquire("t", tokens=500)  # estimate: prompt + max_tokens
    with pytest.raises(RateLimited) as limited:
        rl.acquire("t", tokens=200)
    assert limited.value.headers()["Retry-After"] == "10"  # 100 tokens short at 10 tokens/s
    rl.settle("t", estimated=500, actual=120)  # the answer was short: 380 come back
    rl.acquire("t", tokens=200)
    assert rl.remaining("t")["tokens"] == 280


def test_a_request_larger_than_the_limit_is_refused_outright() -> None:
    rl = limiter(FakeClock(), t=KeyLimit(tokens_per_minute=100))
    with pytest.raises(RateLimited, match="more than the key's limit"):
        rl.acquire("t", tokens=101)
    rl.acquire("t", tokens=100)  # nothing was taken by the refusal


def test_a_refused_request_takes_nothing() -> None:
    clock = FakeClock()
    rl = limiter(clock, k=KeyLimit(requests_per_minute=10, tokens_per_minute=100))
    rl.acquire("k", tokens=100)
    with pytest.raises(RateLimited):
        rl.acquire("k", tokens=50)
    assert rl.remaining("k") == {"requests": 9, "tokens": 0}


def test_idle_keys_are_forgotten_when_too_many_are_tracked() -> None:
    clock = FakeClock()
    rl = RateLimiter(
        RateLimitConfig(default=KeyLimit(requests_per_minute=60), max_tracked_keys=10), clock=clock
    )
    for i in range(10):
        rl.acquire(f"k{i}")
    clock.advance(2)  # all buckets full again
    rl.acquire("new")
    assert len(rl._keys) == 1
