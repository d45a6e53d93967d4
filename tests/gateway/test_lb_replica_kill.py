"""A gateway replica SIGKILLed under load behind a real load balancer (Debian's HAProxy).

Three `python -m gateway serve` replicas share one real Redis 8 in front of the fault stub
engine (slow enough that requests are in flight on the replica when it dies); HAProxy, set up as
docs/scale-out.md says (health checks on /health, `retry-on conn-failure empty-response`,
`option redispatch`), spreads a steady mix of cache hits, JSON misses and streamed misses over
them. One replica is killed mid-load. What must hold:

- every request HAProxy could retry succeeded. It cannot retry a response it has begun to
  relay: a stream whose headers (and maybe first chunks) reached the client before the replica
  died is cut short, and the client must ask again. Everything else (hits, JSON misses, streams
  not yet started, requests sent to the dead replica before the health check noticed) is
  replayed on a live replica;
- nothing stored before the kill is lost: every answer confirmed in the cache (stored through
  each of the three replicas, the killed one included) is served as a hit afterwards.

Without `retry-on ... empty-response` (HAProxy's default retries connection failures only),
the JSON misses the replica was answering end in 502s and this test fails.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx

from tests.gateway.test_replicas import replica_env
from tests.observability.helpers import scrape
from tests.reliability.processes import GatewayHandle, gateway_process
from tests.support.haproxy import HAProxy, running_haproxy
from tests.support.stub_engines import MODEL, running_fault_engine
from tests.support.waiting import wait_for

WORKERS = 6
STORED_PER_REPLICA = 6
AFTER_KILL = 40  # requests answered after the kill before the load stops
ONLY_IF_CACHED = {"cache-control": "only-if-cached"}


@dataclass
class Outcome:
    kind: str  # hit | miss | stream
    started: float
    ended: float
    ok: bool
    relaying: bool = False  # a stream whose response had begun when it failed
    detail: str = ""


def body(text: str, stream: bool = False) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": stream}


def ask(url: str, text: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body(text), headers=headers, timeout=60)


def content(reply: httpx.Response) -> str:
    return str(reply.json()["choices"][0]["message"]["content"])


class Load:
    """WORKERS threads sending a steady mix through the load balancer until stopped."""

    def __init__(self, lb: HAProxy, stored: dict[str, str], answer: str) -> None:
        self.lb, self.stored, self.answer = lb, stored, answer
        self.outcomes: list[Outcome] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.lb.url, timeout=60) as client:
            while not self.stop.is_set():
                kind = rng.choices(["hit", "miss", "stream"], weights=[5, 3, 2])[0]
                started = time.monotonic()
                try:
                    outcome = getattr(self, kind)(client, rng, started)
                except httpx.HTTPError as exc:
                    outcome = Outcome(kind, started, time.monotonic(), False, detail=repr(exc))
                with self._lock:
                    self.outcomes.append(outcome)

    def hit(self, client: httpx.Client, rng: random.Random, started: float) -> Outcome:
        text = rng.choice(sorted(self.stored))
        reply = client.post("/v1/chat/completions", json=body(text))
        ok = reply.status_code == 200 and reply.headers.get("x-cache") == "hit-exact"
        ok = ok and content(reply) == self.stored[text]
        return Outcome("hit", started, time.monotonic(), ok, detail=f"{reply.status_code}")

    def miss(self, client: httpx.Client, rng: random.Random, started: float) -> Outcome:
        reply = client.post("/v1/chat/completions", json=body(f"New question {uuid.uuid4()}"))
        ok = reply.status_code == 200 and content(reply) == self.answer
        return Outcome("miss", started, time.monotonic(), ok, detail=f"{reply.status_code}")

    def stream(self, client: httpx.Client, rng: random.Random, started: float) -> Outcome:
        text, relaying = "", False
        done = False
        try:
            payload = body(f"New stream {uuid.uuid4()}", stream=True)
            with client.stream("POST", "/v1/chat/completions", json=payload) as reply:
                relaying = reply.status_code == 200
                for line in reply.iter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: {"):
                        delta = json.loads(line[6:])["choices"][0].get("delta") or {}
                        text += delta.get("content") or ""
            status = reply.status_code
        except httpx.HTTPError as exc:
            return Outcome("stream", started, time.monotonic(), False, relaying, repr(exc))
        ok = status == 200 and done and text == self.answer
        return Outcome("stream", started, time.monotonic(), ok, relaying, f"{status} {text!r}")


def is_stored(url: str, text: str) -> bool:
    return ask(url, text, **ONLY_IF_CACHED).status_code == 200


def store_through_each(replicas: list[GatewayHandle], lb: HAProxy) -> dict[str, str]:
    """Answers stored through every replica directly, each confirmed in the shared cache."""
    texts = [
        (handle.url, f"Stored through replica {i}, question {j} ({uuid.uuid4().hex[:8]})")
        for i, handle in enumerate(replicas)
        for j in range(STORED_PER_REPLICA)
    ]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda job: ask(*job), texts))
    stored = {}
    for (_, text), reply in zip(texts, replies, strict=True):
        assert reply.status_code == 200 and reply.headers["x-cache"] == "miss", reply.text
        stored[text] = content(reply)
    for text in stored:  # acknowledged: the shared cache answers it without an engine
        wait_for(partial(is_stored, lb.url, text), "the answer to be stored")
    return stored


def test_a_replica_killed_under_load_loses_no_request_the_lb_could_retry(
    redis_server: str,
) -> None:
    with (
        running_fault_engine(delay_s=0.6, chunk_delay_s=0.1) as engine,
        ExitStack() as stack,
    ):
        env = replica_env(engine, redis_server, f"lb{uuid.uuid4().hex}")
        replicas = [stack.enter_context(gateway_process(env)) for _ in range(3)]
        lb = stack.enter_context(running_haproxy([r.url.removeprefix("http://") for r in replicas]))
        victim, survivors = replicas[0], replicas[1:]
        stored = store_through_each(replicas, lb)
        load = Load(lb, stored, "".join(engine.words))
        workers = [threading.Thread(target=load.run, args=(seed,)) for seed in range(WORKERS)]
        for worker in workers:
            worker.start()
        try:
            time.sleep(2)  # steady load
            wait_for(  # the victim is answering misses when it dies
                lambda: scrape(victim.url).value("gateway_backend_in_flight_requests") >= 2,
                "misses in flight on the replica to kill",
            )
            os.killpg(victim.process.pid, signal.SIGKILL)
            killed = time.monotonic()
            victim.process.wait(timeout=30)
            wait_for(lambda: lb.backend_stats()["servers_up"] == 2, "HAProxy to mark it down")
            wait_for(  # and the load goes on over the two survivors
                lambda: sum(o.started > killed for o in load.outcomes) >= AFTER_KILL,
                "requests sent after the kill",
                timeout_s=300,
            )
        finally:
            load.stop.set()
            for worker in workers:
                worker.join(timeout=120)
        outcomes = load.outcomes
        failed = [o for o in outcomes if not o.ok]
        cut = [o for o in failed if o.kind == "stream" and o.relaying and o.started < killed]
        in_flight = [o for o in outcomes if o.started < killed < o.ended]
        after = [o for o in outcomes if o.started > killed]
        lb_stats = lb.backend_stats()
        took_over = sum(
            scrape(r.url).value("gateway_shared_flights_total", role="took_over") for r in survivors
        )
        print(
            f"\nsent {len(outcomes)} (in flight at the kill {len(in_flight)}, sent after it "
            f"{len(after)}), failed {len(failed)} of which streams already relaying {len(cut)}; "
            f"HAProxy retries {lb_stats['retries']}, redispatches {lb_stats['redispatches']}; "
            f"flights taken over from the dead replica {took_over:g}"
        )
        lost = [o for o in failed if o not in cut]
        assert lost == [], f"requests the load balancer could retry were lost: {lost}"
        assert len(in_flight) >= 2  # the kill did land under load
        assert lb_stats["retries"] + lb_stats["redispatches"] >= 1
        for text, answer in stored.items():  # nothing stored before the kill is lost
            reply = ask(lb.url, text)
            assert reply.status_code == 200 and reply.headers["x-cache"] == "hit-exact"
            assert content(reply) == answer
