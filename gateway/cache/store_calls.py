"""Store calls within a time budget, and a rest for the store after it failed.

The request path must never wait long for, nor fail because of, the store: each call gets
``store_timeout_s``; a failure (down, slow) makes the caller skip the store for
``store_retry_after_s``, so a dead Redis costs requests nothing, and then it is tried again. A
``StoreRejected`` (the store said no, e.g. out of memory) is counted but is no reason to rest.
Admin calls get no budget and raise ``CacheUnavailable`` so the admin API can say 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.cache.store import CacheStore, StoreRejected

log = logging.getLogger(__name__)
T = TypeVar("T")


class CacheUnavailable(RuntimeError):
    """The store failed during an admin operation."""


class StoreFailed(Exception):
    """A request-path store call failed or ran out of time (already logged and counted)."""


class StoreCalls:
    """Runs one store's calls; ``on_error(kind)`` hears of each failure (timeout, error,
    rejected)."""

    def __init__(
        self,
        store: CacheStore,
        timeout_s: float,
        retry_after_s: float,
        on_error: Callable[[str], None],
    ) -> None:
        self.store = store
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._on_error = on_error
        self._down_until = 0.0  # time.monotonic() before which the store is not tried

    def resting(self) -> bool:
        return time.monotonic() < self._down_until

    async def call(self, call: Awaitable[T]) -> T:
        """One request-path operation within the time budget; any failure -> StoreFailed."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except Exception as exc:
            self._failed(exc)
            if not isinstance(exc, StoreRejected):  # down or slow: leave it alone a moment
                self._down_until = time.monotonic() + self._retry_after_s
            log.warning("cache store %s failed: %r", self.store.name, exc)
            raise StoreFailed() from exc

    async def admin(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except Exception as exc:
            self._failed(exc)
            raise CacheUnavailable(f"cache store {self.store.name} failed: {exc!r}") from exc

    def _failed(self, exc: Exception) -> None:
        kind = "timeout" if "Timeout" in type(exc).__name__ else "error"
        self._on_error("rejected" if isinstance(exc, StoreRejected) else kind)
