"""Engine answers with the nulls and gaps seen from engines, normalised: they then conform to
OpenAI's schema, and the vendor fields an engine adds are still there."""

from __future__ import annotations

import copy
from typing import Any

from gateway.api import normalize
from tests.wire.openai_schema import check, check_event, errors

USAGE_WITH_NULLS = {
    "prompt_tokens": 5,
    "completion_tokens": 2,
    "total_tokens": 7,
    "prompt_tokens_details": None,
    "completion_tokens_details": None,
}


def _chat() -> dict[str, Any]:
    message = {
        "role": "assistant",
        "content": "Paris.",
        "annotations": None,
        "function_call": None,
        "tool_calls": None,
        "reasoning_content": None,  # vLLM's own field
    }
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": dict(USAGE_WITH_NULLS),
        "kv_transfer_params": None,  # vLLM's own field
    }


def test_a_chat_completion_with_engine_nulls_conforms_after() -> None:
    raw = _chat()
    assert errors("CreateChatCompletionResponse", raw)  # as the engine sent it: it does not
    fixed = normalize.answer("chat", copy.deepcopy(raw))
    check("CreateChatCompletionResponse", fixed)
    message = fixed["choices"][0]["message"]
    assert message["refusal"] is None and "annotations" not in message
    assert "reasoning_content" in message and "kv_transfer_params" in fixed  # vendor fields kept


def test_a_chunk_and_a_completion_with_engine_nulls_conform_after() -> None:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {"content": "Pa", "function_call": None, "tool_calls": None},
                "finish_reason": None,
            }
        ],
        "usage": dict(USAGE_WITH_NULLS),
    }
    assert errors("CreateChatCompletionStreamResponse", chunk)
    check("CreateChatCompletionStreamResponse", normalize.chunk("chat", chunk))
    completion = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "text": " Paris", "finish_reason": "stop", "logprobs": None}],
        "usage": dict(USAGE_WITH_NULLS),
    }
    assert errors("CreateCompletionResponse", completion)
    check("CreateCompletionResponse", normalize.answer("completion", completion))


def test_a_vllm_response_object_conforms_after() -> None:
    part: dict[str, Any] = {
        "type": "output_text",
        "text": "Paris.",
        "annotations": [],
        "logprobs": None,
    }
    response = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "m",
        "status": "completed",
        "incomplete_details": None,
        "instructions": None,
        "metadata": None,
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [part],
                "phase": None,
            }
        ],
        "parallel_tool_calls": True,
        "temperature": 0.0,
        "tool_choice": "none",
        "tools": [],
        "top_p": 1.0,
        "text": None,
        "user": None,
        "usage": None,
        "kv_transfer_params": None,
    }
    assert errors("Response", response)
    fixed = normalize.response(copy.deepcopy(response))
    check("Response", fixed)
    assert "kv_transfer_params" in fixed
    event = {"type": "response.content_part.done", "item_id": "msg_1", "sequence_number": 4}
    event.update(output_index=0, content_index=0, part=dict(part))
    check_event(normalize.response_event(event))


def test_model_cards_get_the_required_fields() -> None:
    configured = normalize.model_card({"id": "m", "object": "model", "owned_by": "gateway"})
    engine = normalize.model_card({"id": "m", "created": 5, "owned_by": "vllm", "root": "/x"})
    check("ListModelsResponse", {"object": "list", "data": [configured, engine]})
    assert engine["created"] == 5 and engine["root"] == "/x"


def test_a_stream_that_ran_out_of_tokens_ends_with_response_incomplete() -> None:
    cut = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "m",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [],
    }
    event = {"type": "response.completed", "response": cut, "sequence_number": 9}
    fixed = normalize.response_event(event, {"model": "m", "temperature": 0})
    assert fixed["type"] == "response.incomplete"
    assert fixed["response"]["temperature"] == 0
    check_event(fixed)
