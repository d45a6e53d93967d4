"""An approximate (HNSW) index over one scope's vectors, for the in-process store.

faiss' ``IndexHNSWFlat`` (inner product on unit vectors = cosine) proposes candidates; the
caller re-checks each candidate's exact float32 cosine, so the index only decides *which*
entries are looked at, never the similarity that is served. HNSW in faiss cannot delete: a
removed entry becomes a tombstone (its bit is cleared in a bitmap that every search passes as
an ID selector, so tombstones are never returned), and the owner rebuilds the index from its
live vectors once tombstones outnumber live entries (``wants_rebuild``).
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

HNSW_M = 16  # graph degree
EF_CONSTRUCTION = 40
EF_SEARCH = 96  # at least; raised to the number of candidates asked for
# A bulk insert uses every core; one query runs on the calling thread alone (an OpenMP team for
# one query only waits for a busy core: p99 117 ms vs p50 1.2 ms seen on a loaded 2-core box).
_BULK_THREADS = faiss.omp_get_max_threads()


class HnswIndex:
    """Entry ids -> HNSW labels (insertion order), with tombstones for removed entries."""

    def __init__(self, dim: int) -> None:
        self._index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = EF_CONSTRUCTION
        self._ids: list[str | None] = []  # label -> entry id (None = tombstone)
        self._labels: dict[str, int] = {}
        self._bitmap = np.zeros(1024, dtype=np.uint8)  # bit per label: 1 = live
        self.dead = 0

    def __len__(self) -> int:
        """Live entries."""
        return len(self._labels)

    def __contains__(self, entry_id: str) -> bool:
        return entry_id in self._labels

    def add(self, entry_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add entries (ids not in the index yet) with their unit vectors, one batch."""
        if not entry_ids:
            return
        start = len(self._ids)
        end = start + len(entry_ids)
        if (end + 7) // 8 > self._bitmap.shape[0]:
            grown = np.zeros(max(2 * self._bitmap.shape[0], (end + 7) // 8), dtype=np.uint8)
            grown[: self._bitmap.shape[0]] = self._bitmap
            self._bitmap = grown
        faiss.omp_set_num_threads(_BULK_THREADS)
        try:
            self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        finally:
            faiss.omp_set_num_threads(1)
        for label, entry_id in enumerate(entry_ids, start):
            self._ids.append(entry_id)
            self._labels[entry_id] = label
            self._bitmap[label >> 3] |= np.uint8(1 << (label & 7))

    def remove(self, entry_id: str) -> None:
        label = self._labels.pop(entry_id, None)
        if label is None:
            return
        self._ids[label] = None
        self._bitmap[label >> 3] &= np.uint8(~(1 << (label & 7)) & 0xFF)
        self.dead += 1

    def wants_rebuild(self) -> bool:
        return self.dead > max(1024, len(self._labels))

    def search(self, vector: np.ndarray, n: int) -> list[str]:
        """Up to n live entry ids, approximately the most similar first."""
        if not self._labels:
            return []
        n = min(n, len(self._labels))
        selector = faiss.IDSelectorBitmap(len(self._ids), faiss.swig_ptr(self._bitmap))
        params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
            sel=selector, efSearch=max(EF_SEARCH, n)
        )
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        faiss.omp_set_num_threads(1)
        _, labels = self._index.search(query, n, params=params)
        return [entry_id for label in labels[0] if label >= 0 and (entry_id := self._ids[label])]
