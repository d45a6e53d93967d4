"""What of a Responses API request the cache keys on, and which requests it stays out of."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.cache.control import parse_cache_control
from gateway.cache.policy import CacheQuery, cache_query

CONTROL = parse_cache_control(None, None)
BASE: dict[str, Any] = {"model": "m", "input": "Where is my card?", "temperature": 0}


def query(body: dict[str, Any], kind: str = "responses") -> CacheQuery | None:
    return cache_query(kind, body, "tenant", CONTROL)  # type: ignore[arg-type]


def test_string_input_and_equivalent_item_spellings_key_alike() -> None:
    plain = query(BASE)
    assert plain is not None and plain.text == "Where is my card?"
    for spelled in (
        [{"role": "user", "content": "Where is my card?"}],
        [{"type": "message", "role": "user", "content": "Where is my card?"}],
        [{"role": "user", "content": [{"type": "input_text", "text": "Where is my card?"}]}],
    ):
        other = query({**BASE, "input": spelled})
        assert other is not None
        assert (other.scope, other.exact_key) == (plain.scope, plain.exact_key)


@pytest.mark.parametrize(
    "change",
    [
        {"instructions": "Be brief."},
        {"max_output_tokens": 10},
        {"temperature": 1},
        {"text": {"format": {"type": "json_object"}}},
        {"reasoning": {"effort": "high"}},
        {
            "input": [
                {"role": "user", "content": "Hi"},
                {"role": "user", "content": "Where is my card?"},
            ]
        },
    ],
)
def test_what_changes_the_answer_changes_the_scope(change: dict[str, Any]) -> None:
    plain, changed = query(BASE), query({**BASE, **change})
    assert plain is not None and changed is not None
    assert changed.scope != plain.scope


@pytest.mark.parametrize(
    "change", [{"store": False}, {"stream": True}, {"metadata": {"a": "b"}}, {"user": "u1"}]
)
def test_transport_and_bookkeeping_fields_do_not(change: dict[str, Any]) -> None:
    plain, changed = query(BASE), query({**BASE, **change})
    assert plain is not None and changed is not None
    assert changed.scope == plain.scope


@pytest.mark.parametrize(
    "change",
    [
        {"previous_response_id": "resp_1"},
        {"conversation": "conv_1"},
        {"background": True},
        {"tools": [{"type": "function", "name": "f", "parameters": {}}]},
        {"include": ["message.output_text.logprobs"]},
        {"top_logprobs": 2},
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
        {"input": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]},
        {"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]},
        {"input": "   "},
        {"input": []},
    ],
)
def test_requests_the_cache_stays_out_of(change: dict[str, Any]) -> None:
    assert query({**BASE, **change}) is None


def test_chat_and_responses_never_share_a_scope() -> None:
    responses = query({**BASE, "instructions": "Be brief."})
    chat = query(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Where is my card?"},
            ],
            "temperature": 0,
        },
        kind="chat",
    )
    assert responses is not None and chat is not None
    assert responses.scope != chat.scope and responses.text == chat.text
