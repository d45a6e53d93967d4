"""The Responses API's parts that need no engine: what is captured from a response, how a
follow-up's input is built, and the gateway's store of responses (tenants, bounds, expiry)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway import responses_input
from gateway.api.responses_format import ResponsesCapture, from_response
from gateway.api.responses_replay import as_events, event_bytes, response_object
from gateway.cache.entry import CachedAnswer
from gateway.responses_state import MemoryResponseStore, ResponsesConfig, StoredResponse


def _response(text: str = "Paris.", **fields: Any) -> dict[str, Any]:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1700000000,
        "model": "m",
        "status": "completed",
        "output": [message],
        "usage": {"input_tokens": 7, "output_tokens": 2},
        **fields,
    }


def test_a_completed_text_response_is_captured() -> None:
    answer = from_response(_response())
    assert answer is not None
    assert (answer.text, answer.finish_reason, answer.prompt_tokens, answer.completion_tokens) == (
        "Paris.",
        "stop",
        7,
        2,
    )
    cut = from_response(
        _response(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    )
    assert cut is not None and cut.finish_reason == "length"


@pytest.mark.parametrize(
    "change",
    [
        {"status": "failed"},
        {"status": "incomplete", "incomplete_details": {"reason": "content_filter"}},
        {"output": []},
        {"output": [{"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"}]},
        {"output": [{"type": "reasoning", "summary": []}, _response()["output"][0]]},
        {
            "output": [
                {**_response()["output"][0], "content": [{"type": "refusal", "refusal": "no"}]}
            ]
        },
    ],
)
def test_anything_else_is_not(change: dict[str, Any]) -> None:
    assert from_response({**_response(), **change}) is None
    assert from_response(_response(text="")) is None


def test_a_stream_is_captured_only_when_it_completed() -> None:
    done = {"type": "response.completed", "response": _response(), "sequence_number": 3}
    capture = ResponsesCapture()
    capture.feed(json.dumps({"type": "response.output_text.delta", "delta": "Paris."}).encode())
    assert capture.answer() is None
    capture.feed(json.dumps(done).encode())
    assert capture.answer() is not None
    broken = ResponsesCapture()
    broken.feed(json.dumps({"type": "error", "message": "boom"}).encode())
    broken.feed(json.dumps(done).encode())
    assert broken.answer() is None


def test_replayed_events_carry_the_answer_in_order() -> None:
    answer = CachedAnswer("Paris.", "stop", "m", 7, 2, 1700000000.0)
    events = list(as_events({"model": "m"}, answer))
    assert [e["sequence_number"] for e in events] == list(range(9))
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Paris."
    assert events[0]["response"]["id"] == events[-1]["response"]["id"]
    assert event_bytes(events[0]).startswith(b"event: response.created\ndata: {")
    cut = CachedAnswer("Par", "length", "m", 7, 2, 1700000000.0)
    last = list(as_events({"model": "m"}, cut))[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response_object({"model": "m"}, cut)["status"] == "incomplete"


def test_a_follow_up_gets_the_previous_output_as_assistant_messages() -> None:
    output = [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        _response("Paris.")["output"][0],
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
    ]
    assert responses_input.output_as_input(output) == [
        {"role": "assistant", "content": "Paris."},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
    ]


def test_chat_messages_for_counting() -> None:
    body = {
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "No jokes."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"},
            {"type": "function_call_output", "call_id": "c", "output": "42"},
        ],
    }
    assert responses_input.chat_messages(body) == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "No jokes."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "f({})"},
        {"role": "tool", "content": "42"},
    ]


async def test_the_store_keeps_tenants_apart_and_forgets_when_asked() -> None:
    store = MemoryResponseStore()
    stored = StoredResponse(_response(), [{"role": "user", "content": "Capital of France?"}])
    await store.put("acme", stored)
    assert await store.get("acme", "resp_1") == stored
    assert await store.get("other", "resp_1") is None
    assert not await store.delete("other", "resp_1")
    assert await store.delete("acme", "resp_1")
    assert await store.get("acme", "resp_1") is None


async def test_the_store_is_bounded_least_recently_used_first() -> None:
    store = MemoryResponseStore(ResponsesConfig(store_max_entries=2))
    for n in range(3):
        await store.put("t", StoredResponse(_response(id=f"resp_{n}"), []))
        if n == 1:
            await store.get("t", "resp_0")  # used: resp_1 is now the oldest
    assert len(store) == 2
    assert await store.get("t", "resp_1") is None
    assert await store.get("t", "resp_0") is not None

    one = len(json.dumps([_response(id="resp_0"), []], separators=(",", ":")))
    small = MemoryResponseStore(ResponsesConfig(store_max_bytes=2 * one + 1))
    for n in range(5):
        await small.put("t", StoredResponse(_response(id=f"resp_{n}"), []))
    assert len(small) == 2


async def test_stored_responses_expire() -> None:
    now = [0.0]
    store = MemoryResponseStore(ResponsesConfig(store_ttl_s=10), clock=lambda: now[0])
    await store.put("t", StoredResponse(_response(), []))
    now[0] = 9.0
    assert await store.get("t", "resp_1") is not None
    now[0] = 10.5
    assert await store.get("t", "resp_1") is None
    assert len(store) == 0
