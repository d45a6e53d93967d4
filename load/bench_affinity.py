"""Prefix affinity vs round-robin on two real vLLM engines, side by side in one run.

Workload: N conversations share one long system prompt; each opens with its own long first
user turn (a customer profile) and then goes on for T turns, every turn resending the whole
history (as chat clients do). Both strategies route through the gateway's own routing code
(BackendPool + Upstream: the path a cache miss takes), streaming, and are compared on:

- TTFT p50 / p99 (request sent -> first content token), and
- vLLM's prefix-cache hit ratio over the phase: delta(vllm:prefix_cache_hits_total) /
  delta(vllm:prefix_cache_queries_total), summed over the engines' /metrics.

Each phase uses its own system prompt and profiles (a phase nonce), so one phase never
profits from what the other left in the engines' caches. Phases alternate per round; in one
round every strategy gets the same arrival times and think times.

Closed loop (``--concurrency`` requests in flight) by default; ``--arrival-rate R`` runs an open
loop instead (load/affinity_workload.py): conversations start at Poisson times, R a second,
each turn sent ``--think-s`` (mean) after the previous answer. ``--warmup-s`` leaves the first
seconds of a phase (empty caches) out of the TTFT and hit-ratio numbers.

    python load/bench_affinity.py                     # starts two engines (~1 min), runs, stops
    python load/bench_affinity.py --engine http://127.0.0.1:8001 --engine http://127.0.0.1:8002
    python load/bench_affinity.py --engine ... --arrival-rate 4 --think-s 1 --sessions 60 \
        --strategy round_robin --strategy affinity:load_bound=null --strategy affinity
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import BackendConfig, TimeoutConfig  # noqa: E402
from gateway.routing.backends import BackendPool  # noqa: E402
from gateway.routing.config import BalancerConfig, RoutingConfig  # noqa: E402
from gateway.routing.engine_metrics import parse_engine_metrics  # noqa: E402
from gateway.routing.upstream import Upstream  # noqa: E402
from load import affinity_workload as workload  # noqa: E402
from load.stats import quantile  # noqa: E402

DEFAULT_MODEL = "smollm2-135m-instruct"
STRATEGIES = ("affinity", "round_robin")


@dataclass
class Phase:
    strategy: str
    ttft_s: list[float] = field(default_factory=list)
    engines: Counter[str] = field(default_factory=Counter)
    hits: float = 0.0
    queries: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)  # the balancer's, e.g. spill
    errors: int = 0
    wall_s: float = 0.0  # the measured part (after the warm-up)

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


# -- engines ---------------------------------------------------------------------------------


@contextlib.contextmanager
def started_engines(count: int, model: str | None, base_port: int) -> Iterator[list[str]]:
    """Starts ``count`` engines with ``python -m engine serve`` (each pinned to its own core
    where there are enough), waits for them, and stops their process groups at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    cores = os.cpu_count() or 1
    try:
        for i in range(count):
            port = base_port + i
            cmd = [sys.executable, "-m", "engine", "serve", "--port", str(port)]
            cmd += ["--max-num-seqs", "8", "--cpu-kvcache-space-gib", "1"]
            if model:
                cmd += ["--model", model]
            env = dict(os.environ)
            if cores >= count:
                env["VLLM_CPU_OMP_THREADS_BIND"] = str(i % cores)
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 600
        for url, proc in zip(urls, procs, strict=True):
            while not _healthy(url):
                if proc.poll() is not None:
                    raise RuntimeError(f"engine {url} exited with {proc.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"engine {url} did not start")
                time.sleep(1)
            print(f"engine up: {url}", flush=True)
        yield urls
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


async def prefix_counters(client: httpx.AsyncClient, urls: list[str]) -> tuple[float, float]:
    hits = queries = 0.0
    for url in urls:
        load = parse_engine_metrics((await client.get(f"{url}/metrics")).text)
        hits += load.prefix_cache_hits or 0.0
        queries += load.prefix_cache_queries or 0.0
    return hits, queries


# -- one phase -------------------------------------------------------------------------------


async def run_phase(
    strategy: str,
    urls: list[str],
    model: str,
    args: argparse.Namespace,
    nonce: str,
    schedule: str | None = None,
) -> Phase:
    """One strategy's phase. ``schedule`` seeds the arrival and think times (the same for
    every strategy of a round); ``nonce`` makes the prompts the phase's own."""
    phase = Phase(strategy)
    rate = float(getattr(args, "arrival_rate", 0.0) or 0.0)
    warmup_s = float(getattr(args, "warmup_s", 0.0) or 0.0)
    starts = workload.arrivals(args.sessions, rate, schedule or nonce) if rate else None
    thinks = workload.think_times(
        args.sessions, args.turns, float(getattr(args, "think_s", 0.0) or 0.0), schedule or nonce
    )
    routing = RoutingConfig(balancer=balancer_for(strategy))
    configs = [BackendConfig(url=u, models=[model], max_in_flight=64) for u in urls]
    timeouts = TimeoutConfig(first_byte_s=300, idle_stream_s=300)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(trust_env=False, timeout=300, limits=limits) as client:
        pool = BackendPool(configs, client, probe_interval_s=5, routing=routing)
        async with pool, Upstream(pool, timeouts, routing) as upstream:
            system = workload.system_prompt(nonce, args.system_words)
            gate = contextlib.nullcontext() if starts else asyncio.Semaphore(args.concurrency)
            started = time.perf_counter()
            measured_from = started + warmup_s
            before = await prefix_counters(client, urls)

            async def mark() -> tuple[float, float]:
                await asyncio.sleep(warmup_s)
                return await prefix_counters(client, urls)

            marker = asyncio.create_task(mark()) if warmup_s else None

            async def conversation(session: int) -> None:
                if starts:
                    await asyncio.sleep(max(0.0, started + starts[session] - time.perf_counter()))
                messages: list[dict[str, str]] = [
                    {"role": "system", "content": system},
                    {
                        "role": "user",
                        "content": workload.profile(nonce, session, args.profile_words),
                    },
                ]
                for turn in range(args.turns):
                    if turn:
                        messages.append(
                            {"role": "user", "content": workload.question(session, turn)}
                        )
                        if starts:
                            await asyncio.sleep(thinks[session][turn])
                    async with gate:
                        measured = time.perf_counter() >= measured_from
                        answer = await one_request(upstream, model, messages, args, phase, measured)
                    messages.append({"role": "assistant", "content": answer})

            await asyncio.gather(*(conversation(s) for s in range(args.sessions)))
            ended = time.perf_counter()
            if marker is not None and marker.done():
                before = marker.result()
            elif marker is not None:  # a phase shorter than its warm-up: nothing measured
                marker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await marker
            phase.wall_s = max(0.0, ended - measured_from)
            after = await prefix_counters(client, urls)
    phase.hits, phase.queries = after[0] - before[0], after[1] - before[1]
    return phase


async def one_request(
    upstream: Upstream,
    model: str,
    messages: list[dict[str, str]],
    args: argparse.Namespace,
    phase: Phase,
    measured: bool = True,
) -> str:
    """One streamed request; its TTFT, engine and route count only when ``measured``."""
    body: dict[str, Any] = {
        "model": model,
        "messages": list(messages),
        "stream": True,
        "max_tokens": args.max_tokens,
        "temperature": 0,
    }
    sent = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    try:
        opened = await upstream.stream("/v1/chat/completions", body, model)
    except Exception as exc:  # counted, not fatal: the table shows it
        print(f"request failed: {exc}", file=sys.stderr)
        phase.errors += measured
        return "(no answer)"
    if measured:
        phase.engines[opened.backend.url] += 1
        phase.reasons[opened.route.reason] += 1
    try:
        async for data in opened.events():
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") or ""
                if text and first is None:
                    first = time.perf_counter()
                pieces.append(text)
    finally:
        await opened.aclose()
    if first is not None and measured:
        phase.ttft_s.append(first - sent)
    return "".join(pieces) or "(empty)"


# -- report ----------------------------------------------------------------------------------


def balancer_for(variant: str) -> BalancerConfig:
    """``affinity``, ``round_robin`` or a variant with BalancerConfig fields, e.g.
    ``affinity:prefix_blocks=16,block_chars=128`` (values read as JSON, else as text)."""
    strategy, _, rest = variant.partition(":")
    fields: dict[str, Any] = {"strategy": strategy, "scrape_metrics": False}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            fields[key.strip()] = json.loads(value)
        except ValueError:
            fields[key.strip()] = value
    return BalancerConfig.model_validate(fields)


def table(phases: list[Phase]) -> str:
    head = (
        f"{'strategy':<32} {'requests':>8} {'errors':>6} {'TTFT p50':>9} {'TTFT p99':>9} "
        f"{'prefix hit':>10} {'req/s':>6}  engine split  (spilled)"
    )
    lines = [head, "-" * len(head)]
    for p in phases:
        split = " / ".join(str(n) for _, n in sorted(p.engines.items()))
        rate = len(p.ttft_s) / p.wall_s if p.wall_s else 0.0
        lines.append(
            f"{p.strategy:<32} {len(p.ttft_s):>8} {p.errors:>6} "
            f"{quantile(p.ttft_s, 0.50):>8.3f}s {quantile(p.ttft_s, 0.99):>8.3f}s "
            f"{p.hit_ratio:>9.1%} {rate:>6.1f}  {split}  ({p.reasons.get('spill', 0)})"
        )
    return "\n".join(lines)


def phase_result(p: Phase) -> dict[str, Any]:
    """One strategy's results, as the JSON reports hold them."""
    return {
        "strategy": p.strategy,
        "requests": len(p.ttft_s),
        "errors": p.errors,
        "ttft_p50_s": quantile(p.ttft_s, 0.50),
        "ttft_p99_s": quantile(p.ttft_s, 0.99),
        "prefix_cache_hit_ratio": p.hit_ratio,
        "engines": dict(p.engines),
        "route_reasons": dict(p.reasons),
        "wall_s": p.wall_s,
        "requests_per_s": len(p.ttft_s) / p.wall_s if p.wall_s else 0.0,
    }


def merge(phases: list[Phase], order: tuple[str, ...] = STRATEGIES) -> list[Phase]:
    merged: dict[str, Phase] = {}
    for p in phases:
        m = merged.setdefault(p.strategy, Phase(p.strategy))
        m.ttft_s += p.ttft_s
        m.engines += p.engines
        m.reasons += p.reasons
        m.hits += p.hits
        m.queries += p.queries
        m.errors += p.errors
        m.wall_s += p.wall_s
    return [merged[s] for s in order if s in merged]


async def bench(urls: list[str], args: argparse.Namespace) -> list[Phase]:
    model = args.served_model or DEFAULT_MODEL
    strategies = tuple(getattr(args, "strategy", None) or STRATEGIES)
    phases: list[Phase] = []
    for rnd in range(args.rounds):
        order = strategies if rnd % 2 == 0 else tuple(reversed(strategies))
        for strategy in order:
            nonce = f"{args.seed}-{rnd}-{strategy}"
            print(f"round {rnd + 1}/{args.rounds}: {strategy} ...", flush=True)
            schedule = f"{args.seed}-{rnd}"
            phases.append(await run_phase(strategy, urls, model, args, nonce, schedule))
    return merge(phases, strategies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", action="append", default=[], help="running engine URL")
    parser.add_argument("--model", help="model folder for started engines (default: bundled)")
    parser.add_argument("--served-model", help=f"model name (default: {DEFAULT_MODEL})")
    parser.add_argument("--base-port", type=int, default=8311)
    parser.add_argument("--sessions", type=int, default=8, help="conversations per phase")
    parser.add_argument("--turns", type=int, default=3, help="requests per conversation")
    parser.add_argument("--concurrency", type=int, default=4, help="closed loop: in flight")
    parser.add_argument(
        "--arrival-rate",
        type=float,
        default=0.0,
        help="open loop: conversations started per second (Poisson); 0: closed loop",
    )
    parser.add_argument("--think-s", type=float, default=1.0, help="open loop: mean think time")
    parser.add_argument("--warmup-s", type=float, default=0.0, help="left out of the numbers")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--system-words", type=int, default=250)
    parser.add_argument("--profile-words", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=1, help="phase pairs, order alternating")
    parser.add_argument(
        "--strategy",
        action="append",
        help="strategy or variant to compare, repeatable (default: affinity, round_robin); "
        "e.g. affinity:prefix_blocks=16",
    )
    parser.add_argument("--seed", default=str(int(time.time())))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    if args.engine:
        phases = asyncio.run(bench(args.engine, args))
    else:
        with started_engines(2, args.model, args.base_port) as urls:
            phases = asyncio.run(bench(urls, args))
    print()
    load = (
        f"open loop {args.arrival_rate}/s, think {args.think_s} s"
        if args.arrival_rate
        else f"concurrency {args.concurrency}"
    )
    print(
        f"{args.sessions} conversations x {args.turns} turns, {load}, max_tokens "
        f"{args.max_tokens}, {args.rounds} round(s), {len(args.engine) or 2} engines"
    )
    print(table(phases))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: v for k, v in vars(args).items() if k != "json"},
                    "results": [phase_result(p) for p in phases],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
