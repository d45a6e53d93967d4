"""Cache quality on labelled queries (``python -m gateway cache eval``).

A FRESH in-process cache with the real embedder is seeded from one labelled CSV (Banking77
format ``text,category``; each text is stored as a one-message chat whose answer is its
category), then every text of a second CSV is looked up through the path the gateway uses for
a request (``SemanticCache.query`` + ``lookup``: exact tier, embedder, store search, hit
policy). A hit is false when the category it serves differs from the query's.

- hit rate: hits / queries; false-hit rate: false hits / queries (both fractions);
- latency: wall time of each lookup, one at a time (embedding included).

With ``insert_misses`` each miss is then stored with an answer of its own, ``<category>#<n>``
(as a gateway stores an engine's answer, which no other entry shares), so later queries meet a
cache that mixes seeded and generated answers; a hit is judged by the part before the last
``#``.
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gateway.cache.config import CacheConfig
from gateway.cache.control import CacheControl
from gateway.cache.embedder import Embedder
from gateway.cache.entry import CachedAnswer
from gateway.cache.factory import build_cache
from gateway.cache.policy import normalize_text
from gateway.cache.service import SemanticCache

EVAL_MODEL = "eval-model"
EVAL_TENANT = "eval"


@dataclass(frozen=True, slots=True)
class Labelled:
    text: str
    category: str


def read_labelled(path: Path) -> list[Labelled]:
    """Rows of a ``text,category`` CSV with a header; texts normalised as the cache keys them,
    rows with an empty text or category skipped."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"text", "category"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a header with the columns text,category")
        rows = [
            Labelled(normalize_text(row["text"] or ""), (row["category"] or "").strip())
            for row in reader
        ]
    return [row for row in rows if row.text and row.category]


def chat_body(text: str) -> dict[str, Any]:
    return {"model": EVAL_MODEL, "messages": [{"role": "user", "content": text}]}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One query's lookup: ``served`` is the category of the answer served (None: no hit)."""

    category: str
    status: str
    served: str | None
    similarity: float | None
    latency_s: float
    guard: str | None = None  # why the guard refused the entry the policy would have served

    @property
    def hit(self) -> bool:
        return self.served is not None

    @property
    def false_hit(self) -> bool:
        return self.served is not None and self.served != self.category


