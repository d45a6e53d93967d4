"""What the gateway adds on a cache miss, against the same kind of request straight to the engine,
with and without speculative misses, side by side in one run.

    python -m load.bench_overhead [--engine-url http://127.0.0.1:PORT] [--rounds 40] [--json F]

One real vLLM engine and two gateways in front of it (``python -m gateway serve``, in-process
store, ``max_in_flight`` = the engine's ``max_num_seqs``): ``speculative``
(``cache.speculative_miss`` on: once the exact tier missed, the engine request starts beside the
semantic tier when the engine has headroom) and ``sequential`` (off, the default: the semantic
tier first). Both are
warmed with the Banking77 seed split in the namespace ``faq``.

Misses: requests go in rounds of three, one straight to the engine and one through each gateway,
in rotating order, one at a time. Every request asks a different Banking77 question (so every
gateway request is a real miss: exact tier, embedding, vector search, routing, relay), with
``max_tokens`` 8, temperature 0 and no stop sequence. JSON answers (latency) and SSE streams
(time to first token). Reported per side: p50/p99, and the added time (gateway minus engine:
p50, p99 and the median of the per-round differences). Only gateway replies with
``x-cache: miss`` count (a Banking77 question may be a near-duplicate of an earlier one).

Hits: semantic hits in ``faq`` (tune-split paraphrases with cosine >= 0.96 to a seed, each sent
once in a new letter case), through both gateways, JSON latency and SSE time to first token.
Without ``only-if-cached``: a speculative gateway starts (and then withdraws) the engine request.

Both at 1 client with the engine idle (``free``) and with the engine busy (``busy``: ``--busy``
background streams, ``no-cache``, long answers, half through each gateway so that both relay
the same load; by default a little more than the engine runs at once, so vLLM queues and each
gateway has over half its max_in_flight in flight: the speculative one has no headroom).

Wasted engine work: mixes of 20 % and 40 % semantic hits (the rest fresh misses), 1 client,
through each gateway; the engine's own counters (vLLM /metrics prompt and generation tokens)
minus the tokens of the answers served = the tokens spent on withdrawn requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from load import stack
from load.banking77 import DEFAULT_CSV, read_labelled, split
from load.bench_gateway import semantic_texts
from load.client import Reply, post_chat
from load.report import emit
from load.stats import loadavg, quantile, summary_ms
from load.workload import canonical_answer

ADMIN = "bench-admin"
MAX_IN_FLIGHT = stack.ENGINE_LIMITS["max_num_seqs"]
SIDES = ("engine", "speculative", "sequential")
FAQ = {"namespace": "faq"}
NO_CACHE = {"cache-control": "no-cache, no-store"}


def added(gateway: Sequence[float], engine: Sequence[float]) -> dict[str, float]:
    pairs = [g - e for g, e in zip(gateway, engine, strict=False)]
    return {
        "p50_ms": round(1000 * (quantile(gateway, 0.5) - quantile(engine, 0.5)), 2),
        "p99_ms": round(1000 * (quantile(gateway, 0.99) - quantile(engine, 0.99)), 2),
        "median_of_round_differences_ms": round(1000 * statistics.median(pairs), 2),
    }


def body(model: str, text: str, stream: bool, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": stream,
        **extra,
    }


def timing(reply: Reply, stream: bool) -> float:
    return (reply.ttft_s or reply.latency_s) if stream else reply.latency_s


async def misses(
    http: aiohttp.ClientSession,
    urls: dict[str, str],
    model: str,
    texts: Iterator[str],
    rounds: int,
    stream: bool,
) -> dict[str, Any]:
    """``rounds`` rounds of one request per side, rotating the order; a fresh text each."""
    replies: dict[str, list[Reply]] = {side: [] for side in SIDES}
    for i in range(rounds):
        order = SIDES[i % 3 :] + SIDES[: i % 3]
        for side in order:
            reply = await post_chat(http, urls[side], body(model, next(texts), stream))
            if reply.error:
                raise RuntimeError(f"{side}: {reply.error}")
            replies[side].append(reply)
    # Rounds where a gateway's question was a near-duplicate (a hit) are left out for both.
    kept = [
        i
        for i in range(rounds)
        if all(replies[s][i].cache == "miss" for s in ("speculative", "sequential"))
    ]
    times = {s: [timing(replies[s][i], stream) for i in kept] for s in SIDES}
    out: dict[str, Any] = {"rounds": rounds, "kept": len(kept)}
    for side in SIDES:
        out[side] = summary_ms(times[side])
    for side in ("speculative", "sequential"):
        out[f"added_{side}"] = added(times[side], times["engine"])
    return out


async def hits(
    http: aiohttp.ClientSession,
    url: str,
    model: str,
    texts: Iterator[str],
    n: int,
    stream: bool,
) -> dict[str, Any]:
    replies = [
        await post_chat(http, url, body(model, next(texts), stream, cache=FAQ)) for _ in range(n)
    ]
    served = [r for r in replies if r.cache == "hit-semantic"]
    return {
        "sent": n,
        "x_cache": sorted({r.cache for r in replies}),
        **summary_ms([timing(r, stream) for r in served]),
    }


@contextlib.asynccontextmanager
async def busy(
    http: aiohttp.ClientSession, url: str, model: str, streams: int
) -> AsyncIterator[None]:
    """``streams`` loops of long streamed answers through ``url`` (no cache), until exit."""
    stop = asyncio.Event()

    async def loop(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            text = f"Write a long story about a bank customer, number {i}-{n}."
            await post_chat(http, url, body(model, text, True, max_tokens=96), NO_CACHE)

    tasks = [asyncio.create_task(loop(i)) for i in range(streams)]
    await asyncio.sleep(3.0)  # every stream admitted and decoding
    try:
        yield
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def metric_values(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Counters of a /metrics page, summed over labels (``name{label="v"}`` kept too)."""
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
            for key, value in sample.labels.items():
                if key in ("outcome", "finished_reason"):
                    name = f'{sample.name}{{{key}="{value}"}}'
                    values[name] = values.get(name, 0.0) + sample.value
    return values


