"""A cached answer replayed as a Responses API response: the JSON object, or its stream of typed
events, with the fields and event order OpenAI sends.

The stream is ``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta``, ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done`` and ``response.completed`` (or
``response.incomplete`` for an answer cut by ``max_output_tokens``), each written as
``event: <type>`` + ``data: <json>`` with a ``sequence_number`` counting from 0.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from gateway.cache.entry import CachedAnswer


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def event_bytes(event: dict[str, Any]) -> bytes:
    """One SSE event as OpenAI writes Responses events: its type as the event name."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event.get('type', 'message')}\ndata: {data}\n\n".encode()


def _usage(answer: CachedAnswer) -> dict[str, Any]:
    return {
        "input_tokens": answer.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": answer.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(message_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def response_object(
    body: dict[str, Any],
    answer: CachedAnswer,
    *,
    response_id: str | None = None,
    message_id: str | None = None,
    created_at: int | None = None,
    done: bool = True,
) -> dict[str, Any]:
    """The response object; ``done=False`` gives the in-progress one that opens a stream."""
    created_at = int(time.time()) if created_at is None else created_at
    incomplete = answer.finish_reason == "length"
    status = ("incomplete" if incomplete else "completed") if done else "in_progress"
    output = [_message(message_id or new_id("msg"), answer.text, "completed")] if done else []
    return {
        "id": response_id or new_id("resp"),
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if done and not incomplete else None,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if done and incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": _usage(answer) if done else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def as_events(body: dict[str, Any], answer: CachedAnswer) -> Iterator[dict[str, Any]]:
    """The typed events of a streamed response, in OpenAI's order (dicts; see event_bytes)."""
    response_id, message_id = new_id("resp"), new_id("msg")
    created_at = int(time.time())
    opening = response_object(
        body, answer, response_id=response_id, created_at=created_at, done=False
    )
    where = {"item_id": message_id, "output_index": 0, "content_index": 0}
    final_type = "response.incomplete" if answer.finish_reason == "length" else "response.completed"
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": opening},
        {"type": "response.in_progress", "response": opening},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": _message(message_id, None, "in_progress"),
        },
        {"type": "response.content_part.added", **where, "part": _text_part("")},
        {"type": "response.output_text.delta", **where, "delta": answer.text, "logprobs": []},
        {"type": "response.output_text.done", **where, "text": answer.text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": _text_part(answer.text)},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": _message(message_id, answer.text, "completed"),
        },
        {
            "type": final_type,
            "response": response_object(
                body,
                answer,
                response_id=response_id,
                message_id=message_id,
                created_at=created_at,
            ),
        },
    ]
    for number, event in enumerate(events):
        yield {**event, "sequence_number": number}
