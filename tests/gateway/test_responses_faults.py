"""The Responses API when engines fail (stub engines, for fault injection only): failover
before the first byte, a stream cut mid-way ends with a typed error event and stores nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx

from gateway.config import BackendConfig
from tests.support.gateway import running_gateway
from tests.support.stub_engines import MODEL, running_fault_engine
from tests.wire.openai_schema import check_event

BODY: dict[str, Any] = {"model": MODEL, "input": "Where is my card?"}


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((lines["event"], json.loads(lines["data"])))
    return found


def test_a_failing_engine_is_skipped_before_the_first_byte() -> None:
    with (
        running_fault_engine(mode="fail") as bad,
        running_fault_engine() as good,
        running_gateway(backends=[BackendConfig(url=bad.url), BackendConfig(url=good.url)]) as gw,
    ):
        for stream in (False, True):
            reply = httpx.post(
                f"{gw}/v1/responses",
                json={**BODY, "stream": stream},
                headers={"cache-control": "no-store"},
                timeout=30,
            )
            assert reply.status_code == 200 and reply.headers["x-gateway-backend"] == good.url
        assert good.calls == 2


def test_a_stream_cut_mid_way_ends_with_an_error_event_and_is_not_stored() -> None:
    with (
        running_fault_engine(mode="cut") as stub,
        running_gateway(backends=[BackendConfig(url=stub.url)]) as gw,
    ):
        reply = httpx.post(f"{gw}/v1/responses", json={**BODY, "stream": True}, timeout=30)
        assert reply.status_code == 200
        events = _events(reply.text)
        assert [name for name, _ in events] == [
            "response.created",
            "response.output_text.delta",
            "response.output_text.delta",
            "error",
        ]
        for name, event in events:
            assert name == event["type"]
            check_event(event)
        error = events[-1][1]
        assert error["code"] == "stream_interrupted" and error["sequence_number"] == 3
        stub.mode = "ok"
        again = httpx.post(f"{gw}/v1/responses", json=BODY, timeout=30)
        assert again.headers["x-cache"] == "miss"  # the broken answer was not stored
        assert again.json()["output"][0]["content"][0]["text"] == "Hello from the stub."