async def waste(
    http: aiohttp.ClientSession,
    gateway: str,
    engine: str,
    model: str,
    hit_texts: Iterator[str],
    miss_texts: Iterator[str],
    n: int,
    hit_ratio: float,
) -> dict[str, Any]:
    """A mix of semantic hits and fresh misses, 1 client, JSON: the engine's token counters
    against the tokens of the answers served (the difference went to withdrawn requests)."""
    every = round(1 / hit_ratio)
    engine_before = await metric_values(http, engine)
    gateway_before = await metric_values(http, gateway)
    replies: list[Reply] = []
    for i in range(n):
        if i % every == 0:
            text, extra = next(hit_texts), {"cache": FAQ}
        else:
            text, extra = next(miss_texts), {}
        replies.append(await post_chat(http, gateway, body(model, text, False, **extra)))
    await asyncio.sleep(2.0)  # vLLM counts an aborted request's tokens when it lets it go
    engine_after = await metric_values(http, engine)
    gateway_after = await metric_values(http, gateway)

    def delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    answered = [r for r in replies if r.cache == "miss"]
    served_prompt = sum(int(r.usage.get("prompt_tokens") or 0) for r in answered)
    served_completion = sum(int(r.usage.get("completion_tokens") or 0) for r in answered)
    engine_prompt = delta(engine_before, engine_after, "vllm:prompt_tokens_total")
    engine_generated = delta(engine_before, engine_after, "vllm:generation_tokens_total")
    spec = "gateway_speculative_requests_total"
    hit_latency = [r.latency_s for r in replies if r.cache == "hit-semantic"]
    return {
        "requests": n,
        "x_cache": dict(Counter(r.cache for r in replies)),
        "hit_latency": summary_ms(hit_latency),
        "miss_latency": summary_ms([r.latency_s for r in answered]),
        "speculative_used": delta(gateway_before, gateway_after, f'{spec}{{outcome="used"}}'),
        "speculative_aborted": delta(gateway_before, gateway_after, f'{spec}{{outcome="aborted"}}'),
        "aborted_after_reaching_engine": delta(
            gateway_before, gateway_after, "gateway_speculative_aborted_sent_requests_total"
        ),
        "engine_prompt_tokens": engine_prompt,
        "served_prompt_tokens": served_prompt,
        "wasted_prompt_tokens": engine_prompt - served_prompt,
        "wasted_prompt_share": round((engine_prompt - served_prompt) / max(1, served_prompt), 4),
        "engine_generation_tokens": engine_generated,
        "served_completion_tokens": served_completion,
        "wasted_generation_tokens": engine_generated - served_completion,
    }


