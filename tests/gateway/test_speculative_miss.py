"""Speculative misses through HTTP: the engine request starts beside the semantic tier.

The real embedder and the real stores (in-process and Redis 8); the engine is the fault stub,
slow to answer, so that a withdrawn request is still running when the semantic tier hits and
the stub can see the gateway hang up. The real engine's case is in test_speculative_engine.py.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.cache.service import SemanticCache
from gateway.config import BackendConfig
from gateway.routing.upstream import Upstream
from tests.observability.helpers import scrape
from tests.support.cache_http import KEYS, auth_settings, warm
from tests.support.gateway import running_gateway
from tests.support.stub_engines import MODEL, FaultEngine, running_fault_engine
from tests.support.waiting import wait_for

WARMED = {
    "How do I reset my password?": "Open Settings, then Security, then Reset password.",
    "Where can I see my card's PIN?": "Your PIN is in the app under Card, then Show PIN.",
    "How long does a transfer take?": "Transfers arrive within one working day.",
}
SPECULATIVE = "gateway_speculative_requests_total"


@pytest.fixture(scope="module")
def stub() -> Iterator[FaultEngine]:
    with running_fault_engine(delay_s=1.0, chunk_delay_s=0.05) as engine:
        yield engine


@pytest.fixture(scope="module", params=["memory", "redis"])
def gateway_url(request: pytest.FixtureRequest, stub: FaultEngine) -> Iterator[str]:
    """max_in_flight 2 at the default speculative_max_load 0.5: one request in flight on the
    engine leaves it no headroom. No prompt counting, so the engine sees only completions."""
    cache: dict[str, Any] = {
        "speculative_miss": True,
        "store_timeout_s": 5.0,
        "audit": {"sample_rate": 0},
    }
    routing: dict[str, Any] = {"budget": {"enabled": False}}
    if request.param == "redis":
        cache["redis_url"] = request.getfixturevalue("redis_server")
        cache["key_prefix"] = f"spec{uuid.uuid4().hex[:12]}"
    with running_gateway(
        backends=[BackendConfig(url=stub.url, max_in_flight=2)],
        cache=cache,
        auth=auth_settings(),
        routing=routing,
    ) as url:
        warm(url, MODEL, WARMED)
        yield url


def engine_idle(gateway_url: str) -> None:
    """Waits until the gateway has no request on the engine: a withdrawn request is closed in
    the background, and until it is, the engine has no headroom for the next speculation."""
    wait_for(
        lambda: scrape(gateway_url).value("gateway_backend_in_flight_requests") == 0,
        "the gateway's engine requests to close",
    )


def ask(url: str, text: str, stream: bool = False, **headers: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": stream}
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {KEYS['acme']}", **headers},
        timeout=30,
    )


def content(response: httpx.Response) -> str:
    if response.headers["content-type"].startswith("text/event-stream"):
        parts = [
            line.removeprefix("data: ")
            for line in response.text.splitlines()
            if line.startswith("data: {")
        ]
        return "".join(
            (json.loads(p)["choices"][0].get("delta") or {}).get("content") or "" for p in parts
        )
    return str(response.json()["choices"][0]["message"]["content"])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_semantic_hit_is_served_and_the_engine_request_withdrawn(
    gateway_url: str, stub: FaultEngine, stream: bool
) -> None:
    before = scrape(gateway_url)
    calls, disconnects = stub.calls, stub.disconnects
    # Letter case defeats the exact tier, not the (uncased) embedder: each is a semantic hit.
    # Each case once per gateway, or the embedder's memo answers before the engine is asked.
    case = str.swapcase if stream else str.upper
    for question, answer in WARMED.items():
        engine_idle(gateway_url)
        reply = ask(gateway_url, case(question), stream=stream)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-cache"] == "hit-semantic"
        assert content(reply) == answer
    after = scrape(gateway_url)
    assert after.value(SPECULATIVE, outcome="aborted") - before.value(
        SPECULATIVE, outcome="aborted"
    ) == len(WARMED)
    assert after.value(SPECULATIVE, outcome="used") == before.value(SPECULATIVE, outcome="used")
    sent = stub.calls - calls
    counted = after.value("gateway_speculative_aborted_sent_requests_total") - before.value(
        "gateway_speculative_aborted_sent_requests_total"
    )
    # The engine request leaves as the embedding starts and usually reaches the engine before
    # the semantic tier answers. Which ones were sent when the hit withdrew them is counted as
    # the hit is served (a request still being sent then may land uncounted, or be withdrawn
    # before it arrives): every one that arrived is hung up on.
    assert 0 <= counted <= len(WARMED)
    wait_for(lambda: stub.disconnects - disconnects == sent, "the stub to see every hang-up")
    wait_for(lambda: stub.in_flight == 0, "the stub to finish")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_miss_is_relayed_from_the_engine_request_already_under_way(
    gateway_url: str, stub: FaultEngine, stream: bool
) -> None:
    engine_idle(gateway_url)
    before = scrape(gateway_url)
    calls, disconnects = stub.calls, stub.disconnects
    question = f"Can I get a statement for account {uuid.uuid4().hex[:8]}?"
    reply = ask(gateway_url, question, stream=stream)
    assert reply.status_code == 200
    assert reply.headers["x-cache"] == "miss"
    assert content(reply) == "".join(stub.words)
    assert stub.calls == calls + 1 and stub.disconnects == disconnects
    assert stub.bodies[-1]["messages"] == [{"role": "user", "content": question}]
    used = scrape(gateway_url).value(SPECULATIVE, outcome="used")
    assert used == before.value(SPECULATIVE, outcome="used") + 1
    if stream:
        return  # the stub's streams end without a finish_reason: never stored
    # The answer is stored after the response, as without speculation.
    only = {"cache-control": "only-if-cached"}
    wait_for(
        lambda: ask(gateway_url, question, False, **only).status_code == 200,
        "the answer to be stored",
    )
    assert stub.calls == calls + 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_the_engine_request_leaves_before_the_semantic_lookup_begins(
    gateway_url: str, stub: FaultEngine, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup's CPU work (embedding, search) must not delay the engine request: it starts
    once the request is on its way (the gateway runs in this process, in a thread)."""
    engine_idle(gateway_url)
    order: list[str] = []
    lookup, send, stream_ = (
        SemanticCache.lookup_semantic,
        Upstream.send,
        Upstream.stream,
    )

    async def looking(self: SemanticCache, *args: Any) -> Any:
        order.append("lookup")
        return await lookup(self, *args)

    async def sending(self: Upstream, *args: Any, **kwargs: Any) -> Any:
        order.append("engine")
        return await send(self, *args, **kwargs)

    async def streaming(self: Upstream, *args: Any, **kwargs: Any) -> Any:
        order.append("engine")
        return await stream_(self, *args, **kwargs)

    monkeypatch.setattr(SemanticCache, "lookup_semantic", looking)
    monkeypatch.setattr(Upstream, "send", sending)
    monkeypatch.setattr(Upstream, "stream", streaming)
    reply = ask(gateway_url, f"Is there a fee for card {uuid.uuid4().hex[:8]}?", stream=stream)
    assert reply.headers["x-cache"] == "miss"
    assert order == ["engine", "lookup"]


