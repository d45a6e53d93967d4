"""What a cache miss costs through the gateway, against the same requests straight to the
engines, at a given number of concurrent streams (one side at a time, ABBA order).

Every request asks a question asked nowhere else in the run (so the gateway's lookup misses:
exact tier, embedding, vector search, then routing and relay); the two sides get disjoint texts
from one shuffled list, so neither profits from the other in the engines' prefix caches. The
direct side spreads its requests over the engines round robin, as a balancer of its own would.
A gateway reply that was a hit after all (a near-duplicate question answered earlier in the run)
is counted and left out of the miss statistics.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

import aiohttp

from load.client import Reply, post_chat
from load.stats import quantile, summary_ms


def body(model: str, text: str, params: dict[str, Any], stream: bool) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        **params,
        "stream": stream,
    }


async def side(
    http: aiohttp.ClientSession,
    urls: Sequence[str],
    model: str,
    texts: Sequence[str],
    clients: int,
    params: dict[str, Any],
    stream: bool,
) -> tuple[list[Reply], float]:
    """Sends every text once from ``clients`` concurrent loops (request i to urls[i % n]);
    the replies and the wall time."""
    feed = iter(enumerate(texts))
    replies: list[Reply] = []

    async def client() -> None:
        for index, text in feed:
            url = urls[index % len(urls)]
            replies.append(await post_chat(http, url, body(model, text, params, stream)))

    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(client() for _ in range(clients)))
    return replies, asyncio.get_running_loop().time() - started


def added(gateway: list[float], engine: list[float]) -> dict[str, float]:
    """p50 and p99 of the gateway minus those of the engine, in ms ({} without samples)."""
    if not gateway or not engine:
        return {}
    return {
        "p50_ms": round(1000 * (quantile(gateway, 0.5) - quantile(engine, 0.5)), 2),
        "p99_ms": round(1000 * (quantile(gateway, 0.99) - quantile(engine, 0.99)), 2),
    }


async def compare(
    http: aiohttp.ClientSession,
    gateway: str,
    engines: Sequence[str],
    model: str,
    texts: Sequence[str],
    *,
    clients: int,
    per_block: int,
    blocks: int,
    params: dict[str, Any],
    stream: bool,
) -> dict[str, Any]:
    """``blocks`` blocks per side of ``per_block`` requests, order G D D G G D ...; texts are
    taken from ``texts`` in order (2 * blocks * per_block of them)."""
    need = 2 * blocks * per_block
    if len(texts) < need:
        raise ValueError(f"need {need} texts, got {len(texts)}")
    feed = iter(texts)
    replies: dict[str, list[Reply]] = {"gateway": [], "engine": []}
    walls: dict[str, float] = {"gateway": 0.0, "engine": 0.0}
    for block in range(blocks):
        order = ["gateway", "engine"] if block % 2 == 0 else ["engine", "gateway"]
        for name in order:
            chunk = [next(feed) for _ in range(per_block)]
            urls = [gateway] if name == "gateway" else list(engines)
            got, wall = await side(http, urls, model, chunk, clients, params, stream)
            replies[name] += got
            walls[name] += wall
    return summarise(replies, walls, clients, stream)


def summarise(
    replies: dict[str, list[Reply]], walls: dict[str, float], clients: int, stream: bool
) -> dict[str, Any]:
    gw_all, en = replies["gateway"], replies["engine"]
    errors = {name: [r.error for r in rs if r.error][:3] for name, rs in replies.items()}
    gw = [r for r in gw_all if r.cache == "miss" and not r.error]
    en = [r for r in en if not r.error]
    out: dict[str, Any] = {
        "clients": clients,
        "stream": stream,
        "gateway_x_cache": dict(Counter(r.cache or str(r.status) for r in gw_all)),
        "errors": {name: sum(1 for r in rs if r.error) for name, rs in replies.items()},
        "error_samples": {k: v for k, v in errors.items() if v},
        "requests_per_s": {
            name: round(len(rs) / walls[name], 1) if walls[name] else 0.0
            for name, rs in replies.items()
        },
        "completion_tokens_mean": {
            name: round(sum(r.usage.get("completion_tokens", 0) for r in rs) / len(rs), 2)
            if rs
            else 0.0
            for name, rs in (("gateway", gw), ("engine", en))
        },
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
