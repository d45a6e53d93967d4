"""Engine faults through the whole gateway, with real processes and sockets, each bounded in
time: an engine killed or stalled mid-stream, clients that stop reading, and a client that
hangs up mid-stream (with the real vLLM: its running-request count must drop back to zero).

Faults the gateway already has tests for (a dead engine before the first byte, 503 failover,
a stalled engine before the first byte, a stream cut by the stub itself, Redis down) are in
tests/gateway/test_faults.py, tests/routing/ and tests/gateway/test_cache_outage.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.auth import hash_key
from gateway.config import BackendConfig
from tests.reliability.processes import engine_process
from tests.support.cache_http import ADMIN
from tests.support.gateway import running_gateway
from tests.support.stub_engines import MODEL, running_fault_engine

ADMIN_ONLY = {"admin_key_hash": hash_key(ADMIN)}  # clients need no key; /admin/* does


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def _data_events(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if line.startswith("data: "):
            yield line[6:]


def _admission(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/admin/backends", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    return dict(r.json())


def _settled(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """Waits until the gateway holds no admission slot, queue entry or engine request."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = _admission(url)
        busy = state["admission"]["in_flight"] or state["admission"]["queue_depth"]
        if not busy and all(b["in_flight"] == 0 for b in state["backends"]):
            return state
        assert time.monotonic() < deadline, f"requests stuck in the gateway: {state}"
        time.sleep(0.1)


def _wait(check: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _wait_ready(url: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}/ready").status_code != 200:
        assert time.monotonic() < deadline, "the gateway never saw the engine come back"
        time.sleep(0.1)


def test_engine_killed_mid_stream_ends_it_with_an_error_event_and_nothing_is_stored() -> None:
    words = [f" w{i}" for i in range(400)]  # 20 s of stream: the kill lands mid-way
    with (
        engine_process(words=words, chunk_delay_s=0.05) as engine,
        running_gateway(backends=[BackendConfig(url=engine.url)], auth=ADMIN_ONLY) as url,
    ):
        body = _chat("Tell me a long story about a lighthouse keeper.", max_tokens=500)
        events: list[str] = []
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=30
        ) as r:
            assert r.status_code == 200
            for data in _data_events(r.iter_lines()):
                events.append(data)
                if len(events) == 3:
                    engine.kill()
                    killed_at = time.monotonic()
        ended_after = time.monotonic() - killed_at
        assert ended_after < 5, "the client waited for the idle timeout instead of the reset"
        assert "[DONE]" not in events
        error = json.loads(events[-1])["error"]
        assert error["code"] == "stream_interrupted" and error["type"] == "server_error"
        relayed = [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]]
        assert relayed[:3] == words[:3] and len(relayed) < len(words)
        _settled(url)

        engine.start()  # same port: the gateway's probe finds it again
        _wait_ready(url)
        again = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
        assert again.status_code == 200
        assert again.headers["x-cache"] == "miss"  # the cut answer was never stored
        assert again.json()["choices"][0]["message"]["content"] == "".join(words)


def test_engine_stalled_mid_stream_is_cut_by_the_idle_timeout() -> None:
    with (
        running_fault_engine(mode="stall") as engine,
        running_gateway(
            backends=[BackendConfig(url=engine.url)],
            auth=ADMIN_ONLY,
            timeouts={"idle_stream_s": 0.5},
            cache={"enabled": False},
        ) as url,
    ):
        started = time.monotonic()
        r = httpx.post(f"{url}/v1/chat/completions", json=_chat("hi", stream=True), timeout=10)
        took = time.monotonic() - started
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert r.status_code == 200 and "[DONE]" not in events
        assert json.loads(events[0])["choices"][0]["delta"]["content"] == "Hello"
        assert json.loads(events[-1])["error"]["code"] == "stream_interrupted"
        assert 0.5 <= took < 5
        _settled(url)


