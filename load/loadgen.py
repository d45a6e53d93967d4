"""Load generator: a Banking77 customer-support chatbot against a running gateway (loopback).

    python -m load.loadgen --url http://127.0.0.1:8080 --model smollm2-135m-instruct \\
        --mode closed --users 4 --requests 200 --duration 120 \\
        --admin-key "$ADMIN" --flush --warm-per-intent 8 --out load/results/run1

Open loop (``--mode open --rate R``): sessions arrive as a Poisson process at R per second,
whatever the gateway's speed. Closed loop (``--mode closed --users N``): N users, each starting
a new session when the last one ends. Both stop at ``--requests`` requests or ``--duration``
seconds, whichever comes first (requests in flight at the deadline get ``--timeout`` more).

False hits: every answer is attributed to the intents that produced it. Warm-up answers name
their intent (one canonical answer per intent); an answer an engine gave on a miss is recorded
with the intent of the query that caused it. After the run, each hit is judged by the answer it
served: ``false`` if no query of its intent produced that text, ``ambiguous`` if queries of
several intents did (engine answers that happen to be identical), ``unknown`` if the text was
produced before this run (use --flush). Writes ``report.json`` and ``report.png`` to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from tqdm import tqdm

from gateway.cache.evaluate import read_labelled
from load.banking77 import DEFAULT_CSV
from load.client import Reply, post_chat, require_loopback
from load.stats import loadavg, summary_ms
from load.workload import ChatbotWorkload, Session, Turn, canonical_answer


@dataclass(slots=True)
class Record:
    start_s: float
    session: int
    turn: int
    intent: str
    cache: str  # x-cache, or "error"
    latency_s: float
    ttft_s: float | None
    tokens: int
    text: str
    error: str | None = None
    verdict: str | None = None  # hits only: ok | false | ambiguous | unknown


class AnswerBook:
    """Which intents produced which answer text."""

    def __init__(self) -> None:
        self._intents: dict[str, set[str]] = defaultdict(set)

    def add(self, text: str, intent: str) -> None:
        self._intents[text].add(intent)

    def judge(self, text: str, intent: str) -> str:
        intents = self._intents.get(text)
        if not intents:
            return "unknown"
        if intent not in intents:
            return "false"
        return "ok" if len(intents) == 1 else "ambiguous"


def params(args: argparse.Namespace) -> dict[str, Any]:
    """The generation parameters of every request (part of the cache scope: warm-up entries
    carry the same ones, or they would never be served)."""
    found: dict[str, Any] = {"max_tokens": args.max_tokens, "temperature": 0}
    if args.stop:
        found["stop"] = args.stop
    return found


class LoadRun:
    def __init__(self, args: argparse.Namespace, workload: ChatbotWorkload) -> None:
        self.args, self.workload = args, workload
        self.records: list[Record] = []
        self.book = AnswerBook()
        self.rng = random.Random(args.seed + 1)
        self.issued = 0
        self.t0 = 0.0
        self.deadline = 0.0
        self.headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        self.bar = tqdm(total=args.requests, unit="req", file=sys.stderr, desc=args.mode)

    def _take(self) -> bool:
        """One more request, if the budget allows."""
        if self.issued >= self.args.requests or time.perf_counter() >= self.deadline:
            return False
        self.issued += 1
        return True

    def _body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.args.model,
            "messages": messages,
            **params(self.args),
            "stream": self.args.stream,
        }
        if self.args.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def session(self, http: aiohttp.ClientSession, session: Session) -> None:
        history: list[tuple[Turn, str]] = []
        for number, turn in enumerate(session.turns, 1):
            if not self._take():
                return
            start = time.perf_counter() - self.t0
            body = self._body(self.workload.messages(history, turn))
            reply = await post_chat(http, self.args.url, body, self.headers)
            self._record(session, number, turn, start, reply)
            if reply.error:
                return
            history.append((turn, reply.text))
            if self.args.think > 0:
                await asyncio.sleep(self.rng.expovariate(1 / self.args.think))

    def _record(self, session: Session, number: int, turn: Turn, start: float, r: Reply) -> None:
        cache = "error" if r.error else (r.cache or "none")
        if not r.error and not r.hit:
            self.book.add(r.text, turn.intent)
        self.records.append(
            Record(start, session.number, number, turn.intent, cache, r.latency_s, r.ttft_s,
                   r.tokens, r.text, r.error)
        )  # fmt: skip
        self.bar.update(1)

    async def run(self, http: aiohttp.ClientSession) -> float:
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + self.args.duration
        tasks: set[asyncio.Task[None]] = set()
        if self.args.mode == "open":
            while self.issued < self.args.requests and time.perf_counter() < self.deadline:
                task = asyncio.create_task(self.session(http, self.workload.session()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.sleep(self.rng.expovariate(self.args.rate))
        else:

            async def user() -> None:
                while self.issued < self.args.requests and time.perf_counter() < self.deadline:
                    await self.session(http, self.workload.session())

            tasks = {asyncio.create_task(user()) for _ in range(self.args.users)}
        left = max(0.0, self.deadline - time.perf_counter()) + self.args.timeout
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=left)
            for task in late:
                task.cancel()
        self.bar.close()
        return time.perf_counter() - self.t0

    def judge(self) -> None:
        for record in self.records:
            if record.cache.startswith("hit"):
                record.verdict = self.book.judge(record.text, record.intent)


def summarize(run: LoadRun, wall_s: float, extra: dict[str, Any]) -> dict[str, Any]:
    records = run.records
    n = len(records)
    hits = [r for r in records if r.cache.startswith("hit")]
    misses = [r for r in records if r.cache in ("miss", "bypass", "none")]
    verdicts = {
        v: sum(r.verdict == v for r in hits) for v in ("ok", "false", "ambiguous", "unknown")
    }
    saved = sum(r.tokens for r in hits)
    spent = sum(r.tokens for r in misses)
    by_turn: dict[str, dict[str, Any]] = {}
    for label, chosen in (("turn 1", [r for r in records if r.turn == 1]),
                          ("later turns", [r for r in records if r.turn > 1])):  # fmt: skip
        if chosen:
            turn_hits = sum(r.cache.startswith("hit") for r in chosen)
            by_turn[label] = {"requests": len(chosen), "hit_ratio": turn_hits / len(chosen)}
    return {
        **extra,
        "wall_s": round(wall_s, 2),
        "requests": n,
        "errors": sum(r.cache == "error" for r in records),
        "throughput_rps": round(n / wall_s, 2) if wall_s else 0.0,
        "hit_ratio": len(hits) / n if n else 0.0,
        "exact_hit_ratio": sum(r.cache == "hit-exact" for r in records) / n if n else 0.0,
        "semantic_hit_ratio": sum(r.cache == "hit-semantic" for r in records) / n if n else 0.0,
        "false_hits": verdicts["false"],
        "false_hit_ratio": verdicts["false"] / n if n else 0.0,
        "false_share_of_hits": verdicts["false"] / len(hits) if hits else 0.0,
        "hit_verdicts": verdicts,
        "latency": {
            "hit": summary_ms([r.latency_s for r in hits]),
            "miss": summary_ms([r.latency_s for r in misses]),
            "all": summary_ms([r.latency_s for r in records if r.cache != "error"]),
        },
        "ttft": {
            "hit": summary_ms([r.ttft_s for r in hits if r.ttft_s is not None]),
            "miss": summary_ms([r.ttft_s for r in misses if r.ttft_s is not None]),
        },
        "engine_tokens_saved": saved,
        "engine_tokens_used": spent,
        "by_turn": by_turn,
    }


async def admin(http: aiohttp.ClientSession, args: argparse.Namespace, method: str, path: str,
                body: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    headers = {"authorization": f"Bearer {args.admin_key}"}
    async with http.request(method, f"{args.url}{path}", json=body, headers=headers) as resp:
        if resp.status != 200:
            raise SystemExit(f"{method} {path}: HTTP {resp.status}: {await resp.text()}")
        data: dict[str, Any] = await resp.json()
        return data


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    workload = ChatbotWorkload(
        read_labelled(args.csv),
        seed=args.seed,
        zipf_s=args.zipf,
        mean_turns=args.mean_turns,
        repeat=args.repeat,
        warm_per_intent=args.warm_per_intent,
    )
    run = LoadRun(args, workload)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    extra: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items() if k != "admin_key" and k != "api_key"}
    }
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        if args.admin_key and args.flush:
            extra["flushed"] = (await admin(http, args, "DELETE", "/admin/cache"))["deleted"]
        if args.admin_key and args.warm_per_intent:
            entries = workload.warm_entries()
            body = {"model": args.model, "entries": entries, "tenant": args.tenant}
            body["params"] = params(args)
            extra["warmed"] = (await admin(http, args, "POST", "/admin/cache/warm", body))["stored"]
            for intent in workload.intents:
                run.book.add(canonical_answer(intent), intent)
        extra["loadavg_start"] = loadavg()
        wall = await run.run(http)
        extra["loadavg_end"] = loadavg()
        if args.admin_key:
            extra["gateway_cache_stats"] = await admin(http, args, "GET", "/admin/cache/stats")
    run.judge()
    report = summarize(run, wall, extra)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        with (args.out / "records.jsonl").open("w") as handle:
            for record in run.records:
                handle.write(json.dumps(asdict(record)) + "\n")
        from load.plots import plot_load_run

        plot_load_run(run.records, report, args.out / "report.png")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m load.loadgen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--url", default="http://127.0.0.1:8080", help="gateway (loopback only)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--api-key", help="client key, when the gateway has keys configured")
    p.add_argument("--admin-key", help="admin key: --flush, --warm-per-intent, cache stats")
    p.add_argument("--tenant", default="default", help="tenant of the API key (for warm-up)")
    p.add_argument("--mode", choices=("open", "closed"), default="closed")
    p.add_argument("--rate", type=float, default=2.0, help="open loop: sessions per second")
    p.add_argument("--users", type=int, default=4, help="closed loop: concurrent users")
    p.add_argument("--requests", type=int, default=200, help="stop after this many requests")
    p.add_argument("--duration", type=float, default=120.0, help="... or after this many s")
    p.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--stop", action="append", default=None,
                   help="stop sequence (repeatable; default '.' and newline: only answers that "
                   "finish with 'stop' are cached)")  # fmt: skip
    p.add_argument("--no-stream", dest="stream", action="store_false", help="JSON answers")
    p.add_argument("--think", type=float, default=0.0, help="mean think time between turns, s")
    p.add_argument("--mean-turns", type=float, default=1.3, help="turns per session (mean)")
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of intent popularity")
    p.add_argument("--repeat", type=float, default=0.2,
                   help="share of questions asked in one of 3 common phrasings per intent "
                   "(suggested questions: exact repeats)")  # fmt: skip
    p.add_argument("--warm-per-intent", type=int, default=0,
                   help="texts per intent warmed (canonical answers) before the run")  # fmt: skip
    p.add_argument("--flush", action="store_true", help="flush the cache first (admin key)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    p.add_argument("--out", type=Path, help="folder for report.json, records.jsonl, report.png")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.url = require_loopback(args.url)
    if args.stop is None:
        args.stop = [".", "\n"]
    report = asyncio.run(main_async(args))
    report.pop("gateway_cache_stats", None)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
