"""Server-sent events as OpenAI streams them: ``data: <json>`` blocks, ending with ``[DONE]``."""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import error_body

DONE = b"[DONE]"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(data: bytes | dict[str, Any]) -> bytes:
    payload = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return b"data: " + payload + b"\n\n"


def error_event(message: str, code: str = "stream_interrupted") -> bytes:
    """What a stream cut mid-way ends with, instead of ``[DONE]``."""
    return event(error_body(message, "server_error", code=code))
