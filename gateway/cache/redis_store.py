"""The Redis 8 store: one vector set per scope, payloads in hashes with a TTL.

Key names are in ``redis_keys`` (every key of a scope shares the scope's hash tag, so one scope
lives on one master of a Redis Cluster and the scopes spread over the masters).

Vector sets have no per-element TTL, so expiry is enforced three ways: the payload hash expires
(an element without payload is never served and is removed when a search meets it), the sweep
removes elements whose time has passed, and the scope's vector and sorted sets themselves expire
with their longest-lived entry, so every key but the two index sets has a TTL and a
``volatile-*`` maxmemory policy can evict any of them safely.

Searches (VSIM on Q8 vectors, then the exact cosine from the stored float32 vectors, in one
script) are in ``redis_search``.

Acknowledged writes: with ``wait_replicas`` > 0, ``add`` returns only once that many replicas
of the scope's master have its write (``WAIT``), else it raises (the insert is then counted as
failed and the entry may or may not survive a failover). An entry that ``add`` acknowledged
survives its master's crash as long as one of those replicas takes over.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

import numpy as np
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from gateway.cache.entry import Neighbour, StoredEntry
from gateway.cache.redis_ack import require_replicas, serving_node
from gateway.cache.redis_index import CHUNK, ScopeIndex
from gateway.cache.redis_keys import RedisKeys
from gateway.cache.redis_scripts import (
    ADD,
    DEL_IF_EQUAL,
    RAISE_MIN,
    TRIM,
    answered_no,
    entry_of,
    text,
)
from gateway.cache.redis_search import ScopeSearch
from gateway.cache.store import StoreRejected
from gateway.redis_connect import is_cluster, pooled_client, ready

_CHUNK = CHUNK


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _gated(method: F) -> F:
    """The store's operations on a cluster pass its gate (see RedisStore.__init__)."""

    @functools.wraps(method)
    async def gated(self: RedisStore, *args: Any, **kwargs: Any) -> Any:
        if self._gate is None:
            return await method(self, *args, **kwargs)
        async with self._gate:
            return await method(self, *args, **kwargs)

    return cast(F, gated)


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


