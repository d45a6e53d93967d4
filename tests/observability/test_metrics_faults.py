"""Metrics that only move when something goes wrong: a dead Redis, a failing engine, a full
engine, a rate limit. Stub engines inject the engine faults; the Redis fault is a real one (a
port nobody listens on)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from gateway.config import BackendConfig
from tests.observability.helpers import scrape
from tests.support.gateway import running_gateway
from tests.support.servers import free_port
from tests.support.stub_engines import MODEL, running_fault_engine
from tests.support.waiting import wait_for

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
NO_CACHE = {"enabled": False}


def post(url: str, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=timeout)


def test_redis_errors_are_counted_and_requests_bypass() -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with (
        running_fault_engine() as stub,
        running_gateway(
            backends=[BackendConfig(url=stub.url)],
            cache={"redis_url": dead_redis, "store_retry_after_s": 0},
        ) as gw,
    ):
        for _ in range(2):
            response = post(gw)
            assert response.status_code == 200
            assert response.headers["x-cache"] == "bypass"
        after = scrape(gw)
    assert after.value("gateway_cache_store_errors_total", store="redis", kind="error") >= 2
    assert after.value("gateway_cache_lookups_total", result="bypass") == 2
    assert after.value("gateway_requests_total", cache="bypass", status="200") == 2


def test_an_opening_breaker_is_exported_and_shown() -> None:
    routing = {"breaker": {"failure_threshold": 2, "cooldown_s": 60}, "retry": {"max_attempts": 1}}
    with (
        running_fault_engine(mode="fail") as failing,
        running_gateway(
            backends=[BackendConfig(url=failing.url)], cache=NO_CACHE, routing=routing
        ) as gw,
    ):
        before = scrape(gw)
        assert before.value("gateway_backend_breaker_state", backend=failing.url) == 0
        for _ in range(2):
            assert post(gw).status_code >= 500
        after = scrape(gw)
        time.sleep(1.2)  # a dashboard sample
        data = httpx.get(f"{gw}/dashboard/data").json()
    assert after.value("gateway_backend_breaker_state", backend=failing.url) == 2  # open
    transitions = "gateway_backend_breaker_transitions_total"
    assert after.value(transitions, backend=failing.url, state="open") == 1
    assert after.value("gateway_requests_total", route="/v1/chat/completions", status="503") == 2
    assert data["engines"][0]["breaker"] == "open"
    assert data["backends"][failing.url]["breaker"][-1] == 2
    assert data["summary"]["errors"] == 2


@contextmanager
def requests_in_background(url: str, count: int) -> Iterator[list[int]]:
    """``count`` requests sent at once from threads; yields their status codes (filled as
    they end, -1 for a client-side timeout)."""
    statuses: list[int] = []

    def send() -> None:
        try:
            statuses.append(post(url, timeout=15).status_code)
        except httpx.TimeoutException:
            statuses.append(-1)

    threads = [threading.Thread(target=send, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)  # a stable order: the first one takes the engine slot
    try:
        yield statuses
    finally:
        for thread in threads:
            thread.join(timeout=10)


def test_in_flight_and_queue_depth_follow_a_full_engine() -> None:
    with (
        running_fault_engine(mode="hang") as hanging,
        running_gateway(
            backends=[BackendConfig(url=hanging.url, max_in_flight=1)],
            cache=NO_CACHE,
            routing={"admission": {"max_wait_s": 2}},
            timeouts={"first_byte_s": 4},  # the hung request ends, so the gateway stops at once
        ) as gw,
        requests_in_background(gw, 2) as statuses,
    ):
        wait_for(lambda: scrape(gw).value("gateway_admission_queue_depth") == 1, "a waiter")
        now = scrape(gw)
        assert now.value("gateway_backend_in_flight_requests", backend=hanging.url) == 1
        assert now.value("gateway_admission_in_flight_requests", model=MODEL) == 1
        wait_for(lambda: scrape(gw).value("gateway_rejected_requests_total") == 1, "the 429")
        assert scrape(gw).value("gateway_admission_queue_depth") == 0
        wait_for(lambda: len(statuses) == 2, "both answers")
        rejected, timed_out = sorted(statuses)
        assert rejected == 429 and timed_out >= 500  # the waiter shed, the hung one failed


def test_rate_limited_requests_are_counted() -> None:
    limits = {"rate_limits": {"default": {"requests_per_minute": 1}}}
    with (
        running_fault_engine() as stub,
        running_gateway(
            backends=[BackendConfig(url=stub.url)], cache=NO_CACHE, routing=limits
        ) as gw,
    ):
        assert post(gw).status_code == 200
        assert post(gw).status_code == 429
        after = scrape(gw)
    assert after.value("gateway_rejected_requests_total") == 1
    assert after.value("gateway_requests_total", status="429", cache="none") == 1