@dataclass(slots=True)
class EvalResult:
    policy: str
    guard: bool
    threshold: float
    seeds: int
    seed_categories: frozenset[str]
    seed_s: float
    insert_misses: bool = False
    operating_points: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Rates as fractions; ``hit_rate`` and ``false_hit_rate`` first."""
        n = len(self.outcomes)
        hits = sum(o.hit for o in self.outcomes)
        false_hits = sum(o.false_hit for o in self.outcomes)
        latencies = sorted(o.latency_s * 1000 for o in self.outcomes)
        answerable = sum(o.category in self.seed_categories for o in self.outcomes)
        return {
            "hit_rate": hits / n if n else 0.0,
            "false_hit_rate": false_hits / n if n else 0.0,
            "queries": n,
            "hits": hits,
            "false_hits": false_hits,
            "exact_hits": sum(o.status == "hit-exact" for o in self.outcomes),
            "semantic_hits": sum(o.status == "hit-semantic" for o in self.outcomes),
            "answerable_rate": answerable / n if n else 0.0,
            "seeds": self.seeds,
            "policy": self.policy,
            "guard": self.guard,
            "guard_refusals": dict(Counter(o.guard for o in self.outcomes if o.guard)),
            "threshold": self.threshold,
            "insert_misses": self.insert_misses,
            "operating_points": self.operating_points,
            "latency_ms": {
                "p50": _quantile(latencies, 0.50),
                "p90": _quantile(latencies, 0.90),
                "p99": _quantile(latencies, 0.99),
                "mean": round(statistics.fmean(latencies), 3) if latencies else 0.0,
            },
            "seed_s": round(self.seed_s, 2),
        }


def _quantile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return 0.0
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def eval_config(config: CacheConfig, seeds: int, redis_url: str | None = None) -> CacheConfig:
    """The config with a store large enough for every seed, swept never: in process, or with
    ``redis_url`` that Redis under a key prefix of its own."""
    room = max(seeds + 1, config.max_entries_per_scope)
    prefix = f"eval{uuid.uuid4().hex[:12]}" if redis_url else config.key_prefix
    return config.model_copy(
        update={
            "enabled": True,
            "redis_url": redis_url,
            "key_prefix": prefix,
            "max_entries_per_scope": room,
            "memory_max_entries": max(room, config.memory_max_entries),
            "sweep_interval_s": 86_400.0,
        }
    )


async def seed_cache(
    cache: SemanticCache, seed: Sequence[Labelled], on_progress: Callable[[int], None] | None
) -> int:
    entries = [{**chat_body(row.text), "answer": row.category} for row in seed]
    for entry in entries:
        del entry["model"]
    return await cache.warm(EVAL_MODEL, entries, EVAL_TENANT, on_progress=on_progress)


async def run_queries(
    cache: SemanticCache,
    queries: Sequence[Labelled],
    on_progress: Callable[[int], None] | None = None,
    *,
    insert_misses: bool = False,
) -> list[Outcome]:
    """Looks every query up, one at a time, exactly as a request would be."""
    outcomes = []
    control = CacheControl()
    for number, row in enumerate(queries):
        q = cache.query("chat", chat_body(row.text), EVAL_TENANT, control)
        if q is None:
            raise ValueError(f"not a cacheable query: {row.text!r}")
        started = time.perf_counter()
        result = await cache.lookup(q)
        latency = time.perf_counter() - started
        served = None
        if result.hit and result.answer is not None:
            served = result.answer.text
            if insert_misses:  # a generated answer: <category>#<n>
                served = served.rpartition("#")[0] or served
        elif insert_misses and result.status == "miss":
            answer = CachedAnswer(f"{row.category}#{number}", "stop", EVAL_MODEL, 0, 0, 0.0)
            await cache.insert(q, answer)
        outcomes.append(
            Outcome(row.category, result.status, served, result.similarity, latency, result.guard)
        )
        if on_progress is not None:
            on_progress(1)
    return outcomes


async def evaluate(
    seed: Sequence[Labelled],
    queries: Sequence[Labelled],
    config: CacheConfig,
    *,
    embedder: Embedder | None = None,
    progress: bool = False,
    insert_misses: bool = False,
    redis_url: str | None = None,
) -> EvalResult:
    """Seeds a fresh in-process cache (or one in ``redis_url``, flushed after) and looks every
    query up. A given (started) embedder is shared and left running; otherwise the config's
    embedder is loaded and closed."""
    config = eval_config(config, len(seed), redis_url)
    async with build_cache(config, embedder=embedder) as cache:
        started = time.perf_counter()
        bar = tqdm(
            total=len(seed), desc="seeding", unit="entry", file=sys.stderr, disable=not progress
        )
        with bar:
            stored = await seed_cache(cache, seed, bar.update)
        result = EvalResult(
            policy=cache.policy.name,
            guard=cache.guard is not None,
            threshold=config.threshold,
            seeds=stored,
            seed_categories=frozenset(row.category for row in seed),
            seed_s=time.perf_counter() - started,
            insert_misses=insert_misses,
            operating_points=[p.as_dict() for p in cache.operating_points.values()],
        )
        bar = tqdm(
            total=len(queries), desc="querying", unit="query", file=sys.stderr, disable=not progress
        )
        with bar:
            result.outcomes = await run_queries(
                cache, queries, bar.update, insert_misses=insert_misses
            )
        if redis_url:
            await cache.flush()
    return result


def describe(summary: dict[str, Any]) -> list[str]:
    """Human-readable lines of a summary."""
    latency = summary["latency_ms"]
    return [
        f"policy {summary['policy']} (threshold {summary['threshold']}, guard "
        f"{'on' if summary['guard'] else 'off'}): "
        f"{summary['seeds']} seeds, {summary['queries']} queries"
        + (", misses stored as they come" if summary["insert_misses"] else ""),
        f"hit rate        {100 * summary['hit_rate']:6.2f} %  ({summary['hits']} hits: "
        f"{summary['exact_hits']} exact, {summary['semantic_hits']} semantic; "
        f"{100 * summary['answerable_rate']:.1f} % of queries have their category seeded)",
        f"false-hit rate  {100 * summary['false_hit_rate']:6.2f} %  "
        f"({summary['false_hits']} hits with another category)",
        f"guard refusals  {sum(summary['guard_refusals'].values())} "
        f"{summary['guard_refusals'] or ''}",
        *(
            f"calibrated      threshold {p['threshold']}, cut {p['cut']}: estimated false hits "
            f"{100 * p['false_hit_rate']:.2f} % (upper {100 * p['false_hit_upper']:.2f} %, target "
            f"{100 * p['target']:.2f} %) at {100 * p['hit_rate']:.1f} % hits on {p['probes']} seeds"
            for p in summary["operating_points"]
        ),
        f"lookup latency  p50 {latency['p50']} ms, p90 {latency['p90']} ms, "
        f"p99 {latency['p99']} ms (one at a time)",
    ]
