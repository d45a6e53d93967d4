"""Per-API-key limits on requests and tokens per minute: token buckets, in-process.

Each key has up to two buckets that refill continuously (capacity = the per-minute limit,
refill = limit / 60 per second). A request takes one request token and its estimated tokens
(prompt + max_tokens) up front; when the real usage is known, ``settle`` gives back (or takes)
the difference, so the token bucket may go into debt. A refused request takes nothing and gets
a Retry-After of exactly how long the bucket needs to cover it.

The request path uses the async ``Limiter`` interface: ``LocalLimiter`` (this module, one
process) or ``SharedLimiter`` (redis_limits: the same buckets in Redis, shared by replicas).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.routing.config import KeyLimit, RateLimitConfig
from gateway.routing.errors import KeyRateLimited


def too_large(tokens: int, capacity: int, what: str) -> KeyRateLimited:
    return KeyRateLimited(
        f"This request needs {tokens} tokens, more than the key's limit of "
        f"{capacity} {what} per minute.",
        retry_after_s=60.0,
    )


def retry_later(wait_s: float) -> KeyRateLimited:
    return KeyRateLimited(
        "Rate limit reached for this API key; retry after the indicated time.",
        retry_after_s=math.ceil(wait_s),
    )


class Limiter(Protocol):
    """What the request path calls (see RateLimiter.acquire / settle for the semantics)."""

    async def acquire(self, api_key: str, tokens: int = 0, *, requests: int = 1) -> None: ...

    async def settle(self, api_key: str, estimated: int, actual: int) -> None: ...

    async def aclose(self) -> None: ...


@dataclass
class TokenBucket:
    capacity: float
    per_second: float
    level: float
    updated: float

    @classmethod
    def per_minute(cls, limit: int, now: float) -> TokenBucket:
        return cls(float(limit), limit / 60.0, float(limit), now)

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.per_second)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 if it is now); inf if it never fits."""
        if amount > self.capacity:
            return math.inf
        return max(0.0, (amount - self.level) / self.per_second)

    def full(self) -> bool:
        return self.level >= self.capacity


@dataclass
class _KeyState:
    requests: TokenBucket | None
    tokens: TokenBucket | None


class RateLimiter:
    def __init__(
        self, config: RateLimitConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cfg = config or RateLimitConfig()
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}

    def limit_for(self, api_key: str) -> KeyLimit:
        return self._cfg.keys.get(api_key, self._cfg.default)

    def acquire(self, api_key: str, tokens: int = 0, *, requests: int = 1) -> None:
        """Takes ``requests`` requests and ``tokens`` tokens from the key's buckets, or raises
        ``RateLimited`` (KeyRateLimited) with the Retry-After that would let it through."""
        state = self._state(api_key)
        if state is None:
            return
        now = self._clock()
        wait = 0.0
        for bucket, amount, what in (
            (state.requests, float(requests), "requests"),
            (state.tokens, float(tokens), "tokens"),
        ):
            if bucket is None:
                continue
            bucket.refill(now)
            needed = bucket.wait_for(amount)
            if math.isinf(needed):
                raise too_large(tokens, int(bucket.capacity), what)
            wait = max(wait, needed)
        if wait > 0:
            raise retry_later(wait)
        if state.requests is not None:
            state.requests.level -= requests
        if state.tokens is not None:
            state.tokens.level -= tokens

    def settle(self, api_key: str, estimated: int, actual: int) -> None:
        """Corrects the token bucket once the real usage is known (may leave it in debt)."""
        state = self._keys.get(api_key)
        if state is not None and state.tokens is not None:
            state.tokens.refill(self._clock())
            state.tokens.level = min(state.tokens.capacity, state.tokens.level + estimated - actual)

    def remaining(self, api_key: str) -> dict[str, float | None]:
        """What the key has left now (for x-ratelimit-remaining-* headers)."""
        state = self._state(api_key)
        now = self._clock()
        out: dict[str, float | None] = {"requests": None, "tokens": None}
        if state is None:
            return out
        for name, bucket in (("requests", state.requests), ("tokens", state.tokens)):
            if bucket is not None:
                bucket.refill(now)
                out[name] = math.floor(max(0.0, bucket.level))
        return out

    def _state(self, api_key: str) -> _KeyState | None:
        state = self._keys.get(api_key)
        if state is not None:
            return state
        limit = self.limit_for(api_key)
        if limit.requests_per_minute is None and limit.tokens_per_minute is None:
            return None
        if len(self._keys) >= self._cfg.max_tracked_keys:
            self._prune()
        now = self._clock()
        state = _KeyState(
            TokenBucket.per_minute(limit.requests_per_minute, now)
            if limit.requests_per_minute
            else None,
            TokenBucket.per_minute(limit.tokens_per_minute, now)
            if limit.tokens_per_minute
            else None,
        )
        self._keys[api_key] = state
        return state

    def _prune(self) -> None:
        """Forgets keys whose buckets are full again (they would be recreated identical)."""
        now = self._clock()
        for key, state in list(self._keys.items()):
            buckets = [b for b in (state.requests, state.tokens) if b is not None]
            for bucket in buckets:
                bucket.refill(now)
            if all(b.full() for b in buckets):
                del self._keys[key]


class LocalLimiter:
    """A RateLimiter of this process behind the async Limiter interface."""

    def __init__(self, config: RateLimitConfig | None = None) -> None:
        self.local = RateLimiter(config)

    async def acquire(self, api_key: str, tokens: int = 0, *, requests: int = 1) -> None:
        self.local.acquire(api_key, tokens, requests=requests)

    async def settle(self, api_key: str, estimated: int, actual: int) -> None:
        self.local.settle(api_key, estimated, actual)

    async def aclose(self) -> None:
        return None
