"""Benchmark one OpenAI-compatible engine (vLLM) directly: TTFT and tokens/s at given
concurrency levels, streamed chat completions.

    python load/bench_engine.py --url http://127.0.0.1:8000 --model smollm2-135m-instruct \
        --concurrency 1,32 --max-tokens 128 --out results.json

For each level C, C workers send ``--requests-per-stream`` requests each, back to back.
Prompts are the bundled held-out Banking77 queries (engine/data). ``ignore_eos`` (a vLLM
extension) makes every answer exactly ``--max-tokens`` long, so levels compare fairly.
Reported per level: output tokens/s over the whole level (aggregate), mean per-stream decode
tokens/s (after the first token), TTFT p50/p90/mean, request latency p50. Needs httpx only
(runs on the GPU machine's stock Python too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

PROMPTS = Path(__file__).resolve().parents[1] / "engine" / "data" / "heldout_banking77.jsonl"


@dataclass
class Sample:
    ttft_s: float
    latency_s: float
    tokens: int


@dataclass
class Level:
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    output_tokens: int
    tokens_per_s: float
    stream_decode_tokens_per_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_mean_s: float
    latency_p50_s: float


def load_prompts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


async def one_request(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Sample:
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"status {response.status_code}: {(await response.aread())[:200]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(
                (c.get("delta") or {}).get("content") for c in chunk.get("choices", [])
            ):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = int(chunk["usage"].get("completion_tokens") or 0)
    done = time.perf_counter()
    return Sample(ttft_s=(first or done) - started, latency_s=done - started, tokens=tokens)


async def run_level(
    url: str,
    model: str,
    prompts: list[str],
    concurrency: int,
    per_stream: int,
    max_tokens: int,
    timeout: float,
) -> Level:
    samples: list[Sample] = []
    errors = 0
    limits = httpx.Limits(
        max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4
    )

    async def worker(index: int, client: httpx.AsyncClient) -> None:
        nonlocal errors
        for n in range(per_stream):
            prompt = prompts[(index * per_stream + n) % len(prompts)]
            body = {
                "model": model,
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "ignore_eos": True,
                "messages": [{"role": "user", "content": prompt}],
            }
            try:
                samples.append(await one_request(client, url, body))
            except (httpx.HTTPError, RuntimeError) as error:
                errors += 1
                print(f"request failed: {error}", file=sys.stderr)

    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(i, client) for i in range(concurrency)))
        wall = time.perf_counter() - started
    ttfts = sorted(s.ttft_s for s in samples) or [0.0]
    decode = [
        (s.tokens - 1) / (s.latency_s - s.ttft_s)
        for s in samples
        if s.tokens > 1 and s.latency_s > s.ttft_s
    ]
    total = sum(s.tokens for s in samples)
    return Level(
        concurrency=concurrency,
        requests=len(samples),
        errors=errors,
        wall_s=round(wall, 3),
        output_tokens=total,
        tokens_per_s=round(total / wall, 1) if wall else 0.0,
        stream_decode_tokens_per_s=round(statistics.fmean(decode), 1) if decode else 0.0,
        ttft_p50_s=round(_quantile(ttfts, 0.5), 4),
        ttft_p90_s=round(_quantile(ttfts, 0.9), 4),
        ttft_mean_s=round(statistics.fmean(ttfts), 4),
        latency_p50_s=round(_quantile(sorted(s.latency_s for s in samples) or [0.0], 0.5), 3),
    )


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


async def bench(args: argparse.Namespace) -> list[Level]:
    prompts = load_prompts(args.prompts)
    if args.warmup:
        await run_level(args.url, args.model, prompts, 1, args.warmup, 8, args.timeout)
    levels = []
    for concurrency in args.concurrency:
        level = await run_level(
            args.url,
            args.model,
            prompts,
            concurrency,
            args.requests_per_stream,
            args.max_tokens,
            args.timeout,
        )
        levels.append(level)
        print(
            f"c={level.concurrency:<3} {level.tokens_per_s:>8.1f} tok/s total  "
            f"{level.stream_decode_tokens_per_s:>7.1f} tok/s/stream  "
            f"TTFT p50 {level.ttft_p50_s * 1000:.0f} ms p90 {level.ttft_p90_s * 1000:.0f} ms  "
            f"({level.requests} requests, {level.errors} errors, {level.wall_s:.1f} s)",
            flush=True,
        )
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--concurrency", default="1,32", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--requests-per-stream", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="requests before measuring")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--prompts", type=Path, default=PROMPTS)
    parser.add_argument("--label", default="", help="free text stored in the JSON")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON")
    args = parser.parse_args(argv)
    levels = asyncio.run(bench(args))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "label": args.label,
                    "url": args.url,
                    "model": args.model,
                    "max_tokens": args.max_tokens,
                    "levels": [asdict(level) for level in levels],
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if any(level.errors for level in levels) else 0


if __name__ == "__main__":
    sys.exit(main())
