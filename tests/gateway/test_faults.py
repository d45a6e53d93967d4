"""Engine faults the gateway must absorb: stub engines inject them."""

from __future__ import annotations

import json

import httpx

from gateway.config import BackendConfig
from tests.support.gateway import running_gateway
from tests.support.servers import free_port
from tests.support.stub_engines import MODEL, running_fault_engine

# These tests are about engines, not the cache: repeated identical requests must reach them.
NO_CACHE = {"enabled": False}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def test_dead_engine_fails_over_to_a_live_one() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with (
        running_fault_engine() as stub,
        running_gateway(
            cache=NO_CACHE,
            backends=[BackendConfig(url=dead, models=[MODEL]), BackendConfig(url=stub.url)],
        ) as gw,
    ):
        for _ in range(4):
            r = httpx.post(f"{gw}/v1/chat/completions", json=CHAT)
            assert r.status_code == 200
            assert r.json()["choices"][0]["message"]["content"] == "Hello from the stub."
        assert stub.calls == 4


def test_only_dead_engines_give_503_in_openai_shape() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with running_gateway(cache=NO_CACHE, backends=[BackendConfig(url=dead, models=[MODEL])]) as gw:
        r = httpx.post(f"{gw}/v1/chat/completions", json=CHAT)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "no_backend_available"
        assert httpx.get(f"{gw}/ready").status_code == 503
        assert httpx.get(f"{gw}/health").status_code == 200


def test_engine_503_is_retried_on_the_next_engine() -> None:
    with (
        running_fault_engine(mode="fail") as failing,
        running_fault_engine() as good,
        running_gateway(
            cache=NO_CACHE, backends=[BackendConfig(url=failing.url), BackendConfig(url=good.url)]
        ) as gw,
    ):
        r = httpx.post(f"{gw}/v1/chat/completions", json=CHAT)
        assert r.status_code == 200
        assert good.calls == 1


def test_engine_client_error_is_passed_on_in_openai_shape() -> None:
    with (
        running_fault_engine(mode="reject") as stub,
        running_gateway(cache=NO_CACHE, backends=[BackendConfig(url=stub.url)]) as gw,
    ):
        r = httpx.post(f"{gw}/v1/chat/completions", json=CHAT)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["message"] == "bad max_tokens"
        assert set(error) >= {"message", "type", "param", "code"}
        assert stub.calls == 1  # a 4xx is the client's fault: never retried


def test_stalled_engine_times_out_with_503() -> None:
    with (
        running_fault_engine(mode="hang") as stub,
        running_gateway(
            cache=NO_CACHE, backends=[BackendConfig(url=stub.url)], timeouts={"first_byte_s": 0.5}
        ) as gw,
    ):
        r = httpx.post(f"{gw}/v1/chat/completions", json=CHAT, timeout=10)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "upstream_timeout"


def test_stream_cut_mid_way_ends_with_an_error_event_and_no_done() -> None:
    with (
        running_fault_engine(mode="cut") as stub,
        running_gateway(cache=NO_CACHE, backends=[BackendConfig(url=stub.url)]) as gw,
    ):
        r = httpx.post(f"{gw}/v1/chat/completions", json={**CHAT, "stream": True})
        assert r.status_code == 200
        events = _events(r.text)
        assert "[DONE]" not in events
        assert json.loads(events[0])["choices"][0]["delta"]["content"] == "Hello"
        assert json.loads(events[-1])["error"]["code"] == "stream_interrupted"