def _unread_stream(url: str, body: dict[str, Any]) -> socket.socket:
    """Sends a streaming request on a socket with a tiny receive buffer and never reads it."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
    payload = json.dumps(body).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


def test_clients_that_stop_reading_hold_no_engine_slot_and_block_no_one() -> None:
    """Six clients start 4 MB streams and never read them; the engine can run two requests at
    a time. The gateway reads each answer off the engine at the engine's pace (buffering it for
    the slow client), so the slots come back and other clients are served normally."""
    big = ["x" * 2048] * 2000
    with (
        running_fault_engine(words=big, chunk_delay_s=0.0) as engine,
        running_gateway(
            backends=[BackendConfig(url=engine.url, max_in_flight=2)],
            auth=ADMIN_ONLY,
            routing={"admission": {"queue_size": 8, "max_wait_s": 10}},
            cache={"enabled": False},
        ) as url,
    ):
        slow = [_unread_stream(url, _chat(f"slow {i}", stream=True)) for i in range(6)]
        try:
            deadline = time.monotonic() + 20
            while engine.calls < 6 or engine.in_flight:
                assert time.monotonic() < deadline, f"engine saw {engine.calls} of 6 requests"
                time.sleep(0.05)
            state = _settled(url)  # six unread streams, yet no slot is held
            assert state["admission"]["rejected"] == 0
            for i in range(3):
                started = time.monotonic()
                with httpx.stream(
                    "POST",
                    f"{url}/v1/chat/completions",
                    json=_chat(f"fast {i}", stream=True),
                    timeout=30,
                ) as r:
                    assert r.status_code == 200
                    received = sum(len(chunk) for chunk in r.iter_bytes())
                assert received > 4_000_000
                assert time.monotonic() - started < 15
        finally:
            for sock in slow:
                sock.close()
        _settled(url)


# -- the real engine --------------------------------------------------------------------------


def _running(engine_url: str) -> float:
    """vLLM's vllm:num_requests_running, summed over its label sets."""
    text = httpx.get(f"{engine_url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:num_requests_running")
    )


def _poll(check: Any, timeout_s: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s
        time.sleep(0.1)
    return time.monotonic() - started


def test_a_client_that_gives_up_before_the_answer_frees_its_slot_and_queue_place() -> None:
    """A non-streaming request holds an engine slot until the engine answers; one waiting for a
    slot holds a queue place. A client that hangs up must give both back at once, not when the
    engine finishes (found by this suite: before the fix the engine kept generating)."""
    with (
        running_fault_engine(delay_s=30.0) as engine,
        running_gateway(
            backends=[BackendConfig(url=engine.url, max_in_flight=1)],
            auth=ADMIN_ONLY,
            routing={"admission": {"queue_size": 4, "max_wait_s": 30}},
            cache={"enabled": False},
        ) as url,
    ):

        def give_up(text: str, after_s: float) -> None:
            with pytest.raises(httpx.TimeoutException):
                httpx.post(f"{url}/v1/chat/completions", json=_chat(text), timeout=after_s)

        def admission() -> dict[str, Any]:
            return dict(_admission(url)["admission"])

        with ThreadPoolExecutor(2) as pool:
            holder = pool.submit(give_up, "takes the slot", 8.0)
            _wait(lambda: engine.calls == 1)
            queued = pool.submit(give_up, "waits in the queue", 1.5)
            _wait(lambda: admission()["queue_depth"] == 1)
            queued.result()
            _wait(lambda: admission()["queue_depth"] == 0, timeout_s=1.0)
            assert admission()["in_flight"] == {MODEL: 1}  # the holder still holds its slot
            holder.result()
        started = time.monotonic()
        _settled(url, timeout_s=3)  # the engine would take 30 s: the slot came back at once
        assert time.monotonic() - started < 3
        assert engine.calls == 1  # the queued request never reached the engine


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("stream", "cache"),
    [(True, True), (True, False), (False, True)],
    ids=["stream-cacheable", "stream-uncached", "whole-answer"],
)
def test_client_disconnect_aborts_the_engine_request(
    engine: Any, stream: bool, cache: bool
) -> None:
    """With the cache on, the request is a coalesced flight: when its only listener leaves, the
    flight is cancelled; with it off, the relay closes the engine response directly; a client
    waiting for a whole answer is watched until the answer is ready. Each time vLLM must see the
    disconnect and abort: vllm:num_requests_running drops back to 0 within seconds."""
    body = {
        "model": engine.model,
        "messages": [
            {"role": "user", "content": f"Count slowly to a thousand ({stream}, {cache})."}
        ],
        "max_tokens": 400,
        "ignore_eos": True,
        "temperature": 0,
        "stream": stream,
    }
    with running_gateway(
        backends=[BackendConfig(url=engine.url)], auth=ADMIN_ONLY, cache={"enabled": cache}
    ) as url:
        _poll(lambda: _running(engine.url) == 0, 30)  # nothing else is running on it
        generating = 0.0
        if stream:
            with (
                httpx.Client(timeout=60) as client,
                client.stream("POST", f"{url}/v1/chat/completions", json=body) as r,
            ):
                assert r.status_code == 200
                for received, _ in enumerate(_data_events(r.iter_lines()), start=1):
                    if received == 3:
                        generating = _running(engine.url)
                        break  # closing the line iterator already drops the connection
        else:
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(
                    httpx.post, f"{url}/v1/chat/completions", json=body, timeout=5
                )
                _poll(lambda: _running(engine.url) >= 1, 5)
                generating = _running(engine.url)
                with pytest.raises(httpx.TimeoutException):  # 400 tokens take far longer
                    waiting.result()
        assert generating >= 1, "the engine was not generating for us mid-stream"
        took = _poll(lambda: _running(engine.url) == 0, 10)
        assert took < 5, f"the engine kept generating {took:.1f} s after the client left"
        _settled(url)
