"""The Responses API on the wire: the engine's ``/v1/responses`` JSON and typed event stream.

What the cache keeps of a response: only a complete single text answer: ``status`` completed
(finish "stop") or incomplete for ``max_output_tokens`` (finish "length"), one assistant
``message`` output item whose parts are all ``output_text``, no tool calls or reasoning items.
A stream is complete when its ``response.completed`` (or ``response.incomplete``) event came;
the answer is read from the response object that event carries.

Every response that leaves the gateway (miss, hit, JSON or stream) is handed to
``on_response`` once, complete: the route uses it to keep the conversation state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from gateway import responses_input
from gateway.api import normalize
from gateway.api.formats import Capture, WireFormat
from gateway.api.responses_replay import as_events, event_bytes, response_object
from gateway.cache.entry import CachedAnswer

FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def from_response(obj: Any) -> CachedAnswer | None:
    """The cacheable answer in a response object, or None."""
    if not isinstance(obj, dict):
        return None
    status, details = obj.get("status"), obj.get("incomplete_details") or {}
    if status == "completed":
        finish = "stop"
    elif status == "incomplete" and details.get("reason") == "max_output_tokens":
        finish = "length"
    else:
        return None
    output = obj.get("output")
    if not isinstance(output, list) or len(output) != 1 or not isinstance(output[0], dict):
        return None
    message = output[0]
    if message.get("type") != "message" or message.get("role") != "assistant":
        return None
    parts = message.get("content")
    if not isinstance(parts, list) or not parts:
        return None
    texts = [p.get("text") for p in parts if isinstance(p, dict) and p.get("type") == "output_text"]
    if len(texts) != len(parts) or not all(isinstance(t, str) for t in texts):
        return None
    text = "".join(str(t) for t in texts)
    if not text:
        return None
    usage = obj.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return CachedAnswer(
        text=text,
        finish_reason=finish,
        model=str(obj.get("model", "")),
        prompt_tokens=int(usage.get("input_tokens") or 0),
        completion_tokens=int(usage.get("output_tokens") or 0),
        created=float(obj.get("created_at") or time.time()),
    )


def parse_event(data: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None


class ResponsesCapture:
    """Reads the final response object off a relayed event stream."""

    def __init__(self) -> None:
        self._final: Any = None
        self._spoiled = False

    def feed(self, data: bytes) -> bool:
        event = parse_event(data)
        if event is None or event.get("type") in ("error", "response.failed"):
            self._spoiled = True
        elif event.get("type") in FINAL_EVENTS:
            self._final = event.get("response")
        return False  # no usage-only events in this format

    def answer(self) -> CachedAnswer | None:
        return None if self._spoiled else from_response(self._final)


class ResponsesFormat(WireFormat):
    """``POST /v1/responses``; ``on_response`` is told of each complete response sent."""

    limit_fields = ("max_output_tokens",)

    def __init__(
        self,
        body: dict[str, Any],
        on_response: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__("responses", body)
        self._on_response = on_response
        self._memo: tuple[bytes, dict[str, Any] | None] = (b"", None)
        self._sequence = -1  # the last sequence_number relayed

    def _event(self, data: bytes) -> dict[str, Any] | None:
        """Each payload is looked at several times on its way through: parsed once."""
        if self._memo[0] is not data:
            self._memo = (data, parse_event(data))
        return self._memo[1]

    def _told(self, obj: Any) -> None:
        if self._on_response is not None and isinstance(obj, dict):
            self._on_response(obj)

    def count_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"messages": responses_input.chat_messages(body)}

    def upstream_body(self, body: dict[str, Any], storable: bool) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != "cache"}

    def from_body(self, body: dict[str, Any]) -> CachedAnswer | None:
        return from_response(body)

    def stream_capture(self) -> Capture:
        return ResponsesCapture()

    def is_last(self, data: bytes) -> bool:
        event = self._event(data)
        return event is not None and event.get("type") in FINAL_EVENTS

    def is_content(self, data: bytes, usage_only: bool) -> bool:
        event = self._event(data)
        return event is not None and event.get("type") == "response.output_text.delta"

    def output_tokens(self, data: bytes, usage_only: bool) -> int:
        event = self._event(data)
        if event is None or event.get("type") not in FINAL_EVENTS:
            return 0
        usage = (event.get("response") or {}).get("usage") or {}
        tokens = usage.get("output_tokens") if isinstance(usage, dict) else 0
        return tokens if isinstance(tokens, int) else 0

    def hidden(self, data: bytes, usage_only: bool) -> bool:
        return False

    def relay_json(self, body: Any) -> Any:
        normalize.response(body, self.body)
        self._told(body)
        return body

    def relay_event(self, data: bytes) -> bytes:
        event = self._event(data)
        if event is None:  # not JSON: passed on as the engine sent it
            return b"data: " + data + b"\n\n"
        normalize.response_event(event, self.body)
        if isinstance(event.get("sequence_number"), int):
            self._sequence = event["sequence_number"]
        if event.get("type") in FINAL_EVENTS:
            self._told(event.get("response"))
        return event_bytes(event)

    def error_event(self, message: str) -> bytes:
        return event_bytes(
            {
                "type": "error",
                "code": "stream_interrupted",
                "message": message,
                "param": None,
                "sequence_number": self._sequence + 1,
            }
        )

    def replay_json(self, answer: CachedAnswer) -> dict[str, Any]:
        obj = normalize.response(response_object(self.body, answer), self.body)
        self._told(obj)
        return obj

    def replay_events(self, answer: CachedAnswer) -> Iterator[bytes]:
        for event in as_events(self.body, answer):
            normalize.response_event(event, self.body)
            if event["type"] in FINAL_EVENTS:
                self._told(event["response"])
            yield event_bytes(event)