async def warm(http: aiohttp.ClientSession, url: str, model: str, seed: Sequence[Any]) -> None:
    entries = [
        {"messages": [{"role": "user", "content": r.text}], "answer": canonical_answer(r.category)}
        for r in seed
    ]
    params = {"max_tokens": 8, "temperature": 0}  # the scope of the hit requests
    payload = {"model": model, "entries": entries, "namespace": "faq", "params": params}
    async with http.post(
        f"{url}/admin/cache/warm", json=payload, headers={"authorization": f"Bearer {ADMIN}"}
    ) as resp:
        assert resp.status == 200, await resp.text()


async def phase(
    http: aiohttp.ClientSession,
    urls: dict[str, str],
    model: str,
    miss_texts: Iterator[str],
    hit_texts: dict[str, Iterator[str]],
    args: argparse.Namespace,
    rounds: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {"loadavg": loadavg()}
    for stream in (False, True):
        name = "ttft" if stream else "json"
        print(f"[bench]   misses, {name} ...", file=sys.stderr, flush=True)
        out[f"miss_{name}"] = await misses(http, urls, model, miss_texts, rounds, stream)
        for side in ("speculative", "sequential"):
            out[f"hit_{name}_{side}"] = await hits(
                http, urls[side], model, hit_texts[side], args.hits, stream
            )
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = split(read_labelled(args.csv))
    report_texts = [row.text for row in parts.report]
    random.Random(17).shuffle(report_texts)  # consecutive questions from different intents
    semantic = semantic_texts(parts.seed, parts.tune)
    print(f"[bench] {len(semantic)} semantic-hit texts", file=sys.stderr, flush=True)
    report: dict[str, Any] = {"loadavg_start": loadavg(), "busy_streams": args.busy}
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=64)

    def gateway(
        engine: stack.Endpoint, speculative: bool
    ) -> contextlib.AbstractContextManager[str]:
        flag = {"GATEWAY_CACHE__SPECULATIVE_MISS": str(speculative).lower()}
        return stack.gateway(engine, admin_key=ADMIN, max_in_flight=MAX_IN_FLIGHT, settings=flag)

    with (
        stack.engine(url=args.engine_url) as engine,
        gateway(engine, True) as on,
        gateway(engine, False) as seq,
    ):
        urls = {"engine": engine.url, "speculative": on, "sequential": seq}
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            for url in (on, seq):
                await warm(http, url, engine.model, parts.seed)
            miss_texts = iter(report_texts)
            hit_texts = {"speculative": iter(semantic), "sequential": iter(semantic)}
            # Warm-up (not measured): code paths, connections, the engine's prefix cache.
            await misses(http, urls, engine.model, miss_texts, 3, False)
            await misses(http, urls, engine.model, miss_texts, 3, True)
            print("[bench] engine free, 1 client ...", file=sys.stderr, flush=True)
            report["free"] = await phase(
                http, urls, engine.model, miss_texts, hit_texts, args, args.rounds
            )
            print("[bench] wasted engine work ...", file=sys.stderr, flush=True)
            for ratio in (0.2, 0.4):
                for side in ("speculative", "sequential"):
                    report[f"waste_{int(ratio * 100)}pct_{side}"] = await waste(
                        http,
                        urls[side],
                        engine.url,
                        engine.model,
                        hit_texts[side],
                        miss_texts,
                        args.mix,
                        ratio,
                    )
            print(f"[bench] engine busy ({args.busy} streams) ...", file=sys.stderr, flush=True)
            half = args.busy // 2
            async with busy(http, on, engine.model, half), busy(http, seq, engine.model, half):
                report["busy"] = await phase(
                    http, urls, engine.model, miss_texts, hit_texts, args, args.busy_rounds
                )
                report["busy"]["speculative_gateway"] = await metric_values(http, on)
            report["busy"]["speculative_gateway"] = {
                k: v
                for k, v in report["busy"]["speculative_gateway"].items()
                if k.startswith("gateway_speculative")
            }
    report["loadavg_end"] = loadavg()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m load.bench_overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engine-url", help="use this running engine instead of starting one")
    parser.add_argument("--rounds", type=int, default=40, help="miss rounds per mode, engine free")
    parser.add_argument("--busy-rounds", type=int, default=20, help="miss rounds, engine busy")
    parser.add_argument("--hits", type=int, default=40, help="semantic hits per gateway and mode")
    parser.add_argument("--mix", type=int, default=50, help="requests per wasted-work mix")
    parser.add_argument(
        "--busy", type=int, default=MAX_IN_FLIGHT + 2, help="background streams when busy, in all"
    )
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    emit(report, args.json)


if __name__ == "__main__":
    main()
