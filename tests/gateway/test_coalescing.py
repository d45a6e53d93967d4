"""Identical cacheable misses through the gateway: one engine call, shared by all of them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from gateway.config import BackendConfig
from tests.support.gateway import running_gateway
from tests.support.stub_engines import MODEL, FaultEngine, running_fault_engine


@pytest.fixture(scope="module")
def stub() -> Iterator[FaultEngine]:
    with running_fault_engine(delay_s=0.3) as engine:
        yield engine


@pytest.fixture(scope="module")
def gateway_url(stub: FaultEngine) -> Iterator[str]:
    with running_gateway(backends=[BackendConfig(url=stub.url)]) as url:
        yield url


def ask(url: str, text: str, namespace: str, **headers: str) -> httpx.Response:
    """Each test asks its own questions, in a cache namespace of its own."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "cache": {"namespace": namespace},
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_concurrent_identical_misses_make_one_engine_call(
    gateway_url: str, stub: FaultEngine
) -> None:
    namespace = uuid.uuid4().hex
    before = stub.calls
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda _: ask(gateway_url, "Where is my card?", namespace), range(8))
        )
    assert stub.calls == before + 1
    assert {r.status_code for r in replies} == {200}
    assert len({r.json()["choices"][0]["message"]["content"] for r in replies}) == 1
    assert sum("x-gateway-coalesced" not in r.headers for r in replies) == 1  # the leader


def test_a_repeat_right_after_the_answer_never_reaches_the_engine(
    gateway_url: str, stub: FaultEngine
) -> None:
    # Served by the cache if the insert has landed, else by the finished flight, which stays
    # joinable until then: never by a second engine call.
    for text in ("How do I top up?", "Why was I charged?", "Is my transfer pending?"):
        namespace = uuid.uuid4().hex
        before = stub.calls
        first, second = ask(gateway_url, text, namespace), ask(gateway_url, text, namespace)
        assert first.headers["x-cache"] == "miss"
        assert second.headers["x-cache"] == "hit-exact" or second.headers["x-gateway-coalesced"]
        assert stub.calls == before + 1


def test_no_cache_gets_a_fresh_engine_answer(gateway_url: str, stub: FaultEngine) -> None:
    namespace = uuid.uuid4().hex
    before = stub.calls
    text = "Can I change my PIN?"
    assert ask(gateway_url, text, namespace).status_code == 200
    fresh = ask(gateway_url, text, namespace, **{"cache-control": "no-cache"})
    assert fresh.status_code == 200 and "x-gateway-coalesced" not in fresh.headers
    assert stub.calls == before + 2


def test_an_answer_that_is_not_stored_does_not_linger(gateway_url: str, stub: FaultEngine) -> None:
    namespace = uuid.uuid4().hex
    before = stub.calls
    for _ in range(2):
        reply = ask(
            gateway_url, "Why is my card blocked?", namespace, **{"cache-control": "no-store"}
        )
        assert reply.status_code == 200 and "x-gateway-coalesced" not in reply.headers
    assert stub.calls == before + 2
