"""The official anthropic client's Messages API calls through the gateway, in front of the real
engine (vLLM serves /v1/messages): miss then hit, JSON and stream, sync and async."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anthropic
import httpx
import pytest

pytestmark = pytest.mark.e2e

HIT_EVENTS = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
]


@pytest.fixture(scope="module")
def client(gateway: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway, api_key="unused", max_retries=0)


def _args(engine: Any, question: str) -> dict[str, Any]:
    return {
        "model": engine.model,
        "max_tokens": 48,
        "system": "Answer in one short sentence.",
        "messages": [{"role": "user", "content": question}],
        "extra_body": {"temperature": 0, "cache": {"namespace": uuid.uuid4().hex}},
    }


def _wait_cached(gateway: str, args: dict[str, Any]) -> None:
    body = {k: v for k, v in args.items() if k != "extra_body"} | args["extra_body"]
    deadline = time.monotonic() + 10
    while (
        httpx.post(
            f"{gateway}/v1/messages", json=body, headers={"cache-control": "only-if-cached"}
        ).status_code
        != 200
    ):
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.05)


def test_json_miss_then_hit(client: anthropic.Anthropic, gateway: str, engine: Any) -> None:
    args = _args(engine, "What is the capital of France?")
    miss = client.messages.with_raw_response.create(**args)
    first = miss.parse()
    assert miss.headers["x-cache"] == "miss"
    assert first.stop_reason == "end_turn" and first.content[0].type == "text"
    _wait_cached(gateway, args)
    hit = client.messages.with_raw_response.create(**args)
    second = hit.parse()
    assert hit.headers["x-cache"] == "hit-exact"
    assert second.content[0].text == first.content[0].text
    assert second.stop_reason == "end_turn" and second.id != first.id
    assert second.usage.input_tokens == first.usage.input_tokens
    assert second.usage.output_tokens == first.usage.output_tokens


def test_stream_miss_then_hit(client: anthropic.Anthropic, gateway: str, engine: Any) -> None:
    args = _args(engine, "What is the capital of Italy?")
    texts, kinds = [], []
    for expected in ("miss", "hit-exact"):
        with client.messages.stream(**args) as stream:
            assert stream.response.headers["x-cache"] == expected
            events = list(stream)
            final = stream.get_final_message()
        kinds.append([e.type for e in events if not e.type.startswith(("text", "content_block_d"))])
        texts.append("".join(e.delta.text for e in events if e.type == "content_block_delta"))  # type: ignore[union-attr]
        assert final.stop_reason == "end_turn" and final.content[0].text == texts[-1]  # type: ignore[union-attr]
        _wait_cached(gateway, args)
    assert texts[0] == texts[1] and texts[0]
    assert kinds[0] == kinds[1]


async def test_async_client(gateway: str, engine: Any) -> None:
    client = anthropic.AsyncAnthropic(base_url=gateway, api_key="unused", max_retries=0)
    args = _args(engine, "What is the capital of Spain?")
    first = await client.messages.create(**args)
    _wait_cached(gateway, args)
    events = [event async for event in await client.messages.create(**args, stream=True)]
    assert [e.type for e in events] == HIT_EVENTS
    assert events[2].delta.text == first.content[0].text


def test_a_missing_max_tokens_is_400(gateway: str, engine: Any) -> None:
    body = {"model": engine.model, "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(f"{gateway}/v1/messages", json=body)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "max_tokens"
