"""Per-API-key limits shared by every gateway replica: the token buckets of ratelimit, in Redis.

Same semantics as the in-process RateLimiter (buckets refill continuously; a refusal takes
nothing and says how long to wait; ``settle`` may leave the token bucket in debt), but each
operation is ONE Lua script run atomically by Redis (EVALSHA through ``register_script``), so
concurrent requests on any number of replicas never race. The clock is Redis's (``TIME``), so
replicas with skewed clocks agree. A key's buckets are one hash, ``<prefix>:rl:<key id>``, that
expires once both buckets would be full again (an absent hash is a full bucket). One key per
script: on a Redis Cluster (redis+cluster://) the keys spread over the masters.

Redis trouble never fails a request: when Redis errs or does not answer within
``redis_timeout_s``, this replica enforces its share of each limit in-process (limit / replicas,
rounded down, at least 1) and tries Redis again after ``redis_retry_s``. A warning is logged at
most every WARN_EVERY_S seconds while that lasts. A script that timed out may still run once
Redis wakes up: such a request is then counted twice (there and in-process), never zero times.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from gateway.redis_connect import connect, ready
from gateway.routing.config import KeyLimit, RateLimitConfig
from gateway.routing.ratelimit import (
    Limiter,
    LocalLimiter,
    RateLimiter,
    retry_later,
    too_large,
)

log = logging.getLogger(__name__)

WARN_EVERY_S = 10.0

# KEYS[1]: the key's hash. ARGV: request capacity, token capacity (0: no such bucket), requests
# and tokens wanted. Returns {1} (taken) or {0, seconds to wait as a string}.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cur = redis.call('HMGET', KEYS[1], 'r', 'rt', 't', 'tt')
local caps = {tonumber(ARGV[1]), tonumber(ARGV[2])}
local need = {tonumber(ARGV[3]), tonumber(ARGV[4])}
local level = {}
local wait = 0
for i = 1, 2 do
  local cap = caps[i]
  if cap > 0 then
    local l, at = tonumber(cur[2 * i - 1]), tonumber(cur[2 * i])
    if l == nil or at == nil then
      l = cap
    else
      l = math.min(cap, l + math.max(0, now - at) * cap / 60)
    end
    level[i] = l
    if need[i] > l then wait = math.max(wait, (need[i] - l) * 60 / cap) end
  end
end
if wait > 0 then return {0, tostring(wait)} end
local names = {{'r', 'rt'}, {'t', 'tt'}}
local ttl = 0
for i = 1, 2 do
  local cap = caps[i]
  if cap > 0 then
    local l = level[i] - need[i]
    redis.call('HSET', KEYS[1], names[i][1], tostring(l), names[i][2], tostring(now))
    ttl = math.max(ttl, (cap - l) * 60 / cap)
  end
end
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000) + 1000)
return {1}
"""

# KEYS[1]: the key's hash. ARGV: token capacity, tokens to give back (negative: to take).
SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap = tonumber(ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 't', 'tt')
local l, at = tonumber(cur[1]), tonumber(cur[2])
if l == nil or at == nil then
  l = cap
else
  l = math.min(cap, l + math.max(0, now - at) * cap / 60)
end
l = math.min(cap, l + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 't', tostring(l), 'tt', tostring(now))
local ttl = math.ceil((cap - l) * 60 / cap * 1000) + 1000
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""


def per_replica(config: RateLimitConfig) -> RateLimitConfig:
    """Each limit divided among ``config.replicas`` (rounded down, at least 1)."""

    def share(limit: int | None) -> int | None:
        return max(1, limit // config.replicas) if limit else None

    def split(limit: KeyLimit) -> KeyLimit:
        return KeyLimit(
            requests_per_minute=share(limit.requests_per_minute),
            tokens_per_minute=share(limit.tokens_per_minute),
        )

    return config.model_copy(
        update={
            "default": split(config.default),
            "keys": {key: split(limit) for key, limit in config.keys.items()},
        }
    )


class SharedLimiter:
    """The Limiter of replicas that share one Redis (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        config: RateLimitConfig | None = None,
        *,
        prefix: str = "semcache",
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        self._cfg = config or RateLimitConfig()
        timeout = self._cfg.redis_timeout_s
        self._r = connect(url, connect_timeout_s=timeout, socket_timeout_s=timeout, tls=tls)
        self._acquire = self._r.register_script(ACQUIRE)
        self._settle = self._r.register_script(SETTLE)
        self._prefix = prefix
        self.fallback = RateLimiter(per_replica(self._cfg))
        self.failures = 0  # Redis calls that failed (each one served by the fallback)
        self._down_until = 0.0
        self._degraded = False
        self._warned_at = -math.inf

    def _key(self, api_key: str) -> str:
        return f"{self._prefix}:rl:{api_key}"

    async def acquire(self, api_key: str, tokens: int = 0, *, requests: int = 1) -> None:
        limit = self._cfg.keys.get(api_key, self._cfg.default)
        caps = (limit.requests_per_minute or 0, limit.tokens_per_minute or 0)
        if not any(caps):
            return
        for cap, amount, what in zip(caps, (requests, tokens), ("requests", "tokens"), strict=True):
            if cap and amount > cap:
                raise too_large(tokens, cap, what)
        answer = await self._run(self._acquire, api_key, [*caps, requests, tokens])
        if answer is None:
            self.fallback.acquire(api_key, tokens, requests=requests)
        elif int(answer[0]) == 0:
            raise retry_later(float(answer[1]))

    async def settle(self, api_key: str, estimated: int, actual: int) -> None:
        cap = self._cfg.keys.get(api_key, self._cfg.default).tokens_per_minute
        if not cap or estimated == actual:
            return
        if await self._run(self._settle, api_key, [cap, estimated - actual]) is None:
            self.fallback.settle(api_key, estimated, actual)

    async def ready(self) -> None:
        await ready(self._r)

    async def aclose(self) -> None:
        await self._r.aclose()

    async def _run(self, script: Any, api_key: str, args: list[int]) -> Any:
        """The script's answer, or None when Redis is (or was just found) unavailable."""
        if time.monotonic() < self._down_until:
            return None
        try:
            async with asyncio.timeout(self._cfg.redis_timeout_s):
                answer = await script(keys=[self._key(api_key)], args=args)
        except Exception as exc:  # Redis trouble, or a client bug seen as one: never a failure
            self._failed(exc)
            return None
        if self._degraded:
            self._degraded = False
            log.warning("Redis answers again: rate limits are shared across replicas again")
        return answer

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._degraded = True
        now = time.monotonic()
        self._down_until = now + self._cfg.redis_retry_s
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "Redis unavailable for rate limits (%r): this replica enforces 1/%d of each "
                "limit in-process until it answers",
                exc,
                self._cfg.replicas,
            )


def build_limiter(
    config: RateLimitConfig,
    redis_url: str | None,
    *,
    prefix: str = "semcache",
    tls: Mapping[str, Any] | None = None,
) -> Limiter:
    """Shared through Redis when the gateway has a Redis URL, else in-process."""
    if redis_url:
        return SharedLimiter(redis_url, config, prefix=prefix, tls=tls)
    return LocalLimiter(config)
