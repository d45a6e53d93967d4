"""What the gateway checks in a request body before anything else sees it.

Only the fields the gateway itself relies on are declared; every other field is allowed and is
passed to the engine unchanged (the engine validates what it owns).
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from gateway.config import LimitConfig
from gateway.errors import InvalidRequest, PayloadTooLarge


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(default=1, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    cache: dict[str, Any] | None = None  # the gateway's own extension, never sent to engines


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Body):
    prompt: str | list[str] | list[int] | list[list[int]]


BodyT = TypeVar("BodyT", bound=BaseModel)


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """Reads the body without ever holding more than ``max_bytes`` of it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes.")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def validate_model(model: type[BodyT], body: dict[str, Any]) -> BodyT:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(f"Invalid '{param}': {first['msg']}.", param=param) from exc


def enforce_limits(parsed: ChatCompletionRequest | CompletionRequest, limits: LimitConfig) -> None:
    """The configured hard limits (the engine's context is checked later, on a miss)."""
    if isinstance(parsed, ChatCompletionRequest):
        if len(parsed.messages) > limits.max_messages:
            raise InvalidRequest(
                f"Too many messages: {len(parsed.messages)} > {limits.max_messages}.",
                param="messages",
            )
        chars = sum(_text_length(m.content) for m in parsed.messages)
        field, asked = "messages", parsed.max_completion_tokens or parsed.max_tokens
    else:
        prompt = parsed.prompt
        chars = (
            len(prompt)
            if isinstance(prompt, str)
            else sum(len(p) if isinstance(p, str | list) else 1 for p in prompt)
        )
        field, asked = "prompt", parsed.max_tokens
    if chars > limits.max_prompt_chars:
        raise InvalidRequest(
            f"The prompt is too long: {chars} characters > {limits.max_prompt_chars}.",
            param=field,
            code="prompt_too_long",
        )
    if asked is not None and asked > limits.max_tokens:
        raise InvalidRequest(
            f"max_tokens is too large: {asked} > {limits.max_tokens}.", param="max_tokens"
        )


def _text_length(content: str | list[dict[str, Any]] | None) -> int:
    if isinstance(content, str):
        return len(content)
    return sum(len(str(part.get("text", ""))) for part in content or [])
