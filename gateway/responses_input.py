"""The Responses API's ``instructions`` + ``input``, read as a conversation.

A Responses request carries its prompt as ``input``: a string (one user message) or a list of
items: messages (``{"role", "content"}``, ``type: "message"`` optional; content a string or a
list of parts such as ``input_text``), and items such as ``function_call`` or
``function_call_output``. ``instructions`` is a system (developer) message that goes first.

Used by the cache policy (query text and scope context), by the request path (counting prompt
tokens the way the engine renders them) and by the gateway's response state (a follow-up's
``previous_response_id`` expanded into explicit input items). Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})


def input_items(body: Mapping[str, Any]) -> list[Any] | None:
    """``input`` as a list of items (a string is one user message); None if malformed."""
    given = body.get("input")
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    if isinstance(given, list):
        return list(given)
    return None


def is_message(item: Any) -> bool:
    return (
        isinstance(item, Mapping)
        and item.get("type", "message") == "message"
        and isinstance(item.get("role"), str)
    )


def content_text(content: Any, part_types: Collection[str] = TEXT_PART_TYPES) -> str | None:
    """The text of a message content that holds only text (string or parts of ``part_types``),
    else None. Parts are joined by newlines, as vLLM renders chat content lists."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        return None
    texts: list[str] = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") not in part_types:
            return None
        text = part.get("text")
        if not isinstance(text, str):
            return None
        texts.append(text)
    return "\n".join(texts)


def normalized_item(item: Any) -> Any:
    """One input item in a canonical spelling for keying: the default ``type: "message"``
    dropped and text-only content written as its text, so equivalent spellings key alike."""
    if not is_message(item):
        return item
    normalized = {key: value for key, value in item.items() if key != "type"}
    text = content_text(item.get("content"))
    if text is not None:
        normalized["content"] = text
    return normalized


def chat_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request as chat messages, as vLLM renders it for the model: instructions first,
    then each message; tool calls and their outputs written as text (token counting only)."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for item in input_items(body) or []:
        if is_message(item):
            role = "system" if item["role"] == "developer" else item["role"]
            text = content_text(item.get("content"))
            messages.append({"role": role, "content": text if text is not None else ""})
        elif isinstance(item, Mapping) and item.get("type") == "function_call":
            call = f"{item.get('name', '')}({item.get('arguments', '')})"
            messages.append({"role": "assistant", "content": call})
        elif isinstance(item, Mapping) and item.get("type") == "function_call_output":
            messages.append({"role": "tool", "content": str(item.get("output", ""))})
    return messages


def output_as_input(output: Any) -> list[Any]:
    """A response's ``output`` items as input items of a follow-up: assistant messages become
    ``{"role": "assistant", "content": text}`` (accepted by every engine), tool calls are kept
    as they are (a follow-up's ``function_call_output`` refers to them), reasoning is dropped
    (OpenAI also leaves it out of a stateless follow-up unless it was asked to include it)."""
    items: list[Any] = []
    for item in output if isinstance(output, list) else []:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if kind == "message":
            text = "".join(
                str(part.get("text", ""))
                for part in item.get("content") or []
                if isinstance(part, Mapping) and part.get("type") == "output_text"
            )
            items.append({"role": "assistant", "content": text})
        elif kind in ("function_call", "custom_tool_call"):
            items.append(dict(item))
    return items
