"""The gateway follows the engine list that `python -m engine pool` publishes, live."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from engine.registry import BackendEntry, PublishedPool, write_published
from tests.support.gateway import running_gateway
from tests.support.stub_engines import MODEL, running_fault_engine

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _publish(path: Path, generation: int, urls: list[str]) -> None:
    backends = [BackendEntry(id=f"e{i}", url=url, models=[MODEL]) for i, url in enumerate(urls)]
    write_published(path, PublishedPool(generation=generation, backends=backends))


def _wait_for(gateway: str, status: int) -> httpx.Response:
    deadline = time.monotonic() + 10
    while True:
        response = httpx.post(f"{gateway}/v1/chat/completions", json=CHAT)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_engines_join_and_leave_without_a_restart(tmp_path: Path) -> None:
    published = tmp_path / "engines.json"
    with (
        running_fault_engine() as first,
        running_fault_engine() as second,
        running_gateway(backends_file=published, cache={"enabled": False}) as gateway,
    ):
        assert httpx.post(f"{gateway}/v1/chat/completions", json=CHAT).status_code == 503

        _publish(published, 1, [first.url])
        assert _wait_for(gateway, 200).status_code == 200
        assert first.calls >= 1

        _publish(published, 2, [second.url])  # the first engine leaves, the second joins
        deadline = time.monotonic() + 10
        while second.calls == 0 and time.monotonic() < deadline:
            httpx.post(f"{gateway}/v1/chat/completions", json=CHAT)
            time.sleep(0.05)
        calls_on_first = first.calls
        for _ in range(3):
            assert httpx.post(f"{gateway}/v1/chat/completions", json=CHAT).status_code == 200
        assert first.calls == calls_on_first and second.calls >= 3

        _publish(published, 3, [])
        assert _wait_for(gateway, 503).status_code == 503
