"""Every answer the gateway sends, checked against OpenAI's published schemas (vendored from
openai/openai-openapi, see vendor_openai_schemas.py): chat completions and each of their chunks,
completions, Responses objects and each stream event, the model list, stored responses and
errors; cache misses (the real engine's answers, normalised) and hits (the gateway's replays)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.wire.openai_schema import check, check_event, completion_chunk

pytestmark = pytest.mark.e2e

TIMEOUT = 120.0


def _namespace() -> dict[str, Any]:
    return {"namespace": uuid.uuid4().hex}


def _post(url: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(url, json=body, headers=headers, timeout=TIMEOUT)


def _sse(url: str, body: dict[str, Any]) -> tuple[str, list[tuple[str | None, Any]]]:
    """(x-cache, [(event name, parsed data)]); ``[DONE]`` is kept as the string."""
    events: list[tuple[str | None, Any]] = []
    with httpx.stream("POST", url, json=body, timeout=TIMEOUT) as response:
        assert response.status_code == 200, response.read()
        cache = response.headers["x-cache"]
        name: str | None = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
                events.append((name, data if data == "[DONE]" else json.loads(data)))
                name = None
    return cache, events


def _until_cached(url: str, body: dict[str, Any]) -> None:
    """The answer is stored just after it was sent: wait until it is there."""
    probe, deadline = {**body, "stream": False}, time.monotonic() + 10
    while _post(url, probe, **{"cache-control": "only-if-cached"}).status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError("the answer was never stored")
        time.sleep(0.05)


def _miss_then_hit_json(url: str, body: dict[str, Any]) -> list[httpx.Response]:
    miss = _post(url, body)
    assert miss.status_code == 200 and miss.headers["x-cache"] == "miss", miss.text
    _until_cached(url, body)
    hit = _post(url, body)
    assert hit.headers["x-cache"] == "hit-exact"
    return [miss, hit]


def test_model_list(gateway: str) -> None:
    check("ListModelsResponse", httpx.get(f"{gateway}/v1/models").json())


def test_chat_completion_miss_and_hit(gateway: str, engine: Any) -> None:
    body = {
        "model": engine.model,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 32,
        "stop": ["."],
        "temperature": 0,
        "cache": _namespace(),
    }
    for reply in _miss_then_hit_json(f"{gateway}/v1/chat/completions", body):
        check("CreateChatCompletionResponse", reply.json())


@pytest.mark.parametrize("include_usage", [False, True])
def test_every_chat_chunk_miss_and_hit(gateway: str, engine: Any, include_usage: bool) -> None:
    body = {
        "model": engine.model,
        "messages": [{"role": "user", "content": "What is the capital of Spain?"}],
        "max_tokens": 32,
        "stop": ["."],
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": include_usage},
        "cache": _namespace(),
    }
    url = f"{gateway}/v1/chat/completions"
    seen = []
    for _ in range(2):
        cache, events = _sse(url, body)
        seen.append(cache)
        assert events[-1] == (None, "[DONE]")
        for _, chunk in events[:-1]:
            check("CreateChatCompletionStreamResponse", chunk)
        assert any(chunk.get("usage") for _, chunk in events[:-1]) == include_usage
        _until_cached(url, body)
    assert seen == ["miss", "hit-exact"]


def test_completion_miss_and_hit_json_and_stream(gateway: str, engine: Any) -> None:
    url = f"{gateway}/v1/completions"
    body = {
        "model": engine.model,
        "prompt": "The capital of France is",
        "max_tokens": 16,
        "stop": ["."],
        "temperature": 0,
        "cache": _namespace(),
    }
    for reply in _miss_then_hit_json(url, body):
        check("CreateCompletionResponse", reply.json())
    streamed = {**body, "stream": True, "cache": _namespace()}
    for expected in ("miss", "hit-exact"):
        cache, events = _sse(url, streamed)
        assert cache == expected and events[-1] == (None, "[DONE]")
        for _, chunk in events[:-1]:
            check("CreateCompletionResponse", completion_chunk(chunk))
        _until_cached(url, streamed)


def test_responses_miss_and_hit_json_and_stream(gateway: str, engine: Any) -> None:
    url = f"{gateway}/v1/responses"
    body = {
        "model": engine.model,
        "instructions": "Answer in one short sentence.",
        "input": "What is the capital of Italy?",
        "max_output_tokens": 48,
        "temperature": 0,
        "cache": _namespace(),
    }
    made = _miss_then_hit_json(url, body)
    for reply in made:
        check("Response", reply.json())
    streamed = {**body, "stream": True, "cache": _namespace()}
    for expected in ("miss", "hit-exact"):
        cache, events = _sse(url, streamed)
        assert cache == expected
        for name, event in events:
            check_event(event)
            assert name == event["type"]  # the SSE event name, as OpenAI writes it
        assert events[-1][1]["type"] == "response.completed"
        _until_cached(url, streamed)
    stored = made[0].json()["id"]
    check("Response", httpx.get(f"{url}/{stored}").json())
    follow = {"model": engine.model, "input": "Why?", "previous_response_id": stored}
    followed = _post(url, {**follow, "max_output_tokens": 8})
    check("Response", followed.json())
    listed = httpx.get(f"{url}/{followed.json()['id']}/input_items").json()
    assert [item["role"] for item in listed["data"]] == ["user", "assistant", "user"]
    check("ResponseItemList", listed)


def test_errors(gateway: str, engine: Any) -> None:
    chat = f"{gateway}/v1/chat/completions"
    question = [{"role": "user", "content": "hi"}]
    replies = [
        _post(chat, {"model": engine.model, "messages": []}),  # the gateway's 400
        _post(chat, {"model": "no-such-model", "messages": question}),  # 404
        _post(chat, {"model": engine.model, "messages": question, "top_k": -5}),  # the engine's
        _post(f"{gateway}/v1/responses", {"model": engine.model, "input": 5}),
        _post(
            f"{gateway}/v1/responses",
            {"model": engine.model, "input": "hi", "previous_response_id": "resp_nope"},
        ),
        httpx.get(f"{gateway}/v1/responses/resp_nope"),
        httpx.post(f"{gateway}/v1/completions", content=b"{", timeout=TIMEOUT),
    ]
    assert [r.status_code for r in replies] == [400, 404, 400, 400, 404, 404, 400]
    for reply in replies:
        check("ErrorResponse", reply.json())
