"""Speculative misses while flights are shared across replicas (a real Redis 8): a semantic hit
withdraws the engine request that leads a shared flight, and the engine sees every one go.

The regression test of a lost cancel (gateway/cancellation.py): the flight's lease claim
answered as the withdrawal landed, redis-py's asyncio.wait_for dropped the cancel on Python
3.11, and the withdrawn request ran to its end on the engine (about one round in twenty).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.config import BackendConfig
from tests.observability.helpers import scrape
from tests.support.cache_http import KEYS, auth_settings, warm
from tests.support.gateway import running_gateway
from tests.support.stub_engines import MODEL, FaultEngine, running_fault_engine
from tests.support.waiting import wait_for

QUESTION = "How do I reset my password?"
ANSWER = "Open Settings, then Security, then Reset password."
ROUNDS = 40


@pytest.fixture(scope="module")
def stub() -> Iterator[FaultEngine]:
    with running_fault_engine(delay_s=1.0, chunk_delay_s=0.05) as engine:
        yield engine


@pytest.fixture(scope="module")
def gateway_url(stub: FaultEngine, redis_server: str) -> Iterator[str]:
    """Speculation on, flights shared through Redis (the default with a Redis)."""
    cache: dict[str, Any] = {
        "speculative_miss": True,
        "store_timeout_s": 5.0,
        "audit": {"sample_rate": 0},
        "redis_url": redis_server,
        "key_prefix": f"specshared{uuid.uuid4().hex[:12]}",
    }
    with running_gateway(
        backends=[BackendConfig(url=stub.url, max_in_flight=2)],
        cache=cache,
        auth=auth_settings(),
        routing={"budget": {"enabled": False}},
    ) as url:
        warm(url, MODEL, {QUESTION: ANSWER})
        yield url


def ask(url: str, text: str, stream: bool) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": stream}
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def recased(text: str, rng: random.Random) -> str:
    """The same words in other letter cases: a new exact key (and embedder memo key), the same
    embedding, so a semantic hit whose speculative engine request is withdrawn."""
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_withdrawn_shared_flight_leader_is_aborted_on_the_engine(
    gateway_url: str, stub: FaultEngine, stream: bool
) -> None:
    rng = random.Random()
    before = scrape(gateway_url)
    calls, disconnects, completed = stub.calls, stub.disconnects, stub.completed
    for _ in range(ROUNDS):
        wait_for(  # a withdrawn request closes in the background; then there is headroom again
            lambda: scrape(gateway_url).value("gateway_backend_in_flight_requests") == 0,
            "the gateway's engine requests to close",
        )
        reply = ask(gateway_url, recased(QUESTION, rng), stream)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-cache"] == "hit-semantic"
    wait_for(lambda: stub.in_flight == 0, "the stub to finish")
    after = scrape(gateway_url)
    aborted = "gateway_speculative_requests_total"
    assert after.value(aborted, outcome="aborted") - before.value(aborted, outcome="aborted") == (
        ROUNDS
    )
    sent = stub.calls - calls
    assert stub.completed == completed, f"{stub.completed - completed} of {sent} ran to the end"
    assert stub.disconnects - disconnects == sent  # every one that arrived was hung up on
