"""A cached answer, replayed in OpenAI's wire format: a JSON body or an SSE stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from gateway.api import sse
from gateway.cache.entry import CachedAnswer
from gateway.cache.policy import Kind


def _usage(answer: CachedAnswer) -> dict[str, int]:
    total = answer.prompt_tokens + answer.completion_tokens
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": total,
    }


def _envelope(kind: Kind, model: str, *, chunk: bool) -> dict[str, Any]:
    if kind == "chat":
        object_name = "chat.completion.chunk" if chunk else "chat.completion"
        prefix = "chatcmpl"
    else:
        object_name, prefix = "text_completion", "cmpl"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": object_name,
        "created": int(time.time()),
        "model": model,
    }


def as_json(kind: Kind, answer: CachedAnswer, model: str) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": answer.finish_reason}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": answer.text, "tool_calls": []}
    else:
        choice["text"] = answer.text
    return {**_envelope(kind, model, chunk=False), "choices": [choice], "usage": _usage(answer)}


def as_events(kind: Kind, answer: CachedAnswer, model: str, include_usage: bool) -> Iterator[bytes]:
    """The chunks vLLM would have sent: role, content, finish, optional usage, [DONE]."""
    envelope = _envelope(kind, model, chunk=True)

    def chunk(delta_or_text: Any, finish: str | None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
        if kind == "chat":
            choice["delta"] = delta_or_text
        else:
            choice["text"] = delta_or_text
        return sse.event({**envelope, "choices": [choice]})

    if kind == "chat":
        yield chunk({"role": "assistant", "content": ""}, None)
        yield chunk({"content": answer.text}, None)
        yield chunk({}, answer.finish_reason)
    else:
        yield chunk(answer.text, None)
        yield chunk("", answer.finish_reason)
    if include_usage:
        yield sse.event({**envelope, "choices": [], "usage": _usage(answer)})
    yield sse.event(sse.DONE)
