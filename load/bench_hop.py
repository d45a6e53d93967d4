"""The gateway's own hop on a miss: the same requests straight to a stub engine and through
gateways in front of it, side by side in one run.

    python -m load.bench_hop [--delay-ms 15] [--streams 1,8] [--per-block 10] [--blocks 10]
                             [--variants off,sequential,speculative] [--json F]

The engine is the fault stub (tests/support/stub_engines.py) in a process of its own: it
answers after ``--delay-ms`` (its first SSE chunk then, the rest 10 ms apart) and uses almost
no CPU, so what a gateway adds is the gateway's own work: HTTP parsing, the cache lookup,
the token budget (the bundled SmolLM2 tokenizer, as in load/stack.py), routing, opening the
engine request and relaying it. Gateways (``python -m gateway serve``, in-process store):
``bare`` (cache and token budget off), ``off`` (``cache.enabled`` false), ``sequential`` (the
cache's default: semantic tier before the engine) and ``speculative``
(``cache.speculative_miss``: the engine request beside the semantic tier); ``NAME@DIR`` runs
variant NAME from the source tree DIR (e.g. ``git archive`` of an older commit), to compare
code side by side. Every request asks a different text, so every cached request is a miss.

Blocks of ``--per-block`` requests per side from ``--streams`` concurrent clients, the sides
in rotating order (direct, off, sequential, speculative; then the next block starts one
further on), ``--blocks`` blocks a side; JSON (latency) and SSE (time to first token).
Reported per side: p50/p99 and "added" (the gateway's quantile minus the engine's). Then, for
the cached gateways, ``--hits`` semantic hits one at a time (a stored question again in upper
case), JSON latency and SSE time to first token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from load import stack
from load.client import Reply
from load.miss_overhead import added, side
from load.report import emit
from load.stats import loadavg, summary_ms
from tests.support.stub_engines import MODEL, fault_engine_process

VARIANTS: dict[str, dict[str, str]] = {
    "off": {"GATEWAY_CACHE__ENABLED": "false"},
    "bare": {"GATEWAY_CACHE__ENABLED": "false", "GATEWAY_ROUTING__BUDGET__ENABLED": "false"},
    "sequential": {},
    "speculative": {"GATEWAY_CACHE__SPECULATIVE_MISS": "true"},
}
WORDS = [
    "account",
    "card",
    "transfer",
    "payment",
    "balance",
    "refund",
    "fee",
    "limit",
    "app",
    "pin",
    "code",
    "statement",
    "bank",
    "exchange",
    "rate",
    "top",
    "up",
    "cash",
    "withdrawal",
    "contactless",
    "freeze",
    "verify",
    "identity",
    "address",
    "phone",
]


@contextlib.contextmanager
def stub_engine(delay_ms: float) -> Iterator[stack.Endpoint]:
    with fault_engine_process(delay_s=delay_ms / 1000) as engine:
        yield stack.Endpoint(engine.url, MODEL)


def texts(seed: int) -> Iterator[str]:
    """Distinct short questions (a counter in each), far apart enough to miss."""
    rng = random.Random(seed)
    i = 0
    while True:
        i += 1
        words = " ".join(rng.sample(WORDS, 8))
        yield f"Question {i} {rng.randrange(10**9)}: why {words}?"


async def compare(
    http: aiohttp.ClientSession,
    urls: dict[str, str],
    feed: Iterator[str],
    args: argparse.Namespace,
    clients: int,
    stream: bool,
) -> dict[str, Any]:
    names = list(urls)
    replies: dict[str, list[Reply]] = {name: [] for name in names}
    walls = dict.fromkeys(names, 0.0)
    params = {"max_tokens": 8, "temperature": 0}
    for block in range(args.blocks):
        for name in names[block % len(names) :] + names[: block % len(names)]:
            chunk = [next(feed) for _ in range(args.per_block)]
            got, wall = await side(http, [urls[name]], MODEL, chunk, clients, params, stream)
            replies[name] += got
            walls[name] += wall
    out: dict[str, Any] = {"clients": clients, "stream": stream, "loadavg": loadavg()}
    measure = "ttft" if stream else "latency"
    timed = {
        name: [(r.ttft_s or r.latency_s) if stream else r.latency_s for r in rs if not r.error]
        for name, rs in replies.items()
    }
    for name, rs in replies.items():
        out[name] = {
            "x_cache": sorted({r.cache for r in rs}),
            "errors": sum(1 for r in rs if r.error),
            "requests_per_s": round(len(rs) / walls[name], 1) if walls[name] else 0.0,
            measure: summary_ms(timed[name]),
        }
        if name != "engine":
            out[name]["added"] = added(timed[name], timed["engine"])
    return out


async def hits(
    http: aiohttp.ClientSession, url: str, feed: Iterator[str], n: int, stream: bool
) -> dict[str, Any]:
    """``n`` fresh questions (stored as they miss), then each again in upper case: a semantic
    hit (the exact tier keys on the text as sent); the hits' p50/p99, one at a time."""
    params = {"max_tokens": 8, "temperature": 0}
    asked = [next(feed) for _ in range(n)]
    await side(http, [url], MODEL, asked, 4, params, False)
    await asyncio.sleep(1.0)  # the inserts land after the answers
    replies, _ = await side(http, [url], MODEL, [t.upper() for t in asked], 1, params, stream)
    timed = [(r.ttft_s or r.latency_s) if stream else r.latency_s for r in replies if r.hit]
    return {"x_cache": sorted({r.cache for r in replies}), "hits": summary_ms(timed)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"loadavg_start": loadavg(), "args": vars(args).copy()}
    report["args"].pop("json", None)
    variants = [v for v in args.variants.split(",") if v]
    with contextlib.ExitStack() as stack_:
        engine = stack_.enter_context(stub_engine(args.delay_ms))
        urls = {"engine": engine.url}
        for name in variants:
            variant, _, root = name.partition("@")
            urls[name] = stack_.enter_context(
                stack.gateway(
                    engine,
                    admin_key="bench-admin",
                    max_in_flight=args.max_in_flight,
                    settings={**VARIANTS[variant], **dict(s.split("=", 1) for s in args.set)},
                    root=Path(root) if root else stack.ROOT,
                )
            )
        connector = aiohttp.TCPConnector(limit=256)
        timeout = aiohttp.ClientTimeout(total=120)
        feed = texts(args.seed)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            warm = argparse.Namespace(**{**vars(args), "blocks": len(urls), "per_block": 5})
            for stream in (False, True):  # not measured: code paths, connections
                await compare(http, urls, feed, warm, 1, stream)
            for clients in (int(s) for s in args.streams.split(",")):
                for stream in (False, True):
                    name = f"{clients}_{'sse' if stream else 'json'}"
                    print(f"[bench_hop] {name} ...", file=sys.stderr, flush=True)
                    report[name] = await compare(http, urls, feed, args, clients, stream)
            for name in (v for v in variants if v.partition("@")[0] not in ("off", "bare")):
                for stream in (False, True):
                    key = f"hits_{'sse' if stream else 'json'}_{name}"
                    report[key] = await hits(http, urls[name], feed, args.hits, stream)
    report["loadavg_end"] = loadavg()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, default=15.0)
    parser.add_argument("--streams", default="1,8")
    parser.add_argument("--per-block", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--variants", default="off,sequential,speculative")
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--hits", type=int, default=60, help="semantic hits per gateway")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--set", action="append", default=[], help="GATEWAY_X=value for every gateway"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    emit(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    main()
