"""Two gateway replicas sharing one real Redis 8 enforce a key's limit together; with that
Redis down, each still serves requests within its share of the limit."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from gateway.config import BackendConfig
from tests.support.gateway import running_gateway
from tests.support.servers import free_port
from tests.support.stub_engines import MODEL, running_fault_engine

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def post(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=30)


def test_two_replicas_share_a_keys_requests_per_minute(redis_server: str) -> None:
    cache = {"enabled": False, "redis_url": redis_server, "key_prefix": f"t{uuid.uuid4().hex}"}
    # a generous timeout: a busy CI machine must not look like a Redis outage here
    routing = {"rate_limits": {"default": {"requests_per_minute": 5}, "redis_timeout_s": 5}}
    with (
        running_fault_engine() as stub,
        running_gateway(backends=[BackendConfig(url=stub.url)], cache=cache, routing=routing) as a,
        running_gateway(backends=[BackendConfig(url=stub.url)], cache=cache, routing=routing) as b,
        ThreadPoolExecutor(6) as pool,
    ):
        answers = list(pool.map(post, [a, b] * 6))
    statuses = [r.status_code for r in answers]
    assert statuses.count(200) == 5  # each replica alone would have answered 5
    assert statuses.count(429) == 7
    for refused in (r for r in answers if r.status_code == 429):
        assert 1 <= int(refused.headers["retry-after"]) <= 12  # one request every 12 s
    assert stub.calls == 5


def test_redis_down_each_replica_serves_its_share() -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    routing = {"rate_limits": {"default": {"requests_per_minute": 4}, "replicas": 2}}
    with (
        running_fault_engine() as stub,
        running_gateway(
            backends=[BackendConfig(url=stub.url)],
            cache={"enabled": False, "redis_url": dead},
            routing=routing,
        ) as gw,
    ):
        statuses = [post(gw).status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]  # 4 / 2 replicas, no 5xx
    assert stub.calls == 2
