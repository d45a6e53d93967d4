"""What of an Anthropic Messages request the cache keys on, and what of its answer it keeps."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.api.messages_format import MessagesCapture, from_message
from gateway.cache.control import parse_cache_control
from gateway.cache.policy import CacheQuery, cache_query

CONTROL = parse_cache_control(None, None)
BASE: dict[str, Any] = {
    "model": "m",
    "max_tokens": 64,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": "Where is my card?"}],
}


def query(body: dict[str, Any], kind: str = "messages") -> CacheQuery | None:
    return cache_query(kind, body, "tenant", CONTROL)  # type: ignore[arg-type]


def test_spellings_key_alike_and_the_system_prompt_is_in_the_scope() -> None:
    plain = query(BASE)
    blocks = query(
        {
            **BASE,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Where is my card?"}]}
            ],
        }
    )
    assert plain is not None and blocks is not None and plain.text == "Where is my card?"
    assert (plain.scope, plain.exact_key) == (blocks.scope, blocks.exact_key)
    other = query({**BASE, "system": "Be verbose."})
    assert other is not None and other.scope != plain.scope
    chat = query({"model": "m", "max_tokens": 64, "messages": BASE["messages"]}, "chat")
    assert chat is not None and chat.scope != plain.scope


@pytest.mark.parametrize(
    "change",
    [
        {"tools": [{"name": "f", "input_schema": {}}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
        {"messages": [{"role": "assistant", "content": "Hi"}]},
    ],
)
def test_requests_the_cache_stays_out_of(change: dict[str, Any]) -> None:
    assert query({**BASE, **change}) is None


def _message(**fields: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "model": "m",
        "content": [{"type": "text", "text": "In the app."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 9, "output_tokens": 3},
        **fields,
    }


def test_what_is_kept_of_an_answer() -> None:
    kept = from_message(_message())
    assert kept is not None and (kept.text, kept.finish_reason) == ("In the app.", "stop")
    cut = from_message(_message(stop_reason="max_tokens"))
    assert cut is not None and cut.finish_reason == "length"
    assert from_message(_message(stop_reason="tool_use")) is None
    assert from_message(_message(content=[{"type": "tool_use", "name": "f", "input": {}}])) is None


def test_a_stream_is_kept_only_when_it_stopped_cleanly() -> None:
    events = [
        {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 9}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 1},
        },
        {"type": "message_stop"},
    ]
    capture = MessagesCapture()
    for event in events[:-1]:
        capture.feed(json.dumps(event).encode())
    assert capture.answer() is None  # no message_stop yet
    capture.feed(json.dumps(events[-1]).encode())
    answer = capture.answer()
    assert answer is not None and (answer.text, answer.prompt_tokens) == ("Hi", 9)
    broken = MessagesCapture()
    for event in [events[0], {"type": "error", "error": {}}, *events[1:]]:
        broken.feed(json.dumps(event).encode())
    assert broken.answer() is None