class RedisStore:
    """CacheStore over Redis 8 vector sets, on one server or a Redis Cluster."""

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
        wait_replicas: int = 0,
        wait_timeout_ms: int = 100,
        build_ef: int = 100,
        search_ef: int | None = None,
    ) -> None:
        """``tls``: redis-py ``ssl_*`` options for rediss:// (CacheConfig.redis_tls_options).
        ``url``: redis:// or redis+cluster:// (gateway.redis_connect). ``build_ef``: VADD's EF
        (CacheConfig.redis_build_ef); ``search_ef``: VSIM's (CacheConfig.redis_search_ef)."""
        self._r = pooled_client(url, connect_timeout_s, socket_timeout_s, max_connections, tls)
        # On a cluster, at most max_connections operations at once (so at most about that many
        # connections per node): its client cannot wait for a free connection (redis_connect).
        self._gate = asyncio.Semaphore(max_connections) if is_cluster(url) else None
        self.prefix = prefix
        self._k = RedisKeys(prefix)
        self._index = ScopeIndex(self._r, self._k)
        self._search = ScopeSearch(self._r, self._k, clock, search_ef)
        self._build_ef = build_ef
        self._max_per_scope = max_entries_per_scope
        self._clock = clock
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._add = self._r.register_script(ADD)
        self._del_if_equal = self._r.register_script(DEL_IF_EQUAL)
        self._trim = self._r.register_script(TRIM)
        self._raise_min = self._r.register_script(RAISE_MIN)

    # -- protocol --------------------------------------------------------------------------
    @_gated
    async def add(self, entry: StoredEntry, vector: np.ndarray | None) -> None:
        """One script on the scope's slot (redis_scripts.ADD), then (one round trip, possibly
        several masters) the id pointer and the scope indexes, then with ``wait_replicas`` the
        replication barrier."""
        scope, entry_id = entry.scope, entry.entry_id
        node = serving_node(self._r, self._k.ack(scope)) if self._wait_replicas else None
        keys = [
            self._k.exact(scope, entry.exact_key),
            self._k.entry(scope, entry_id),
            self._k.vectors(scope),
            self._k.expiries(scope),
        ]
        blob = b"" if vector is None else _blob(vector)
        args: list[EncodableT] = [
            entry_id,
            int(entry.expires_at * 1000),
            entry.to_json(),
            blob,
            repr(entry.expires_at),
            self._build_ef,
        ]
        with answered_no():
            previous = await self._add(keys=keys, args=args)
        async with self._r.pipeline(transaction=False) as pipe:
            self._index.queue(pipe, entry.scope, [entry])
            with answered_no():
                await pipe.execute()
        await self._barrier(entry.scope, node)
        if previous is not None and text(previous) != entry.entry_id:
            await self._unlink_entries(entry.scope, [text(previous)])
        await self._trim_scope(entry.scope)

    @_gated
    async def add_many(self, items: Sequence[tuple[StoredEntry, np.ndarray | None]]) -> None:
        """Like add() for each item, pipelined in chunks (one round trip per chunk and master;
        not one transaction: each entry's payload is written before its vector, so a concurrent
        search never mistakes a new vector for a stale one). The scope-wide keys' TTLs and
        indexes are updated once per chunk and scope, the scope bound once at the end."""
        scopes: set[str] = set()
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            positions: list[int] = []
            latest: dict[str, float] = {}  # scope -> the latest expiry in this chunk
            async with self._r.pipeline(transaction=False) as pipe:
                queued = 0
                for entry, vector in chunk:
                    positions.append(queued)
                    queued += self._queue_add(pipe, entry, vector)
                    latest[entry.scope] = max(latest.get(entry.scope, 0.0), entry.expires_at)
                for scope, expires_at in latest.items():
                    self._queue_scope_keys(pipe, scope, int(expires_at * 1000))
                    self._index.queue(pipe, scope, [e for e, _ in chunk if e.scope == scope])
                with answered_no():
                    results = await pipe.execute(raise_on_error=False)
            for result in results:
                if isinstance(result, Exception):
                    raise (
                        StoreRejected(str(result)) if isinstance(result, ResponseError) else result
                    )
            for (entry, _), position in zip(chunk, positions, strict=True):
                previous = results[position]
                if previous is not None and text(previous) != entry.entry_id:
                    await self._unlink_entries(entry.scope, [text(previous)])
            scopes.update(latest)
        for scope in scopes:
            await self._trim_scope(scope)
        for scope in scopes:  # one barrier per scope: it covers all the scope's earlier writes
            await self._barrier(scope, serving_node(self._r, self._k.ack(scope)))

    def _queue_add(self, pipe: Any, entry: StoredEntry, vector: np.ndarray | None) -> int:
        """Queue one entry's writes on its scope's slot (the exact-key SET, whose reply is the
        previous entry id, first); returns how many commands were queued."""
        scope, entry_id = entry.scope, entry.entry_id
        expires_ms = int(entry.expires_at * 1000)
        payload: dict[FieldT, EncodableT] = {"e": entry.to_json()}
        if vector is not None:
            payload["v"] = _blob(vector)
        pipe.set(self._k.exact(scope, entry.exact_key), entry_id, pxat=expires_ms, get=True)
        pipe.hset(self._k.entry(scope, entry_id), mapping=payload)
        pipe.pexpireat(self._k.entry(scope, entry_id), expires_ms)
        if vector is not None:
            pipe.execute_command(
                "VADD",
                self._k.vectors(scope),
                "FP32",
                payload["v"],
                entry_id,
                "Q8",
                "EF",
                self._build_ef,
            )
        pipe.zadd(self._k.expiries(scope), {entry_id: entry.expires_at})
        return 5 if vector is not None else 4

    def _queue_scope_keys(self, pipe: Any, scope: str, expires_ms: int) -> None:
        """The scope's sets live at least as long as its longest-lived entry."""
        for key in (self._k.vectors(scope), self._k.expiries(scope)):
            pipe.pexpireat(key, expires_ms, nx=True)
            pipe.pexpireat(key, expires_ms, gt=True)

    async def _barrier(self, scope: str, node: Any) -> None:
        """With ``wait_replicas``: returns once that many replicas have the scope's writes."""
        if self._wait_replicas:
            key = self._k.ack(scope)
            await require_replicas(self._r, key, node, self._wait_replicas, self._wait_timeout_ms)

    async def _trim_scope(self, scope: str) -> None:
        popped = await self._trim(keys=[self._k.expiries(scope)], args=[self._max_per_scope])
        if popped:
            await self._unlink_entries(scope, [text(member) for member in popped[::2]])

    @_gated
    async def get_exact(self, scope: str, exact_key: str) -> StoredEntry | None:
        with answered_no():
            entry_id = await self._r.get(self._k.exact(scope, exact_key))
            if entry_id is None:
                return None
            raw, learned = await self._r.hmget(self._k.entry(scope, text(entry_id)), ["e", "m"])
        if raw is None:
            return None
        entry = entry_of(raw, learned)
        if entry.scope != scope or not entry.is_live(self._clock()):
            return None
        return entry

    @_gated
    async def search(
        self, scope: str, vector: np.ndarray, k: int, min_similarity: float = -1.0
    ) -> list[Neighbour]:
        return await self._search.search(scope, vector, k, min_similarity)

    @_gated
    async def get(self, entry_id: str) -> StoredEntry | None:
        scope = await self._index.scope_of(entry_id)
        if scope is None:
            return None
        raw, learned = await self._r.hmget(self._k.entry(scope, entry_id), ["e", "m"])
        if raw is None:
            return None
        entry = entry_of(raw, learned)
        return entry if entry.is_live(self._clock()) else None

    @_gated
    async def raise_min_similarity(self, entry_id: str, value: float) -> bool:
        with answered_no():
            scope = await self._index.scope_of(entry_id)
            if scope is None:
                return False
            key = self._k.entry(scope, entry_id)
            return bool(await self._raise_min(keys=[key], args=[repr(value)]))

    @_gated
    async def delete(self, entry_id: str) -> bool:
        scope = await self._index.scope_of(entry_id)
        if scope is None:
            return False
        raw = await self._r.hget(self._k.entry(scope, entry_id), "e")
        if raw is None:
            return False
        entry = StoredEntry.from_json(raw)
        await self._unlink_entries(entry.scope, [entry_id])
        await self._del_if_equal(keys=[self._k.exact(scope, entry.exact_key)], args=[entry_id])
        return True

    @_gated
    async def delete_namespace(self, namespace: str) -> int:
        removed = 0
        members: set[bytes | str] = await self._r.smembers(self._k.namespace(namespace))
        scopes = [text(member) for member in members]
        for scope in scopes:
            zkey = self._k.expiries(scope)
            ids = [text(i) for i in cast(list[bytes], await self._r.zrange(zkey, 0, -1))]
            for chunk in _chunks(ids):
                async with self._r.pipeline(transaction=False) as pipe:
                    for entry_id in chunk:
                        pipe.hget(self._k.entry(scope, entry_id), "e")
                    raws = await pipe.execute()
                exact = [
                    self._k.exact(scope, StoredEntry.from_json(raw).exact_key)
                    for raw in raws
                    if raw
                ]
                await self._r.unlink(*exact, *(self._k.entry(scope, i) for i in chunk))
                await self._r.unlink(*(self._k.scope_of(i) for i in chunk))  # across slots
            await self._r.unlink(self._k.vectors(scope), zkey, self._k.ack(scope))
            await self._r.srem(self._k.scopes, scope)
            removed += len(ids)
        await self._r.unlink(self._k.namespace(namespace))
        return removed

    @_gated
    async def flush(self) -> int:
        """Every key under the prefix, on every master of a cluster."""
        removed, batch = 0, []
        async for key in self._r.scan_iter(match=self._k.pattern, count=1000):
            if self._k.is_entry_pointer(text(key)):
                removed += 1
            batch.append(key)
            if len(batch) >= _CHUNK:
                await self._r.unlink(*batch)
                batch = []
        if batch:
            await self._r.unlink(*batch)
        return removed

    @_gated
    async def count(self) -> int:
        total, now = 0, self._clock()
        async for chunk in self._index.chunks():
            async with self._r.pipeline(transaction=False) as pipe:
                for scope in chunk:
                    pipe.zcount(self._k.expiries(scope), f"({now}", "+inf")
                total += sum(await pipe.execute())
        return total

    @_gated
    async def scope_size(self, scope: str) -> int:
        return int(await self._r.execute_command("VCARD", self._k.vectors(scope)) or 0)

    @_gated
    async def sweep(self) -> int:
        """Removes expired entries, then forgets scopes whose sorted set is gone (redis_index)."""
        removed, now = 0, self._clock()
        async for chunk in self._index.chunks():
            async with self._r.pipeline(transaction=False) as pipe:
                for scope in chunk:
                    pipe.zrangebyscore(self._k.expiries(scope), "-inf", now)
                    pipe.execute_command("EXISTS", self._k.expiries(scope))
                answers = await pipe.execute()
            gone: list[str] = []
            for scope, ids, exists in zip(chunk, answers[::2], answers[1::2], strict=True):
                if ids:
                    removed += await self._unlink_entries(scope, [text(i) for i in ids])
                if not exists:
                    gone.append(scope)
            if gone:
                await self._index.forget(gone)
        return removed

    async def ready(self) -> None:
        await ready(self._r)

    @_gated
    async def ping(self) -> None:
        await self._r.ping()

    async def close(self) -> None:
        await self._r.aclose()

    # -- helpers ---------------------------------------------------------------------------
    async def _unlink_entries(self, scope: str, entry_ids: list[str]) -> int:
        """Remove entries from the scope's sets and drop their payloads and id pointers;
        returns how many were still in the scope's sorted set (so concurrent sweeps do not
        double count)."""
        removed = 0
        for chunk in _chunks(entry_ids):
            async with self._r.pipeline(transaction=False) as pipe:
                for entry_id in chunk:
                    pipe.zrem(self._k.expiries(scope), entry_id)
                    pipe.execute_command("VREM", self._k.vectors(scope), entry_id)
                pipe.execute_command("UNLINK", *(self._k.entry(scope, i) for i in chunk))
                results = await pipe.execute()
            await self._r.unlink(*(self._k.scope_of(i) for i in chunk))  # across slots
            removed += sum(int(r) for r in results[0:-1:2])
        return removed


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
