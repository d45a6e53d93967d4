"""The in-process store: the embedded default when no Redis is configured.

Per scope, the vectors live in one float32 matrix. A small scope is searched by brute force
(one matrix-vector product, exact); once it holds ``ann_min_entries`` vectors an HNSW index
(ann.py) proposes candidates instead and the matrix gives their exact cosine (brute force costs
~17 ms at 100 000 entries, the index ~1 ms). Expiry order is kept in
heaps with lazy deletion, which serve the sweep, the per-scope bound and the global bound.
Everything runs on the event loop thread without awaiting, so each call is atomic.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from gateway.cache.ann import HnswIndex
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
    """The entries of one scope, the matrix of their vectors and, when large, its HNSW index."""

    def __init__(self, ann_min_entries: int) -> None:
        self.entries: dict[str, StoredEntry] = {}
        self.heap = _ExpiryHeap()
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.matrix = np.empty((0, 0), dtype=np.float32)
        self.expires = np.empty(0, dtype=np.float64)
        self.ann_min_entries = ann_min_entries
        self.index: HnswIndex | None = None
        self.pending: list[str] = []  # in the matrix, not in the index yet

    def add(self, entry: StoredEntry, vector: np.ndarray | None, *, index_now: bool = True) -> None:
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
        if self.index is not None:
            self.pending.append(entry.entry_id)
        if index_now:
            self.sync_index()

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
        if self.index is not None:
            self.index.remove(entry_id)
            if len(self.ids) < self.ann_min_entries // 2:  # small again: exact and cheap
                self.index, self.pending = None, []

    def sync_index(self) -> None:
        """Build the index once the scope is large enough (or rebuild it once it holds more
        tombstones than live entries); otherwise add the pending vectors in one batch."""
        size = len(self.ids)
        if self.index is None and size < self.ann_min_entries:
            return
        if self.index is None or self.index.wants_rebuild():
            self.index = HnswIndex(self.matrix.shape[1])
            self.index.add(self.ids, self.matrix[:size])
        else:
            fresh = [i for i in self.pending if i in self.rows and i not in self.index]
            self.index.add(fresh, self.matrix[[self.rows[i] for i in fresh]])
        self.pending = []

    def search(
        self, vector: np.ndarray, k: int, min_similarity: float, now: float
    ) -> list[tuple[str, float]]:
        """(entry_id, cosine) of the k most similar live vectors, best first."""
        size = len(self.ids)
        if size == 0:
            return []
        if self.pending:
            self.sync_index()
        if self.index is not None:
            return self._search_index(self.index, vector, k, min_similarity, now)
        sims = self.matrix[:size] @ vector
        sims[self.expires[:size] <= now] = -np.inf
        top = np.argpartition(-sims, k - 1)[:k] if k < size else np.arange(size)
        order = top[np.argsort(-sims[top])]
        return [(self.ids[i], float(sims[i])) for i in order if sims[i] >= min_similarity]

    def _search_index(
        self, index: HnswIndex, vector: np.ndarray, k: int, min_similarity: float, now: float
    ) -> list[tuple[str, float]]:
        """The index proposes 2k candidates (slack for expired ones the sweep has not removed
        yet); their exact cosine from the matrix ranks and filters them."""
        candidates = index.search(vector, 2 * k)
        if not candidates:
            return []
        rows = np.fromiter((self.rows[i] for i in candidates), dtype=np.int64)
        sims = self.matrix[rows] @ vector
        sims[self.expires[rows] <= now] = -np.inf
        order = np.argsort(-sims, kind="stable")[:k]
        return [(candidates[i], float(sims[i])) for i in order if sims[i] >= min_similarity]


class MemoryStore:
    """CacheStore in this process's memory (lost on restart)."""

    name = "memory"

    def __init__(
        self,
        *,
        max_entries_per_scope: int = 10_000,
        max_entries: int = 200_000,
        ann_min_entries: int = 2_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """A scope holding ``ann_min_entries`` vectors or more is searched through an HNSW
        index (exact cosine re-check of its candidates); smaller ones by brute force."""
        self._ann_min_entries = ann_min_entries
        self._max_per_scope = max_entries_per_scope
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, StoredEntry] = {}
        self._exact: dict[str, str] = {}
        self._scopes: dict[str, _Scope] = {}
        self._heap = _ExpiryHeap()

    async def add(self, entry: StoredEntry, vector: np.ndarray | None) -> None:
        self._add(entry, vector, index_now=True)

    async def add_many(self, items: Sequence[tuple[StoredEntry, np.ndarray | None]]) -> None:
        """Like add() for each item, with one batched index insert per scope at the end."""
        touched = {self._add(entry, vector, index_now=False) for entry, vector in items}
        for scope_id in touched:
            scope = self._scopes.get(scope_id)
            if scope is not None:
                scope.sync_index()

    def index_kind(self, scope: str) -> str:
        """How a scope is searched: "hnsw" (approximate index + exact re-check) or "exact"."""
        index = self._scopes.get(scope)
        return "hnsw" if index is not None and index.index is not None else "exact"

    def _add(self, entry: StoredEntry, vector: np.ndarray | None, *, index_now: bool) -> str:
        previous = self._exact.get(entry.exact_key)
        if previous is not None:
            self._remove(previous)
        scope = self._scopes.setdefault(entry.scope, _Scope(self._ann_min_entries))
        as_f32 = None if vector is None else np.asarray(vector, dtype=np.float32)
        scope.add(entry, as_f32, index_now=index_now)
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
        return entry.scope

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
