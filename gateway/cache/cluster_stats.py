"""The cache's counters summed over every replica that shares a Redis.

Each replica keeps counting in-process (CacheCounters, no Redis call on the request path) and
every ``flush_s`` adds what it counted since its last flush to one Redis hash with HINCRBY, in
one Lua script that also stamps the replica as alive. Readers (admin stats, dashboard)
flush first and read the hash: the totals of the cluster, which outlive the replicas that
counted them. A flush that fails is retried with the next one (its deltas are kept); a flush
that timed out but landed is counted twice, never lost. Keys share the hash tag
``{<prefix>:stats}``, so a Redis Cluster keeps them on one slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections import Counter
from types import TracebackType
from typing import Any, Self

from gateway.background import stop_task
from gateway.cache.stats import CacheCounters
from gateway.redis_connect import RedisClient

log = logging.getLogger(__name__)

# KEYS: the counters' hash, the replicas' hash. ARGV: replica id, now, then field/delta pairs.
# A script, not MULTI: redis-py 8.1's asyncio cluster client blocks the event loop on every
# command queued in a MULTI pipeline.
ADD = """
for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

GUARD = "guard:"  # field prefix of the guard refusals, by reason
ALIVE_S = 30.0  # a replica that flushed within this long counts as reporting
# Any failure of a Redis call is Redis trouble, never the request's: besides REDIS_ERRORS, redis-py
# 8.1's cluster client was seen raising AttributeError from a connection it broke itself.
_REDIS_ERRORS: tuple[type[BaseException], ...] = (Exception,)
_NUMBERS = [f.name for f in dataclasses.fields(CacheCounters) if f.type in (int, "int")]


class ClusterStats:
    """See the module docstring; ``async with`` runs the periodic flush."""

    def __init__(
        self,
        client: RedisClient,
        counters: CacheCounters,
        *,
        prefix: str = "semcache",
        flush_s: float = 1.0,
        timeout_s: float = 1.0,
    ) -> None:
        self._r = client
        self._counters = counters
        self._key = f"{{{prefix}:stats}}:cache"
        self._replicas = f"{{{prefix}:stats}}:replicas"
        self.replica = uuid.uuid4().hex[:12]
        self._flush_s = flush_s
        self._timeout_s = timeout_s
        self._pushed: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._add = client.register_script(ADD)
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def _snapshot(self) -> dict[str, int]:
        counts = {name: int(getattr(self._counters, name)) for name in _NUMBERS}
        for reason, n in self._counters.guard_refusals.items():
            counts[GUARD + reason] = n
        return counts

    async def flush(self) -> bool:
        """Adds this replica's new counts to the cluster's; False if Redis did not take them."""
        async with self._lock:
            now = self._snapshot()
            deltas = {k: v - self._pushed.get(k, 0) for k, v in now.items()}
            try:
                async with asyncio.timeout(self._timeout_s):
                    changed = [x for f, d in deltas.items() if d for x in (f, d)]
                    await self._add(
                        keys=[self._key, self._replicas],
                        args=[self.replica, repr(time.time()), *changed],
                    )
            except _REDIS_ERRORS as exc:
                self.failures += 1
                log.debug("cluster cache stats not flushed: %r", exc)
                return False
            self._pushed = now
            return True

    async def totals(self) -> dict[str, Any] | None:
        """The cluster's counters in CacheCounters.as_dict's shape, or None without Redis."""
        await self.flush()
        try:
            async with asyncio.timeout(self._timeout_s):
                raw = await self._r.hgetall(self._key)
                seen = await self._r.hgetall(self._replicas)
        except _REDIS_ERRORS:
            return None
        counts = {_text(k): int(v) for k, v in raw.items()}
        summed = CacheCounters(
            **{name: counts.get(name, 0) for name in _NUMBERS},
            guard_refusals=Counter(
                {k[len(GUARD) :]: v for k, v in counts.items() if k.startswith(GUARD)}
            ),
        )
        now = time.time()
        alive = sum(1 for at in seen.values() if now - float(at) < ALIVE_S)
        return {**summed.as_dict(), "replicas_reporting": alive}

    async def merged(self, local: dict[str, Any]) -> dict[str, Any]:
        """``local`` (a replica's cache stats) with the cluster's counters in their place; the
        replica's own stay under "replica". Without Redis: the replica's, said so."""
        own = self._counters.as_dict()
        totals = await self.totals()
        if totals is None:
            return {**local, "counted_by": "replica", "replica": own}
        return {**local, **totals, "counted_by": "cluster", "replica": own}

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_s)
            await self.flush()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="cluster-cache-stats")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await stop_task(self._task)
        await self.flush()  # the last counts of a replica that stops are not lost
        with contextlib.suppress(*_REDIS_ERRORS):
            await self._r.hdel(self._replicas, self.replica)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
