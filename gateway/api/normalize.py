"""What an engine answered, made to conform to OpenAI's published schema before it is relayed.

Engines (vLLM among them) write ``null`` where OpenAI's schema wants an object or an array, or
leave out fields it requires (a chat message's ``refusal``). Clients generated from the schema,
and strict validators, trip over both. The fix is the least change that conforms: a ``null``
where the schema allows no ``null`` is dropped (the field is optional there), a required field
that is missing is added with the value OpenAI sends when it has nothing to say. Every other
field, the vendor fields an engine adds included (vLLM's ``reasoning_content``,
``prompt_logprobs``, ``kv_transfer_params``, ...), is passed on unchanged. The same rules apply
to hits and misses; tests/wire checks both against the vendored schema.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from gateway.cache.policy import Kind

# Fields that are objects or arrays in the schema, never null: dropped when an engine sends null.
_MESSAGE_NOT_NULL = ("annotations", "function_call", "tool_calls")
_USAGE_NOT_NULL = ("completion_tokens_details", "prompt_tokens_details")
_RESPONSE_NOT_NULL = (
    "metadata",
    "text",
    "prompt",
    "reasoning",
    "tools",
    "conversation",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "usage",
)
_RESPONSE_USAGE_NOT_NULL = ("input_tokens_details", "output_tokens_details")


_STARTED = int(time.time())


def model_card(card: dict[str, Any]) -> dict[str, Any]:
    """A /v1/models entry: ``created`` and ``owned_by`` are required. A model named only in
    the gateway's configuration (or by an engine that leaves them out) gets the gateway's start
    time and ``"gateway"``."""
    defaults: dict[str, Any] = {"object": "model", "created": _STARTED, "owned_by": "gateway"}
    return {**defaults, **{k: v for k, v in card.items() if v is not None or k not in defaults}}


def _drop_nulls(obj: Any, keys: Iterable[str]) -> None:
    if isinstance(obj, dict):
        for key in keys:
            if key in obj and obj[key] is None:
                del obj[key]


def _usage(usage: Any) -> None:
    _drop_nulls(usage, _USAGE_NOT_NULL)


def answer(kind: Kind, body: Any) -> Any:
    """A chat completion or text completion (JSON), normalised in place and returned."""
    if not isinstance(body, dict):
        return body
    for choice in body.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if kind == "chat" and isinstance(message, dict):
            _drop_nulls(message, _MESSAGE_NOT_NULL)
            message.setdefault("refusal", None)
        choice.setdefault("logprobs", None)
    _usage(body.get("usage"))
    return body


def chunk(kind: Kind, data: Any) -> Any:
    """One streamed chunk, normalised in place and returned."""
    if not isinstance(data, dict) or "error" in data:
        return data
    for choice in data.get("choices") or []:
        if isinstance(choice, dict) and kind == "chat":
            _drop_nulls(choice.get("delta"), _MESSAGE_NOT_NULL)
    _usage(data.get("usage"))
    return data


def chunk_bytes(kind: Kind, data: bytes) -> bytes:
    """A chunk's SSE payload, normalised; passed on unchanged when it is not JSON."""
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data
    return json.dumps(chunk(kind, parsed), separators=(",", ":"), ensure_ascii=False).encode()


def response(obj: Any, request: dict[str, Any] | None = None) -> Any:
    """A Responses API ``response`` object, normalised in place and returned. Required fields
    an engine left out are filled from the ``request`` when it set them, else with OpenAI's
    default (``null`` where the schema allows it)."""
    if not isinstance(obj, dict):
        return obj
    asked = request or {}
    _drop_nulls(obj, _RESPONSE_NOT_NULL)
    for key in ("instructions", "temperature", "top_p"):
        obj.setdefault(key, asked.get(key))
    obj.setdefault("parallel_tool_calls", asked.get("parallel_tool_calls", True))
    obj.setdefault("tool_choice", asked.get("tool_choice") or "auto")
    obj.setdefault("metadata", asked.get("metadata") or {})
    obj.setdefault("tools", [])
    obj.setdefault("error", None)
    obj.setdefault("incomplete_details", None)
    usage = obj.get("usage")
    _drop_nulls(usage, _RESPONSE_USAGE_NOT_NULL)
    if isinstance(usage, dict):
        usage.setdefault("input_tokens_details", {"cached_tokens": 0})
        usage["input_tokens_details"].setdefault("cached_tokens", 0)
        usage["input_tokens_details"].setdefault("cache_write_tokens", 0)
        usage.setdefault("output_tokens_details", {"reasoning_tokens": 0})
        usage["output_tokens_details"].setdefault("reasoning_tokens", 0)
    for item in obj.get("output") or []:
        output_item(item)
    return obj


def output_item(item: Any) -> Any:
    """One output item (a message, a tool call, ...) of a response, normalised in place."""
    if isinstance(item, dict) and item.get("type") == "message":
        for part in item.get("content") or []:
            if isinstance(part, dict) and part.get("type") == "output_text":
                if part.get("annotations") is None:
                    part["annotations"] = []
                if part.get("logprobs") is None:
                    part["logprobs"] = []
    return item


def response_event(event: Any, request: dict[str, Any] | None = None) -> Any:
    """One Responses stream event, normalised in place and returned."""
    if not isinstance(event, dict):
        return event
    if isinstance(event.get("response"), dict):
        response(event["response"], request)
        status = event["response"].get("status")
        if event.get("type") == "response.completed" and status in ("incomplete", "failed"):
            event["type"] = f"response.{status}"  # vLLM ends every stream with "completed"
    if isinstance(event.get("item"), dict):
        output_item(event["item"])
    part = event.get("part")
    if isinstance(part, dict) and part.get("type") == "output_text":
        output_item({"type": "message", "content": [part]})
    return event
