"""The Redis 8 store: one vector set per scope, payloads in hashes with a TTL.

Keys (``P`` is the configured prefix, ``S`` a scope id ``"<namespace>:<digest>"``):

- ``P:v:S``  vector set (VADD/VSIM, HNSW, Q8) of the scope's entry ids.
- ``P:z:S``  sorted set entry id -> expires_at: drives the sweep and the per-scope bound.
- ``P:e:ID`` hash ``e`` (entry JSON), ``v`` (the float32 vector) and, once an audit raised it,
  ``m`` (the entry's learned min_similarity), expiring with the entry.
- ``P:x:K``  exact key -> entry id, expiring with the entry.
- ``P:scopes`` and ``P:ns:NAMESPACE`` sets of scope ids (for the sweep and namespace deletes).

Vector sets have no per-element TTL, so expiry is enforced three ways: the payload hash expires
(an element without payload is never served and is removed when a search meets it), the sweep
removes elements whose time has passed, and ``P:v:S``/``P:z:S`` themselves expire with their
longest-lived entry, so every key but the two index sets has a TTL and a ``volatile-*``
maxmemory policy can evict any of them safely.

VSIM scores are ``(1 + cosine) / 2`` and computed on Q8-quantized vectors. The conversion lives
in ``cosine_to_score``; a search asks VSIM for candidates down to the requested similarity
minus a margin, then recomputes every candidate's exact cosine from the stored float32 vector.
Multi-key transactions assume a single Redis (not a cluster).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from gateway.cache.entry import Neighbour, StoredEntry, scope_namespace
from gateway.cache.redis_scripts import (
    DEL_IF_EQUAL,
    FORGET_IF_EMPTY,
    RAISE_MIN,
    TRIM,
    answered_no,
    entry_of,
    parse_vsim,
    text,
)
from gateway.cache.store import StoreRejected

Q8_MARGIN = 0.03  # cosine slack for Q8 quantization when pre-filtering candidates in Redis
_CHUNK = 500


def cosine_to_score(cosine: float) -> float:
    """VSIM's similarity score for a cosine similarity (the one place this is converted)."""
    return (1.0 + cosine) / 2.0


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


