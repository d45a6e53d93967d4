"""The storage protocol behind the cache, shared by the Redis and the in-process store.

A store keeps entries (see entry.StoredEntry) grouped by scope, with two ways in: the exact key
of an entry, and cosine search over the entries' vectors within one scope. Every method may
raise on trouble (connection lost, timeout, StoreRejected); the service turns that into a
bypass. A store
never returns an entry whose ``expires_at`` has passed, even if its vector was not swept yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from gateway.cache.entry import Neighbour, StoredEntry


class StoreRejected(Exception):
    """The store is up but refused the operation (e.g. Redis out of memory). Unlike a lost
    connection or a timeout, this does not make the service rest the store."""


class CacheStore(Protocol):
    name: str

    async def add(self, entry: StoredEntry, vector: np.ndarray | None) -> None:
        """Store an entry (``vector`` None = exact tier only, e.g. a truncated text).

        An older entry with the same exact key is replaced. When the scope is full, the entries
        closest to expiry are evicted (the oldest ones when all share one TTL).
        """
        ...

    async def add_many(self, items: Sequence[tuple[StoredEntry, np.ndarray | None]]) -> None:
        """add() for each (entry, vector) in order, batched (bulk warm-up): pipelined writes in
        Redis, one index insert per scope in process. The scope bound may be applied only at
        the end. On failure, some of the items may be stored."""
        ...

    async def get_exact(self, scope: str, exact_key: str) -> StoredEntry | None:
        """The live entry stored under this exact key in this scope."""
        ...

    async def search(
        self, scope: str, vector: np.ndarray, k: int, min_similarity: float = -1.0
    ) -> list[Neighbour]:
        """Up to k live entries of the scope with the highest exact cosine similarity to the
        (unit-length) vector, at least ``min_similarity``, best first."""
        ...

    async def get(self, entry_id: str) -> StoredEntry | None: ...

    async def raise_min_similarity(self, entry_id: str, value: float) -> bool:
        """Set the entry's ``min_similarity`` to ``value`` if that is higher (atomically; it
        never goes down). False when no such live entry exists."""
        ...

    async def delete(self, entry_id: str) -> bool: ...

    async def delete_namespace(self, namespace: str) -> int:
        """Remove every entry of every scope in the namespace; returns how many."""
        ...

    async def flush(self) -> int:
        """Remove everything this store holds; returns how many entries."""
        ...

    async def count(self) -> int:
        """Live entries."""
        ...

    async def scope_size(self, scope: str) -> int:
        """Vectors physically held for a scope, expired ones not yet swept included."""
        ...

    async def sweep(self) -> int:
        """Remove expired entries and their vectors; returns how many."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
