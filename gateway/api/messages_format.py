"""Anthropic's Messages API on the wire (``POST /v1/messages``, which vLLM also serves): the
engine's JSON and its typed event stream, and a cached answer replayed in the same shapes.

What the cache keeps: a message whose content blocks are all text and whose ``stop_reason`` is
``end_turn`` or ``stop_sequence`` (finish "stop"; replayed as ``end_turn``) or ``max_tokens``
(finish "length"). A stream is complete at its ``message_stop`` event. The stream replayed is
``message_start``, ``content_block_start``, ``content_block_delta``, ``content_block_stop``,
``message_delta`` (stop reason and usage), ``message_stop``, each as ``event: <type>``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from gateway.api.formats import Capture, WireFormat
from gateway.api.responses_format import parse_event
from gateway.api.responses_replay import event_bytes
from gateway.cache.entry import CachedAnswer

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
_STOP_REASON = {"stop": "end_turn", "length": "max_tokens"}


def _answer(text: Any, stop_reason: Any, model: Any, usage: Any) -> CachedAnswer | None:
    finish = _FINISH.get(str(stop_reason))
    if finish is None or not isinstance(text, str) or not text:
        return None
    usage = usage if isinstance(usage, dict) else {}
    return CachedAnswer(
        text=text,
        finish_reason=finish,
        model=str(model or ""),
        prompt_tokens=int(usage.get("input_tokens") or 0),
        completion_tokens=int(usage.get("output_tokens") or 0),
        created=time.time(),
    )


def from_message(body: Any) -> CachedAnswer | None:
    """The cacheable answer in a Messages API response, or None."""
    if not isinstance(body, dict) or body.get("type") != "message":
        return None
    blocks = body.get("content")
    if not isinstance(blocks, list) or not blocks:
        return None
    if not all(isinstance(b, dict) and b.get("type") == "text" for b in blocks):
        return None
    text = "".join(str(b.get("text", "")) for b in blocks)
    return _answer(text, body.get("stop_reason"), body.get("model"), body.get("usage"))


class MessagesCapture:
    """Reads text deltas, the stop reason and usage off a relayed Messages event stream."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._stop: Any = None
        self._model: Any = None
        self._usage: dict[str, Any] = {}
        self._done = self._spoiled = False

    def feed(self, data: bytes) -> bool:
        event = parse_event(data) or {"type": "error"}
        kind = event.get("type")
        if kind == "error":
            self._spoiled = True
        elif kind == "message_start":
            message = event.get("message") or {}
            self._model = message.get("model")
            self._usage.update(message.get("usage") or {})
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") != "text_delta" or event.get("index", 0) != 0:
                self._spoiled = True  # tool input, thinking, a second block: not kept
            self._parts.append(str(delta.get("text", "")))
        elif kind == "message_delta":
            self._stop = (event.get("delta") or {}).get("stop_reason")
            self._usage.update(event.get("usage") or {})
        elif kind == "message_stop":
            self._done = True
        return False

    def answer(self) -> CachedAnswer | None:
        if not self._done or self._spoiled:
            return None
        return _answer("".join(self._parts), self._stop, self._model, self._usage)


class MessagesFormat(WireFormat):
    """``POST /v1/messages``. Anthropic's schema is not normalised here: passed on as sent."""

    limit_fields = ("max_tokens",)

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__("messages", body)
        self._memo: tuple[bytes, dict[str, Any] | None] = (b"", None)

    def _event(self, data: bytes) -> dict[str, Any] | None:
        if self._memo[0] is not data:
            self._memo = (data, parse_event(data))
        return self._memo[1]

    def _type(self, data: bytes) -> Any:
        event = self._event(data)
        return event.get("type") if event else None

    def count_body(self, body: dict[str, Any]) -> dict[str, Any]:
        system = body.get("system")
        if isinstance(system, list):
            system = "\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
        head = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
        return {"messages": head + list(body.get("messages") or [])}

    def upstream_body(self, body: dict[str, Any], storable: bool) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != "cache"}

    def from_body(self, body: dict[str, Any]) -> CachedAnswer | None:
        return from_message(body)

    def stream_capture(self) -> Capture:
        return MessagesCapture()

    def is_last(self, data: bytes) -> bool:
        return self._type(data) == "message_stop"

    def is_content(self, data: bytes, usage_only: bool) -> bool:
        return self._type(data) == "content_block_delta"

    def output_tokens(self, data: bytes, usage_only: bool) -> int:
        event = self._event(data)
        if not event or event.get("type") != "message_delta":
            return 0
        tokens = (event.get("usage") or {}).get("output_tokens")
        return tokens if isinstance(tokens, int) else 0

    def hidden(self, data: bytes, usage_only: bool) -> bool:
        return False

    def relay_json(self, body: Any) -> Any:
        return body

    def relay_event(self, data: bytes) -> bytes:
        event = self._event(data)
        return event_bytes(event) if event else b"data: " + data + b"\n\n"

    def error_event(self, message: str) -> bytes:
        return event_bytes({"type": "error", "error": {"type": "api_error", "message": message}})

    def _message(self, answer: CachedAnswer, *, done: bool) -> dict[str, Any]:
        usage = {"input_tokens": answer.prompt_tokens, "output_tokens": 0}
        if done:
            usage["output_tokens"] = answer.completion_tokens
        return {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [{"type": "text", "text": answer.text}] if done else [],
            "stop_reason": _STOP_REASON.get(answer.finish_reason) if done else None,
            "stop_sequence": None,
            "usage": usage,
        }

    def replay_json(self, answer: CachedAnswer) -> dict[str, Any]:
        return self._message(answer, done=True)

    def replay_events(self, answer: CachedAnswer) -> Iterator[bytes]:
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": self._message(answer, done=False)},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": answer.text},
            },
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": _STOP_REASON.get(answer.finish_reason),
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": answer.completion_tokens},
            },
            {"type": "message_stop"},
        ]
        return iter([event_bytes(event) for event in events])