class RedisStore:
    """CacheStore over Redis 8 vector sets."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "semcache",
        max_entries_per_scope: int = 10_000,
        connect_timeout_s: float = 0.5,
        socket_timeout_s: float = 0.25,
        max_connections: int = 64,
        clock: Callable[[], float] = time.time,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        """``tls``: redis-py ``ssl_*`` options for rediss:// (CacheConfig.redis_tls_options)."""
        pool = redis.BlockingConnectionPool.from_url(
            url,
            **(tls or {}),
            max_connections=max_connections,
            timeout=connect_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 1),  # one quick retry: a pooled socket may predate a restart
        )
        self._r = redis.Redis.from_pool(pool)
        self._p = prefix
        self._max_per_scope = max_entries_per_scope
        self._clock = clock
        self._del_if_equal = self._r.register_script(DEL_IF_EQUAL)
        self._trim = self._r.register_script(TRIM)
        self._forget_if_empty = self._r.register_script(FORGET_IF_EMPTY)
        self._raise_min = self._r.register_script(RAISE_MIN)

    # -- key names -------------------------------------------------------------------------
    def _v(self, scope: str) -> str:
        return f"{self._p}:v:{scope}"

    def _z(self, scope: str) -> str:
        return f"{self._p}:z:{scope}"

    def _e(self, entry_id: str) -> str:
        return f"{self._p}:e:{entry_id}"

    def _x(self, exact_key: str) -> str:
        return f"{self._p}:x:{exact_key}"

    def _ns(self, namespace: str) -> str:
        return f"{self._p}:ns:{namespace}"

    @property
    def _scopes(self) -> str:
        return f"{self._p}:scopes"

    # -- protocol --------------------------------------------------------------------------
    async def add(self, entry: StoredEntry, vector: np.ndarray | None) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            self._queue_add(pipe, entry, vector)
            with answered_no():
                results = await pipe.execute()
        previous = results[0]
        if previous is not None and text(previous) != entry.entry_id:
            await self._unlink_entries(entry.scope, [text(previous)])
        await self._trim_scope(entry.scope)

    async def add_many(self, items: Sequence[tuple[StoredEntry, np.ndarray | None]]) -> None:
        """Like add() for each item, pipelined in chunks (one round trip per chunk; not one
        transaction: each entry's payload is written before its vector, so a concurrent search
        never mistakes a new vector for a stale one). The scope-wide keys' TTLs and indexes are
        updated once per chunk and scope, the scope bound once at the end."""
        scopes: set[str] = set()
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            positions: list[int] = []
            latest: dict[str, float] = {}  # scope -> the latest expiry in this chunk
            async with self._r.pipeline(transaction=False) as pipe:
                queued = 0
                for entry, vector in chunk:
                    positions.append(queued)
                    queued += self._queue_add(pipe, entry, vector, scope_keys=False)
                    latest[entry.scope] = max(latest.get(entry.scope, 0.0), entry.expires_at)
                for scope, expires_at in latest.items():
                    self._queue_scope_keys(pipe, scope, int(expires_at * 1000))
                with answered_no():
                    results = await pipe.execute(raise_on_error=False)
            for result in results:
                if isinstance(result, ResponseError):
                    raise StoreRejected(str(result))
            for (entry, _), position in zip(chunk, positions, strict=True):
                previous = results[position]
                if previous is not None and text(previous) != entry.entry_id:
                    await self._unlink_entries(entry.scope, [text(previous)])
            scopes.update(latest)
        for scope in scopes:
            await self._trim_scope(scope)

    def _queue_add(
        self, pipe: Any, entry: StoredEntry, vector: np.ndarray | None, *, scope_keys: bool = True
    ) -> int:
        """Queue one entry's writes (the exact-key SET, whose reply is the previous entry id,
        first) and, with ``scope_keys``, its scope's TTLs and indexes; returns how many
        commands were queued."""
        scope, entry_id = entry.scope, entry.entry_id
        expires_ms = int(entry.expires_at * 1000)
        payload: dict[FieldT, EncodableT] = {"e": entry.to_json()}
        if vector is not None:
            payload["v"] = _blob(vector)
        pipe.set(self._x(entry.exact_key), entry_id, pxat=expires_ms, get=True)
        pipe.hset(self._e(entry_id), mapping=payload)
        pipe.pexpireat(self._e(entry_id), expires_ms)
        if vector is not None:
            pipe.execute_command("VADD", self._v(scope), "FP32", payload["v"], entry_id, "Q8")
        pipe.zadd(self._z(scope), {entry_id: entry.expires_at})
        if scope_keys:
            self._queue_scope_keys(pipe, scope, expires_ms)
        return (5 if vector is not None else 4) + (6 if scope_keys else 0)

    def _queue_scope_keys(self, pipe: Any, scope: str, expires_ms: int) -> None:
        """The scope's sets live at least as long as its longest-lived entry; index the scope."""
        for key in (self._v(scope), self._z(scope)):
            pipe.pexpireat(key, expires_ms, nx=True)
            pipe.pexpireat(key, expires_ms, gt=True)
        pipe.sadd(self._scopes, scope)
        pipe.sadd(self._ns(scope_namespace(scope)), scope)

    async def _trim_scope(self, scope: str) -> None:
        popped = await self._trim(keys=[self._z(scope)], args=[self._max_per_scope])
        if popped:
            await self._unlink_entries(scope, [text(member) for member in popped[::2]])

    async def get_exact(self, scope: str, exact_key: str) -> StoredEntry | None:
        with answered_no():
            entry_id = await self._r.get(self._x(exact_key))
            if entry_id is None:
                return None
            raw, learned = await self._r.hmget(self._e(text(entry_id)), ["e", "m"])
        if raw is None:
            return None
        entry = entry_of(raw, learned)
        if entry.scope != scope or not entry.is_live(self._clock()):
            return None
        return entry

    async def search(
        self, scope: str, vector: np.ndarray, k: int, min_similarity: float = -1.0
    ) -> list[Neighbour]:
        query = np.asarray(vector, dtype=np.float32)
        args: list[Any] = ["VSIM", self._v(scope), "FP32", _blob(query), "WITHSCORES", "COUNT", k]
        floor = min_similarity - Q8_MARGIN
        if floor > -1.0:
            args += ["EPSILON", 1.0 - cosine_to_score(floor)]
        with answered_no():
            candidates = parse_vsim(await self._r.execute_command(*args))
        if not candidates:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for entry_id in candidates:
                pipe.hmget(self._e(entry_id), ["e", "v", "m"])
            payloads = await pipe.execute()
        now, found, stale = self._clock(), [], []
        for entry_id, (raw, blob, learned) in zip(candidates, payloads, strict=True):
            if raw is None:
                stale.append(entry_id)
                continue
            entry = entry_of(raw, learned)
            if not entry.is_live(now) or blob is None:
                continue
            similarity = float(np.frombuffer(blob, dtype="<f4") @ query)
            if similarity >= min_similarity:
                found.append(Neighbour(entry, similarity))
        if stale:  # payload expired: the vector is dead weight, drop it now
            async with self._r.pipeline(transaction=False) as pipe:
                for entry_id in stale:
                    pipe.execute_command("VREM", self._v(scope), entry_id)
                    pipe.zrem(self._z(scope), entry_id)
                await pipe.execute()
        found.sort(key=lambda neighbour: neighbour.similarity, reverse=True)
        return found

    async def get(self, entry_id: str) -> StoredEntry | None:
        raw, learned = await self._r.hmget(self._e(entry_id), ["e", "m"])
        if raw is None:
            return None
        entry = entry_of(raw, learned)
        return entry if entry.is_live(self._clock()) else None

    async def raise_min_similarity(self, entry_id: str, value: float) -> bool:
        with answered_no():
            return bool(await self._raise_min(keys=[self._e(entry_id)], args=[repr(value)]))

    async def delete(self, entry_id: str) -> bool:
        raw = await self._r.hget(self._e(entry_id), "e")
        if raw is None:
            return False
        entry = StoredEntry.from_json(raw)
        await self._unlink_entries(entry.scope, [entry_id])
        await self._del_if_equal(keys=[self._x(entry.exact_key)], args=[entry_id])
        return True

    async def delete_namespace(self, namespace: str) -> int:
        removed = 0
        members: set[bytes | str] = await self._r.smembers(self._ns(namespace))
        scopes = [text(member) for member in members]
        for scope in scopes:
            ids = [text(i) for i in cast(list[bytes], await self._r.zrange(self._z(scope), 0, -1))]
            for chunk in _chunks(ids):
                async with self._r.pipeline(transaction=False) as pipe:
                    for entry_id in chunk:
                        pipe.hget(self._e(entry_id), "e")
                    raws = await pipe.execute()
                exact = [self._x(StoredEntry.from_json(raw).exact_key) for raw in raws if raw]
                await self._r.unlink(*exact, *(self._e(i) for i in chunk))
            await self._r.unlink(self._v(scope), self._z(scope))
            await self._r.srem(self._scopes, scope)
            removed += len(ids)
        await self._r.unlink(self._ns(namespace))
        return removed

    async def flush(self) -> int:
        removed, batch = 0, []
        async for key in self._r.scan_iter(match=f"{self._p}:*", count=1000):
            if text(key).startswith(f"{self._p}:e:"):
                removed += 1
            batch.append(key)
            if len(batch) >= _CHUNK:
                await self._r.unlink(*batch)
                batch = []
        if batch:
            await self._r.unlink(*batch)
        return removed

    async def count(self) -> int:
        total, now = 0, self._clock()
        async for chunk in self._scope_chunks():
            async with self._r.pipeline(transaction=False) as pipe:
                for scope in chunk:
                    pipe.zcount(self._z(scope), f"({now}", "+inf")
                total += sum(await pipe.execute())
        return total

    async def scope_size(self, scope: str) -> int:
        return int(await self._r.execute_command("VCARD", self._v(scope)) or 0)

    async def sweep(self) -> int:
        removed, now = 0, self._clock()
        async for chunk in self._scope_chunks():
            async with self._r.pipeline(transaction=False) as pipe:
                for scope in chunk:
                    pipe.zrangebyscore(self._z(scope), "-inf", now)
                expired = await pipe.execute()
            for scope, ids in zip(chunk, expired, strict=True):
                if ids:
                    removed += await self._unlink_entries(scope, [text(i) for i in ids])
                await self._forget_if_empty(
                    keys=[self._z(scope), self._scopes, self._ns(scope_namespace(scope))],
                    args=[scope],
                )
        return removed

    async def ping(self) -> None:
        await self._r.ping()

    async def close(self) -> None:
        await self._r.aclose()

    # -- helpers ---------------------------------------------------------------------------
    async def _unlink_entries(self, scope: str, entry_ids: list[str]) -> int:
        """Remove entries from the scope's sets and drop their payloads; returns how many
        were still in the scope's sorted set (so concurrent sweeps do not double count)."""
        removed = 0
        for chunk in _chunks(entry_ids):
            async with self._r.pipeline(transaction=False) as pipe:
                for entry_id in chunk:
                    pipe.zrem(self._z(scope), entry_id)
                    pipe.execute_command("VREM", self._v(scope), entry_id)
                pipe.unlink(*(self._e(i) for i in chunk))
                results = await pipe.execute()
            removed += sum(int(r) for r in results[0:-1:2])
        return removed

    async def _scope_chunks(self) -> AsyncIterator[list[str]]:
        chunk: list[str] = []
        seen: set[str] = set()  # SSCAN may return an element twice
        async for raw in self._r.sscan_iter(self._scopes, count=_CHUNK):
            scope = text(raw)
            if scope in seen:
                continue
            seen.add(scope)
            chunk.append(scope)
            if len(chunk) >= _CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
