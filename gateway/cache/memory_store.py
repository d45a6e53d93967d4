"""The in-process store: the embedded default when no Redis is configured.

Per scope, the vectors live in one float32 matrix searched by brute force (one matrix-vector
product: ~10k entries of 384 floats take well under a millisecond). Expiry order is kept in
heaps with lazy deletion, which serve the sweep, the per-scope bound and the global bound.
Everything runs on the event loop thread without awaiting, so each call is atomic.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from gateway.cache.entry import Neighbour, StoredEntry, scope_namespace


class _ExpiryHeap:
    """(expires_at, entry_id) in expiry order; stale pairs are skipped when popped."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []

    def push(self, entry: StoredEntry) -> None:
        heapq.heappush(self._heap, (entry.expires_at, entry.entry_id))

    def pop_live(self, entries: dict[str, StoredEntry], until: float | None = None) -> str | None:
        """The valid entry expiring first (only if it expires before ``until``, when given)."""
        while self._heap:
            expires_at, entry_id = self._heap[0]
            entry = entries.get(entry_id)
            if entry is None or entry.expires_at != expires_at:
                heapq.heappop(self._heap)
                continue
            if until is not None and expires_at > until:
                return None
            heapq.heappop(self._heap)
            return entry_id
        return None

    def compact(self, entries: dict[str, StoredEntry]) -> None:
        if len(self._heap) > 2 * len(entries) + 64:
            self._heap = [
                (e, i) for e, i in self._heap if i in entries and entries[i].expires_at == e
            ]
            heapq.heapify(self._heap)


class _Scope:
    """The entries of one scope and the matrix of their vectors."""

    def __init__(self) -> None:
        self.entries: dict[str, StoredEntry] = {}
        self.heap = _ExpiryHeap()
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.matrix = np.empty((0, 0), dtype=np.float32)
        self.expires = np.empty(0, dtype=np.float64)

    def add(self, entry: StoredEntry, vector: np.ndarray | None) -> None:
        self.entries[entry.entry_id] = entry
        self.heap.push(entry)
        if vector is None:
            return
        size = len(self.ids)
        if size == self.matrix.shape[0]:
            capacity = max(16, 2 * size)
            matrix = np.empty((capacity, vector.shape[0]), dtype=np.float32)
            expires = np.empty(capacity, dtype=np.float64)
            if size:
                matrix[:size], expires[:size] = self.matrix[:size], self.expires[:size]
            self.matrix, self.expires = matrix, expires
        self.matrix[size] = vector
        self.expires[size] = entry.expires_at
        self.rows[entry.entry_id] = size
        self.ids.append(entry.entry_id)

    def remove(self, entry_id: str) -> None:
        self.entries.pop(entry_id, None)
        row = self.rows.pop(entry_id, None)
        if row is None:
            return
        last = len(self.ids) - 1
        if row != last:  # move the last row into the hole
            moved = self.ids[last]
            self.matrix[row] = self.matrix[last]
            self.expires[row] = self.expires[last]
            self.ids[row] = moved
            self.rows[moved] = row
        self.ids.pop()

    def search(
        self, vector: np.ndarray, k: int, min_similarity: float, now: float
    ) -> list[tuple[str, float]]:
        """(entry_id, cosine) of the k most similar live vectors, best first."""
        size = len(self.ids)
        if size == 0:
            return []
        sims = self.matrix[:size] @ vector
        sims[self.expires[:size] <= now] = -np.inf
        top = np.argpartition(-sims, k - 1)[:k] if k < size else np.arange(size)
        order = top[np.argsort(-sims[top])]
        return [(self.ids[i], float(sims[i])) for i in order if sims[i] >= min_similarity]


class MemoryStore:
    """CacheStore in this process's memory (lost on restart)."""

    name = "memory"

    def __init__(
        self,
        *,
        max_entries_per_scope: int = 10_000,
        max_entries: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_per_scope = max_entries_per_scope
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, StoredEntry] = {}
        self._exact: dict[str, str] = {}
        self._scopes: dict[str, _Scope] = {}
        self._heap = _ExpiryHeap()

    async def add(self, entry: StoredEntry, vector: np.ndarray | None) -> None:
        previous = self._exact.get(entry.exact_key)
        if previous is not None:
            self._remove(previous)
        scope = self._scopes.setdefault(entry.scope, _Scope())
        scope.add(entry, None if vector is None else np.asarray(vector, dtype=np.float32))
        self._entries[entry.entry_id] = entry
        self._exact[entry.exact_key] = entry.entry_id
        self._heap.push(entry)
        while len(scope.entries) > self._max_per_scope:
            victim = scope.heap.pop_live(scope.entries)
            if victim is None:
                break
            self._remove(victim)
        while len(self._entries) > self._max_entries:
            victim = self._heap.pop_live(self._entries)
            if victim is None:
                break
            self._remove(victim)
        scope.heap.compact(scope.entries)
        self._heap.compact(self._entries)

    async def get_exact(self, scope: str, exact_key: str) -> StoredEntry | None:
        entry_id = self._exact.get(exact_key)
        entry = self._entries.get(entry_id) if entry_id else None
        if entry is None or entry.scope != scope or not entry.is_live(self._clock()):
            return None
        return entry

    async def search(
        self, scope: str, vector: np.ndarray, k: int, min_similarity: float = -1.0
    ) -> list[Neighbour]:
        index = self._scopes.get(scope)
        if index is None:
            return []
        query = np.asarray(vector, dtype=np.float32)
        hits = index.search(query, k, min_similarity, self._clock())
        return [Neighbour(index.entries[entry_id], sim) for entry_id, sim in hits]

    async def get(self, entry_id: str) -> StoredEntry | None:
        entry = self._entries.get(entry_id)
        return entry if entry is not None and entry.is_live(self._clock()) else None

    async def raise_min_similarity(self, entry_id: str, value: float) -> bool:
        entry = await self.get(entry_id)
        if entry is None:
            return False
        if value > entry.min_similarity:
            raised = replace(entry, min_similarity=value)
            self._entries[entry_id] = raised
            self._scopes[entry.scope].entries[entry_id] = raised
        return True

    async def delete(self, entry_id: str) -> bool:
        return self._remove(entry_id)

    async def delete_namespace(self, namespace: str) -> int:
        victims = [i for i, e in self._entries.items() if scope_namespace(e.scope) == namespace]
        for entry_id in victims:
            self._remove(entry_id)
        return len(victims)

    async def flush(self) -> int:
        removed = len(self._entries)
        self._entries.clear()
        self._exact.clear()
        self._scopes.clear()
        self._heap = _ExpiryHeap()
        return removed

    async def count(self) -> int:
        now = self._clock()
        return sum(1 for entry in self._entries.values() if entry.is_live(now))

    async def scope_size(self, scope: str) -> int:
        index = self._scopes.get(scope)
        return 0 if index is None else len(index.ids)

    async def sweep(self) -> int:
        now, removed = self._clock(), 0
        while (victim := self._heap.pop_live(self._entries, until=now)) is not None:
            self._remove(victim)
            removed += 1
        self._heap.compact(self._entries)
        return removed

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _remove(self, entry_id: str) -> bool:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return False
        if self._exact.get(entry.exact_key) == entry_id:
            del self._exact[entry.exact_key]
        scope = self._scopes.get(entry.scope)
        if scope is not None:
            scope.remove(entry_id)
            if not scope.entries:
                del self._scopes[entry.scope]
        return True
