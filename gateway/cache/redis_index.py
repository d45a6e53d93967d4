"""The Redis store's index of scopes: which scopes exist (for the sweep, count and namespace
deletes) and which scope each entry id belongs to (for calls that name an entry by id alone).

These keys live on slots of their own, not on their scopes' (``redis_keys``), so no script
can update them together with a scope on a Redis Cluster. The order of writes keeps them
right instead: an insert writes the scope's keys first and indexes the scope after; the sweep
forgets a scope whose sorted set is gone by removing it, then looking again and putting it
back if an insert brought it alive meanwhile. No interleaving leaves a live scope out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from gateway.cache.entry import StoredEntry, scope_namespace
from gateway.cache.redis_keys import RedisKeys
from gateway.cache.redis_scripts import text
from gateway.redis_connect import RedisClient

CHUNK = 500


class ScopeIndex:
    def __init__(self, client: RedisClient, keys: RedisKeys) -> None:
        self._r = client
        self._k = keys

    def queue(self, pipe: Any, scope: str, entries: Sequence[StoredEntry]) -> None:
        """After the scope's writes: the entries' id pointers and the scope's place in the
        indexes."""
        for entry in entries:
            pointer = self._k.scope_of(entry.entry_id)
            pipe.set(pointer, scope, pxat=int(entry.expires_at * 1000))
        pipe.sadd(self._k.scopes, scope)
        pipe.sadd(self._k.namespace(scope_namespace(scope)), scope)

    async def scope_of(self, entry_id: str) -> str | None:
        scope = await self._r.get(self._k.scope_of(entry_id))
        return None if scope is None else text(scope)

    async def forget(self, scopes: list[str]) -> None:
        """Drops scopes whose sorted set is gone from the indexes (see the module docstring)."""
        async with self._r.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.srem(self._k.scopes, scope)
                pipe.srem(self._k.namespace(scope_namespace(scope)), scope)
            for scope in scopes:
                pipe.execute_command("EXISTS", self._k.expiries(scope))
            alive = (await pipe.execute())[2 * len(scopes) :]
        back = [scope for scope, exists in zip(scopes, alive, strict=True) if exists]
        if back:
            async with self._r.pipeline(transaction=False) as pipe:
                for scope in back:
                    pipe.sadd(self._k.scopes, scope)
                    pipe.sadd(self._k.namespace(scope_namespace(scope)), scope)
                await pipe.execute()

    async def chunks(self) -> AsyncIterator[list[str]]:
        """Every indexed scope once, in chunks of at most CHUNK."""
        chunk: list[str] = []
        seen: set[str] = set()  # SSCAN may return an element twice
        async for raw in self._r.sscan_iter(self._k.scopes, count=CHUNK):
            scope = text(raw)
            if scope in seen:
                continue
            seen.add(scope)
            chunk.append(scope)
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
