"""How each OpenAI route's answers look on the wire, for the one request path in completions.py.

The path (cache lookup, coalescing, admission, routing, relay, capture, insert) is the same for
every route; what differs is the engine path, how a complete answer is read from the engine's
JSON or stream, how a cached answer is replayed, and how a relayed answer is normalised to
OpenAI's schema. A ``WireFormat`` is made per request (it knows the request's body).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

from gateway.api import capture, normalize, replay, sse
from gateway.cache.entry import CachedAnswer
from gateway.cache.policy import Kind

LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")
PATHS: dict[Kind, str] = {
    "chat": "/v1/chat/completions",
    "completion": "/v1/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
}


class Capture(Protocol):
    """Fed each relayed SSE payload; ``answer()`` once the stream is done."""

    def feed(self, data: bytes) -> bool:
        """Takes one payload; True when it is a usage-only chunk (no content)."""
        ...

    def answer(self) -> CachedAnswer | None: ...


class WireFormat:
    """Chat completions and legacy completions (the OpenAI chunk format ending with [DONE])."""

    kind: Kind
    path: str
    limit_fields: tuple[str, ...] = LIMIT_FIELDS

    def __init__(self, kind: Kind, body: dict[str, Any]) -> None:
        self.kind = kind
        self.path = PATHS[kind]
        self.body = body
        self.model: str = body["model"]
        self.stream = bool(body.get("stream"))
        self.wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    # -- the engine request --------------------------------------------------------------
    def count_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """What the prompt's tokens are counted from (messages or prompt)."""
        return body

    def upstream_body(self, body: dict[str, Any], storable: bool) -> dict[str, Any]:
        upstream = {k: v for k, v in body.items() if k != "cache"}
        if self.stream and storable:  # usage feeds tokens-saved; hidden if not asked for
            upstream["stream_options"] = {
                **(body.get("stream_options") or {}),
                "include_usage": True,
            }
        return upstream

    # -- reading the engine's answer -----------------------------------------------------
    def from_body(self, body: dict[str, Any]) -> CachedAnswer | None:
        return capture.from_body(self.kind, body)

    def stream_capture(self) -> Capture:
        return capture.StreamCapture(self.kind)

    def is_last(self, data: bytes) -> bool:
        """The payload that ends a complete stream."""
        return data == sse.DONE

    def is_content(self, data: bytes, usage_only: bool) -> bool:
        """A payload that counts as generated output (for time to first token)."""
        return not usage_only and data != sse.DONE

    def output_tokens(self, data: bytes, usage_only: bool) -> int:
        """Completion tokens reported by this payload (0 if it reports none)."""
        if not usage_only:
            return 0
        try:
            return int(json.loads(data)["usage"]["completion_tokens"] or 0)
        except (ValueError, KeyError, TypeError):
            return 0

    def hidden(self, data: bytes, usage_only: bool) -> bool:
        """A payload the gateway asked for and the client did not (the usage chunk)."""
        return usage_only and not self.wants_usage

    # -- what the client gets ------------------------------------------------------------
    def relay_json(self, body: Any) -> Any:
        return normalize.answer(self.kind, body)

    def relay_event(self, data: bytes) -> bytes:
        if data == sse.DONE:
            return sse.event(data)
        return sse.event(normalize.chunk_bytes(self.kind, data))

    def error_event(self, message: str) -> bytes:
        """What a stream cut mid-way ends with (no [DONE] after it)."""
        return sse.error_event(message)

    def replay_json(self, answer: CachedAnswer) -> dict[str, Any]:
        replayed: dict[str, Any] = normalize.answer(
            self.kind, replay.as_json(self.kind, answer, self.model)
        )
        return replayed

    def replay_events(self, answer: CachedAnswer) -> Iterator[bytes]:
        return replay.as_events(self.kind, answer, self.model, self.wants_usage)
