"""Assembling an engine's answer, streamed or not, into what the cache stores.

Only a finished single answer is kept: one choice with a ``finish_reason``, non-empty text, no
tool calls. Anything else (errors, cancelled or broken streams) yields None. Which finish
reasons are worth storing ("stop", "length") is the cache's decision (``SemanticCache.keeps``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from gateway.cache.entry import CachedAnswer
from gateway.cache.policy import Kind


def from_body(kind: Kind, body: dict[str, Any]) -> CachedAnswer | None:
    choices = body.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    if kind == "chat":
        message = choice.get("message") or {}
        if message.get("tool_calls"):
            return None
        text = message.get("content")
    else:
        text = choice.get("text")
    return _answer(body, text, choice.get("finish_reason"), body.get("usage"))


class StreamCapture:
    """Fed each SSE data payload while it is relayed; ``answer()`` once the stream is done."""

    def __init__(self, kind: Kind) -> None:
        self._kind = kind
        self._parts: list[str] = []
        self._finish: str | None = None
        self._usage: Any = None
        self._first: dict[str, Any] = {}
        self._done = False
        self._spoiled = False

    def feed(self, data: bytes) -> bool:
        """Takes one payload; True when it is a usage-only chunk (no choices)."""
        if data == b"[DONE]":
            self._done = True
            return False
        try:
            chunk = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._spoiled = True
            return False
        if not isinstance(chunk, dict) or "error" in chunk:
            self._spoiled = True
            return False
        self._first = self._first or chunk
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                self._spoiled = True
            if self._kind == "chat":
                delta = choice.get("delta") or {}
                if delta.get("tool_calls"):
                    self._spoiled = True
                piece = delta.get("content")
            else:
                piece = choice.get("text")
            if isinstance(piece, str):
                self._parts.append(piece)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return bool(chunk.get("usage")) and not chunk.get("choices")

    def answer(self) -> CachedAnswer | None:
        if not self._done or self._spoiled:
            return None
        return _answer(self._first, "".join(self._parts), self._finish, self._usage)


def _answer(envelope: dict[str, Any], text: Any, finish: Any, usage: Any) -> CachedAnswer | None:
    if not isinstance(finish, str) or not finish or not isinstance(text, str) or not text:
        return None
    usage = usage if isinstance(usage, dict) else {}
    return CachedAnswer(
        text=text,
        finish_reason=finish,
        model=str(envelope.get("model", "")),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        created=float(envelope.get("created") or time.time()),
    )
