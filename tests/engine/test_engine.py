"""The session's real engine answers with plain text (the tokenizer fix holds end to end)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

BYTE_LEVEL_MARKERS = ("Ġ", "Ċ", "ĉ", "âĢ")
PROMPT = "Write two short sentences about the sea, each on its own line."


def assert_plain_text(text: str) -> None:
    assert text.strip(), "empty answer"
    assert not any(marker in text for marker in BYTE_LEVEL_MARKERS), repr(text)
    assert " " in text, f"no spaces between words: {text!r}"


def test_models_lists_the_served_name(engine: Any) -> None:
    models = httpx.get(f"{engine.url}/v1/models", trust_env=False).json()
    assert engine.model in [m["id"] for m in models["data"]]


def test_chat_answer_is_plain_text(engine: Any) -> None:
    response = httpx.post(
        f"{engine.url}/v1/chat/completions",
        json={
            "model": engine.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 64,
            "temperature": 0,
        },
        timeout=120,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert_plain_text(choice["message"]["content"])
    assert choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] > 0


def test_streamed_answer_is_plain_text(engine: Any) -> None:
    pieces: list[str] = []
    request = {
        "model": engine.model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 64,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{engine.url}/v1/chat/completions", json=request, timeout=120, trust_env=False
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line.removeprefix("data: "))["choices"][0]["delta"]
            pieces.append(delta.get("content") or "")
    assert len([p for p in pieces if p]) > 1, "expected the answer in several chunks"
    assert_plain_text("".join(pieces))
