"""Two real `python -m gateway serve` replicas sharing one real Redis 8, in front of a stub
engine that counts calls: they behave as one gateway (one engine call per identical miss, one
cache, one set of cache stats), and a replica killed mid-answer hands its flight over."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest

from tests.observability.helpers import scrape
from tests.reliability.processes import GatewayHandle, gateway_process
from tests.support.stub_engines import MODEL, FaultEngine, running_fault_engine

ADMIN = "admin-" + uuid.uuid4().hex
LEASE_MS = 1000
ROLES = ("led", "took_over", "followed", "alone")


def replica_env(engine: FaultEngine, redis_url: str, prefix: str) -> dict[str, str]:
    return {
        "GATEWAY_BACKENDS": json.dumps([{"url": engine.url}]),
        "GATEWAY_PROBE_INTERVAL_S": "0.5",
        "GATEWAY_CACHE__REDIS_URL": redis_url,
        "GATEWAY_CACHE__KEY_PREFIX": prefix,
        "GATEWAY_CACHE__AUDIT__SAMPLE_RATE": "0",  # no audit calls: the engine counts requests
        "GATEWAY_CACHE__STATS_FLUSH_S": "0.2",
        "GATEWAY_ROUTING__SHARED_FLIGHT__LEASE_MS": str(LEASE_MS),
        "GATEWAY_AUTH__ADMIN_KEY_HASH": "sha256:" + hashlib.sha256(ADMIN.encode()).hexdigest(),
    }


@contextmanager
def replicas(engine: FaultEngine, redis_url: str, n: int = 2) -> Iterator[list[GatewayHandle]]:
    env = replica_env(engine, redis_url, f"t{uuid.uuid4().hex}")
    with ExitStack() as stack:
        yield [stack.enter_context(gateway_process(env)) for _ in range(n)]


@pytest.fixture(scope="module")
def stub() -> Iterator[FaultEngine]:
    with running_fault_engine(delay_s=1.0) as engine:
        yield engine


@pytest.fixture(scope="module")
def pair(stub: FaultEngine, redis_server: str) -> Iterator[list[str]]:
    with replicas(stub, redis_server) as handles:
        yield [h.url for h in handles]


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def ask(url: str, text: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body(text), timeout=30)


def content(reply: httpx.Response) -> str:
    text: str = reply.json()["choices"][0]["message"]["content"]
    return text


def shared_flights(urls: list[str]) -> Counter[str]:
    """gateway_shared_flights_total by role, summed over the replicas' /metrics."""
    total: Counter[str] = Counter()
    for url in urls:
        for role in ROLES:
            total[role] += int(scrape(url).value("gateway_shared_flights_total", role=role))
    return total


def test_identical_misses_on_two_replicas_make_one_engine_call(
    pair: list[str], stub: FaultEngine
) -> None:
    text = f"Where is my card? {uuid.uuid4().hex}"
    before, flights = stub.calls, shared_flights(pair)
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda url: ask(url, text), pair * 3))
    assert stub.calls == before + 1
    # one in-process flight per replica: one led it, the other followed across Redis
    assert shared_flights(pair) - flights == Counter(led=1, followed=1)
    assert [r.status_code for r in replies] == [200] * 6
    assert len({content(r) for r in replies}) == 1
    assert sum("x-gateway-coalesced" not in r.headers for r in replies) == 1  # the one leader


def test_an_answer_stored_through_one_replica_is_served_by_the_other(
    pair: list[str], stub: FaultEngine
) -> None:
    a, b = pair
    text = f"How do I top up? {uuid.uuid4().hex}"
    before = stub.calls
    first = ask(a, text)
    assert first.headers["x-cache"] == "miss"
    deadline = time.monotonic() + 10
    while (reply := ask(b, text)).headers["x-cache"] != "hit-exact":
        assert time.monotonic() < deadline, "the other replica never served the stored answer"
        time.sleep(0.1)
    assert content(reply) == content(first)
    assert stub.calls == before + 1  # before the insert landed, B replayed A's finished flight


def cache_stats(url: str) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {ADMIN}"}
    reply = httpx.get(f"{url}/admin/cache/stats", headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    stats: dict[str, Any] = reply.json()
    return stats


def test_cache_stats_are_the_clusters(pair: list[str]) -> None:
    a, b = pair
    text = f"Is my transfer pending? {uuid.uuid4().hex}"
    ask(a, text)
    for _ in range(3):
        ask(b, text)
        ask(a, text)
    deadline = time.monotonic() + 10
    while True:
        sa, sb = cache_stats(a), cache_stats(b)
        local = [s["replica"] for s in (sa, sb)]
        summed = {k: local[0][k] + local[1][k] for k in ("hits", "misses", "inserts")}
        if all({k: s[k] for k in summed} == summed for s in (sa, sb)):
            break
        assert time.monotonic() < deadline, (sa, sb)
        time.sleep(0.2)
    assert sa["counted_by"] == "cluster" and sa["replicas_reporting"] == 2
    assert local[0]["hits"] >= 3 and local[1]["hits"] >= 3  # each replica served hits itself
    assert sa["hit_ratio"] == pytest.approx(
        sa["hits"] / (sa["hits"] + sa["misses"])
    )  # ratios from the summed counts
    dashboard = httpx.get(f"{b}/dashboard/data", timeout=10).json()["cache"]
    assert dashboard["counted_by"] == "cluster" and dashboard["replicas_reporting"] == 2
    assert dashboard["hits"] >= summed["hits"]  # the cluster's, not replica b's alone
    assert dashboard["hits"] > local[1]["hits"]


def stream_first_chunk(url: str, text: str, got_first: threading.Event) -> int:
    """Streams ``text``; returns how many data chunks arrived (the connection may die)."""
    chunks = 0
    try:
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=body(text, stream=True), timeout=30
        ) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    chunks += 1
                    got_first.set()
    except httpx.HTTPError:
        pass
    return chunks


def test_a_leader_killed_mid_answer_lets_a_follower_take_over(redis_server: str) -> None:
    with (
        running_fault_engine(chunk_delay_s=0.4) as slow,
        replicas(slow, redis_server) as (leader, follower),
        ThreadPoolExecutor(2) as pool,
    ):
        text = f"Tell me a long story {uuid.uuid4().hex}"
        got_first = threading.Event()
        dying = pool.submit(stream_first_chunk, leader.url, text, got_first)
        assert got_first.wait(15)  # the leader is mid-answer
        waiting = pool.submit(
            lambda: httpx.post(
                f"{follower.url}/v1/chat/completions", json=body(text, stream=True), timeout=30
            )
        )
        time.sleep(0.3)
        assert slow.calls == 1  # the follower waits on the leader's lease
        os.killpg(leader.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        while slow.calls < 2:
            assert time.monotonic() - killed < LEASE_MS / 1000 + 1.0, "no takeover in time"
            time.sleep(0.02)
        reply = waiting.result(timeout=30)
        assert reply.status_code == 200
        assert shared_flights([follower.url]) == Counter(took_over=1)
        assert "Hello from the stub." in "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in reply.text.splitlines()
            if line.startswith("data: {")
        )
        assert dying.result(timeout=30) < 7  # the killed replica's own client was cut short
