"""What the gateway adds on a cache miss, against the same kind of request straight to the engine.

    python -m load.bench_overhead [--engine-url http://127.0.0.1:PORT] [--pairs 30]

One run, one real vLLM engine, one gateway (``python -m gateway serve``, in-process store).
Requests go in pairs, one through the gateway and one straight to the engine, in alternating
order, one at a time. Every request asks a different Banking77 question (so every gateway
request is a real miss: exact tier, embedding, vector search, then routing and relay), with
``max_tokens`` 8, temperature 0 and no stop sequence, so both sides generate the same number of
tokens. Two phases: JSON answers (latency) and SSE streams (latency and time to first token).
Reported per side: p50/p99; the added latency is the gateway's p50/p99 minus the engine's, and
the median of the per-pair differences (less sensitive to the engine's own jitter).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

import aiohttp

from load import stack
from load.banking77 import DEFAULT_CSV, read_labelled, split
from load.client import Reply, post_chat
from load.report import emit
from load.stats import loadavg, quantile, summary_ms

ADMIN = "bench-admin"


def added(gateway: list[float], engine: list[float]) -> dict[str, float]:
    pairs = [g - e for g, e in zip(gateway, engine, strict=True)]
    return {
        "p50_ms": round(1000 * (quantile(gateway, 0.5) - quantile(engine, 0.5)), 2),
        "p99_ms": round(1000 * (quantile(gateway, 0.99) - quantile(engine, 0.99)), 2),
        "median_of_pair_differences_ms": round(1000 * statistics.median(pairs), 2),
    }


async def phase(
    http: aiohttp.ClientSession,
    gateway: str,
    engine: stack.Endpoint,
    texts: list[str],
    stream: bool,
) -> dict[str, Any]:
    sides: dict[str, list[Reply]] = {"gateway": [], "engine": []}
    for i in range(0, len(texts) - 1, 2):
        order = [("gateway", gateway), ("engine", engine.url)]
        if (i // 2) % 2:
            order.reverse()
        for (side, url), text in zip(order, texts[i : i + 2], strict=True):
            body: dict[str, Any] = {
                "model": engine.model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": 8,
                "temperature": 0,
                "stream": stream,
            }
            reply = await post_chat(http, url, body)
            if reply.error:
                raise RuntimeError(f"{side}: {reply.error}")
            sides[side].append(reply)
    gw, en = sides["gateway"], sides["engine"]
    out: dict[str, Any] = {
        "pairs": len(gw),
        "gateway_x_cache": sorted({r.cache for r in gw}),
        "gateway_latency": summary_ms([r.latency_s for r in gw]),
        "engine_latency": summary_ms([r.latency_s for r in en]),
        "added_latency": added([r.latency_s for r in gw], [r.latency_s for r in en]),
    }
    if stream:
        gw_ttft = [r.ttft_s or r.latency_s for r in gw]
        en_ttft = [r.ttft_s or r.latency_s for r in en]
        out["gateway_ttft"] = summary_ms(gw_ttft)
        out["engine_ttft"] = summary_ms(en_ttft)
        out["added_ttft"] = added(gw_ttft, en_ttft)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    texts = [row.text for row in split(read_labelled(args.csv)).report]
    texts = texts[:: max(1, len(texts) // (4 * args.pairs + 8))]  # spread over the intents
    report: dict[str, Any] = {"loadavg_start": loadavg()}
    timeout = aiohttp.ClientTimeout(total=300)
    with stack.engine(url=args.engine_url) as engine, stack.gateway(engine, admin_key=ADMIN) as gw:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            warmup = texts[-8:]
            await phase(http, gw, engine, warmup, stream=False)
            await phase(http, gw, engine, warmup, stream=True)
            n = 2 * args.pairs
            print("[bench] JSON phase ...", file=sys.stderr, flush=True)
            report["json"] = await phase(http, gw, engine, texts[:n], stream=False)
            print("[bench] streaming phase ...", file=sys.stderr, flush=True)
            report["stream"] = await phase(http, gw, engine, texts[n : 2 * n], stream=True)
    report["loadavg_end"] = loadavg()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m load.bench_overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engine-url", help="use this running engine instead of starting one")
    parser.add_argument("--pairs", type=int, default=30, help="request pairs per phase")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    emit(report, args.json)


if __name__ == "__main__":
    main()
