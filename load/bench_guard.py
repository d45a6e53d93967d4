"""The polarity and slot guard on a labelled set of opposite and paraphrase pairs.

    python -m load.bench_guard [--pairs tests/quality/data/guard_pairs.csv] [--json OUT]

For each pair the stored question goes into a fresh scope of an in-process cache (real
embedder, the gateway's lookup path) and the other question is looked up, with the guard off
and on, at several thresholds and with both hit policies. Reports how many opposite pairs and
paraphrase pairs are served each way, and what the guard costs per check and per lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.cache import CacheConfig, CacheControl, CachedAnswer, Embedder, build_cache
from gateway.cache.guard import Guard
from load.report import emit

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "quality" / "data" / "guard_pairs.csv"
THRESHOLDS = (0.95, 0.90, 0.85)


@dataclass(frozen=True, slots=True)
class Pair:
    label: str  # "opposite" or "paraphrase"
    category: str
    stored: str
    asked: str


def read_pairs(path: Path = PAIRS) -> list[Pair]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            Pair(row["label"], row["category"], row["stored"], row["asked"])
            for row in csv.DictReader(handle)
        ]


def _body(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


async def served(
    pairs: Sequence[Pair], config: CacheConfig, embedder: Embedder
) -> tuple[list[bool], list[float]]:
    """Whether each pair's stored answer is served to its other question (each pair in a
    tenant of its own), and each lookup's latency in ms."""
    hits, latencies = [], []
    async with build_cache(config, embedder=embedder) as cache:
        for n, pair in enumerate(pairs):
            stored = cache.query("chat", _body(pair.stored), f"t{n}", CacheControl())
            asked = cache.query("chat", _body(pair.asked), f"t{n}", CacheControl())
            assert stored is not None and asked is not None
            await cache.insert(stored, CachedAnswer(pair.stored, "stop", "m", 1, 1, 0.0))
            started = time.perf_counter()
            result = await cache.lookup(asked)
            latencies.append((time.perf_counter() - started) * 1000)
            hits.append(result.hit)
    return hits, latencies


async def measure(pairs: Sequence[Pair], embedder: Embedder) -> dict[str, Any]:
    table = []
    latency: dict[str, list[float]] = {"off": [], "on": []}
    for policy in ("threshold", "consensus"):
        for threshold in THRESHOLDS:
            row: dict[str, Any] = {"policy": policy, "threshold": threshold}
            for guard in (False, True):
                config = CacheConfig(policy=policy, threshold=threshold, guard=guard)
                hits, ms = await served(pairs, config, embedder)
                latency["on" if guard else "off"] += ms
                for label in ("opposite", "paraphrase"):
                    count = sum(h for h, p in zip(hits, pairs, strict=True) if p.label == label)
                    row[f"{label}_served_{'on' if guard else 'off'}"] = count
            table.append(row)
    return {
        "pairs": {
            label: sum(p.label == label for p in pairs) for label in ("opposite", "paraphrase")
        },
        "served": table,
        "lookup_ms_p50": {k: round(statistics.median(v), 3) for k, v in latency.items()},
        "guard_us": guard_cost(pairs),
    }


def guard_cost(pairs: Sequence[Pair], rounds: int = 20) -> dict[str, float]:
    """Microseconds per check: first sight of both texts (analysed), and memoised (the stored
    text's analysis is kept; a lookup checks up to 10 candidates)."""
    cold = []
    for r in range(rounds):
        guard = Guard()
        started = time.perf_counter()
        for p in pairs:
            guard.refusal(f"{p.asked} {r}", f"{p.stored} {r}")
        cold.append((time.perf_counter() - started) / len(pairs))
    guard = Guard()
    for p in pairs:
        guard.refusal(p.asked, p.stored)
    started = time.perf_counter()
    for _ in range(rounds):
        for p in pairs:
            guard.refusal(p.asked, p.stored)
    warm = (time.perf_counter() - started) / (rounds * len(pairs))
    return {
        "first_check": round(statistics.median(cold) * 1e6, 1),
        "memoised": round(warm * 1e6, 2),
    }


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=Path, default=PAIRS)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    async with Embedder(CacheConfig().embedder) as embedder:
        report = await measure(read_pairs(args.pairs), embedder)
    emit(report, args.json)


if __name__ == "__main__":
    asyncio.run(main())
