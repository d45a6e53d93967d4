"""Large scopes: bulk add_many on both stores, and the in-process store's HNSW index (ann.py).

The in-process stores here switch to the index at 64 vectors (2 000 by default) so that the
approximate path is exercised with small, fast scopes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from gateway.cache import MemoryStore, RedisStore
from gateway.cache.entry import StoredEntry
from gateway.cache.store import CacheStore
from tests.cache.helpers import answer

DIM = 384
SCOPE = "ns:scope"
NOW = float(int(time.time()))  # Redis key TTLs are absolute wall-clock times


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, DIM)))


def entry(i: int, *, scope: str = SCOPE, ttl: float = 3600.0) -> StoredEntry:
    return StoredEntry(
        entry_id=f"e{i}-{scope}",
        scope=scope,
        exact_key=f"x{i}-{scope}",
        text=f"text {i}",
        answer=answer(f"answer {i}"),
        created_at=NOW,
        expires_at=NOW + ttl + i / 1000,  # distinct: the oldest are evicted first
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def make_store(
    request: pytest.FixtureRequest, clock: Clock
) -> AsyncIterator[Callable[[int], CacheStore]]:
    made: list[CacheStore] = []

    def make(bound: int) -> CacheStore:
        store: CacheStore
        if request.param == "memory":
            store = MemoryStore(max_entries_per_scope=bound, ann_min_entries=64, clock=clock)
        else:
            store = RedisStore(
                request.getfixturevalue("redis_server"),
                prefix=f"sc{uuid.uuid4().hex[:12]}",
                max_entries_per_scope=bound,
                socket_timeout_s=10.0,
                clock=clock,
            )
        made.append(store)
        return store

    yield make
    for store in made:
        await store.flush()
        await store.close()


@pytest.fixture
def store(make_store: Callable[[int], CacheStore]) -> CacheStore:
    return make_store(5_000)


def near(v: np.ndarray, seed: int) -> np.ndarray:
    """A query much closer to v than to any other random unit vector (cosine ~0.99)."""
    noise = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return unit(v + 0.1 * unit(noise))


async def test_add_many_stores_everything_and_lookups_find_it(store: CacheStore) -> None:
    vs = vectors(600)
    other = [(entry(i, scope="ns:other"), vs[i]) for i in range(100)]
    await store.add_many([(entry(i), vs[i]) for i in range(500)] + other + [(entry(-1), None)])
    assert await store.count() == 601
    assert await store.scope_size(SCOPE) == 500
    assert await store.scope_size("ns:other") == 100
    for i in range(0, 500, 25):
        best = (await store.search(SCOPE, vs[i], 10))[0]
        assert best.entry.entry_id == entry(i).entry_id
        assert best.similarity == pytest.approx(1.0, abs=1e-5)
        found = await store.get_exact(SCOPE, entry(i).exact_key)
        assert found is not None and found.entry_id == entry(i).entry_id
    assert await store.get_exact(SCOPE, entry(-1).exact_key) is not None
    if isinstance(store, MemoryStore):
        assert store.index_kind(SCOPE) == "hnsw"


async def test_add_many_replaces_by_exact_key_and_keeps_the_scope_bound(
    make_store: Callable[[int], CacheStore],
) -> None:
    store = make_store(300)
    vs = vectors(400)
    await store.add_many([(entry(i), vs[i]) for i in range(400)])
    assert await store.scope_size(SCOPE) == 300
    evicted = {entry(i).entry_id for i in range(100)}
    for i in range(0, 400, 10):
        hits = await store.search(SCOPE, vs[i], 10)
        assert not evicted & {n.entry.entry_id for n in hits}
    fresh = [(entry(i), vs[(i + 1) % 400]) for i in range(350, 400)]
    await store.add_many(fresh)  # same exact keys: replaced, not added
    assert await store.scope_size(SCOPE) == 300
    best = (await store.search(SCOPE, vs[351], 1))[0]
    assert best.entry.entry_id == entry(350).entry_id


async def test_the_best_neighbour_is_the_exact_one(store: CacheStore) -> None:
    vs = vectors(3_000, seed=1)
    await store.add_many([(entry(i), vs[i]) for i in range(3_000)])
    for j, i in enumerate(range(0, 3_000, 60)):
        query = near(vs[i], seed=j)
        exact = vs @ query
        hits = await store.search(SCOPE, query, 10)
        assert hits[0].entry.entry_id == entry(int(np.argmax(exact))).entry_id == entry(i).entry_id
        assert hits[0].similarity == pytest.approx(float(exact[i]), abs=1e-5)  # exact cosine
        assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)


async def test_the_index_agrees_with_brute_force(clock: Clock) -> None:
    vs = vectors(3_000, seed=2)
    indexed = MemoryStore(max_entries_per_scope=5_000, ann_min_entries=64, clock=clock)
    brute = MemoryStore(max_entries_per_scope=5_000, ann_min_entries=10**9, clock=clock)
    for store in (indexed, brute):
        await store.add_many([(entry(i), vs[i]) for i in range(3_000)])
    assert (indexed.index_kind(SCOPE), brute.index_kind(SCOPE)) == ("hnsw", "exact")
    for j in range(40):
        query = near(vs[j * 70], seed=100 + j)
        a, b = await indexed.search(SCOPE, query, 5, 0.5), await brute.search(SCOPE, query, 5, 0.5)
        assert [(n.entry.entry_id, n.similarity) for n in a] == [
            (n.entry.entry_id, n.similarity) for n in b
        ]


async def test_deleted_and_expired_entries_are_never_returned(
    store: CacheStore, clock: Clock
) -> None:
    vs = vectors(1_000, seed=3)
    items = [(entry(i, ttl=600.0 if i % 10 == 1 else 36_000.0), vs[i]) for i in range(1_000)]
    await store.add_many(items)
    deleted = {entry(i).entry_id for i in range(0, 1_000, 10)}
    for entry_id in deleted:
        assert await store.delete(entry_id)
    clock.now += 1_200.0  # every entry i % 10 == 1 has expired (not swept)
    expired = {entry(i).entry_id for i in range(1, 1_000, 10)}
    gone = deleted | expired
    for i in list(range(0, 1_000, 10)) + list(range(1, 1_000, 10)):
        hits = await store.search(SCOPE, vs[i], 10)
        assert hits and not gone & {n.entry.entry_id for n in hits}
    assert await store.sweep() == 100
    for i in range(1, 1_000, 50):
        assert not gone & {n.entry.entry_id for n in await store.search(SCOPE, vs[i], 10)}


async def test_the_in_process_store_switches_to_the_index_and_back(clock: Clock) -> None:
    store = MemoryStore(ann_min_entries=64, clock=clock)
    vs = vectors(200, seed=4)
    for i in range(63):
        await store.add(entry(i), vs[i])
    assert store.index_kind(SCOPE) == "exact"
    await store.add(entry(63), vs[63])
    assert store.index_kind(SCOPE) == "hnsw"
    for i in range(64, 200):  # single adds go into the index one by one
        await store.add(entry(i), vs[i])
    for i in range(0, 200, 7):
        assert (await store.search(SCOPE, vs[i], 3))[0].entry.entry_id == entry(i).entry_id
    for i in range(170):  # below half the switch size: brute force again
        await store.delete(entry(i).entry_id)
    assert store.index_kind(SCOPE) == "exact"
    for i in range(170, 200):
        assert (await store.search(SCOPE, vs[i], 3))[0].entry.entry_id == entry(i).entry_id


async def test_the_index_is_rebuilt_when_tombstones_outnumber_live_entries(clock: Clock) -> None:
    store = MemoryStore(ann_min_entries=64, clock=clock)
    vs = vectors(3_000, seed=5)
    await store.add_many([(entry(i), vs[i]) for i in range(2_500)])
    for i in range(1_300):
        await store.delete(entry(i).entry_id)
    index = store._scopes[SCOPE].index
    assert index is not None and index.dead == 1_300 and index.wants_rebuild()
    await store.add(entry(2_500), vs[2_500])
    rebuilt = store._scopes[SCOPE].index
    assert rebuilt is not None and rebuilt is not index and rebuilt.dead == 0
    assert len(rebuilt) == 1_201
    for i in range(1_300, 2_501, 40):
        assert (await store.search(SCOPE, vs[i], 3))[0].entry.entry_id == entry(i).entry_id