def test_no_speculative_request_when_the_engine_has_no_headroom(
    gateway_url: str, stub: FaultEngine
) -> None:
    slow = threading.Thread(target=ask, args=(gateway_url, f"A new question {uuid.uuid4()}"))
    slow.start()
    try:
        wait_for(lambda: stub.in_flight == 1, "the slow miss to reach the engine")
        before = scrape(gateway_url)
        calls = stub.calls
        question = next(iter(WARMED))
        reply = ask(gateway_url, question.lower())
        assert reply.headers["x-cache"] == "hit-semantic"
        assert stub.calls == calls  # the hit never reached the busy engine
        after = scrape(gateway_url)
        skipped = "gateway_speculative_skipped_total"
        assert after.value(skipped) == before.value(skipped) + 1
        for outcome in ("used", "aborted"):
            assert after.value(SPECULATIVE, outcome=outcome) == before.value(
                SPECULATIVE, outcome=outcome
            )
    finally:
        slow.join(timeout=30)


def test_only_if_cached_never_speculates(gateway_url: str, stub: FaultEngine) -> None:
    calls = stub.calls
    only = {"cache-control": "only-if-cached"}
    reply = ask(gateway_url, f"Never asked {uuid.uuid4()}", False, **only)
    assert reply.status_code == 504
    assert stub.calls == calls
