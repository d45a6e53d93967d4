"""What the gateway checks in a request body before anything else sees it.

Only the fields the gateway itself relies on are declared; every other field is allowed and is
passed to the engine unchanged (the engine validates what it owns).
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from gateway.config import LimitConfig
from gateway.errors import InvalidRequest, PayloadTooLarge


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    cache: dict[str, Any] | None = None  # the gateway's own extension, never sent to engines


class _Body(_Common):
    n: int = Field(default=1, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Body):
    prompt: str | list[str] | list[int] | list[list[int]]


class ResponsesRequest(_Common):
    """``POST /v1/responses``: the fields the gateway itself reads."""

    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    previous_response_id: str | None = Field(default=None, min_length=1)
    store: bool | None = None


class MessagesRequest(_Common):
    """``POST /v1/messages`` (Anthropic's Messages API): the fields the gateway reads."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[dict[str, Any]] | None = None


BodyT = TypeVar("BodyT", bound=BaseModel)
MAX_JSON_DEPTH = 64  # a tool's JSON schema is the deepest thing in real requests: ~10 levels
_TOO_DEEP = f"The request body is nested deeper than {MAX_JSON_DEPTH} levels."


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
        body = json.loads(b"".join(chunks), parse_constant=_no_constant, parse_float=_finite)
    except RecursionError as exc:
        raise InvalidRequest(_TOO_DEEP) from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN, huge integers
        raise InvalidRequest(f"The request body is not valid JSON: {exc}"[:300]) from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    _check_json(body)
    return body


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:20]} is out of range")
    return number


def _check_json(body: dict[str, Any]) -> None:
    """Nesting at most MAX_JSON_DEPTH deep (deeper would exhaust the recursion of the code that
    keys, hashes and forwards the body) and no lone UTF-16 surrogate (a \\udXXX escape without
    its pair: not encodable as UTF-8, so neither forwardable nor storable)."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(_TOO_DEEP)
        if isinstance(value, dict):
            stack.extend((key, depth) for key in value)
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidRequest("The request body holds a lone UTF-16 surrogate.") from exc


_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}
_SSE_EVENT = {  # one event: a JSON chunk, [DONE] at the end, or an error object mid-way
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}},
}
_ERRORS = {
    "400": "Invalid request (bad JSON, a field out of range, over a limit, a prompt too long).",
    "401": "Missing or unknown API key.",
    "404": "Unknown model.",
    "413": "Request body over limits.max_body_bytes.",
    "429": "Rate limited or every engine busy: retry after the Retry-After header's seconds.",
    "503": "No engine could answer.",
    "504": "Cache-Control: only-if-cached and no cached answer.",
}


def openapi_operation(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI fields of a route that reads its body by hand (``read_json``): the body's schema
    from ``model`` (its ``$defs`` inlined) and the answers. Documentation only: parsing is not
    affected."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    errors = {"content": {"application/json": {"schema": _ERROR_SCHEMA}}}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(schema)}},
        },
        "responses": {
            "200": {
                "description": "The answer as JSON, or as server-sent events when stream is true.",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/event-stream": {"itemSchema": _SSE_EVENT},  # OpenAPI 3.2 style
                },
            },
            **{code: {"description": text, **errors} for code, text in _ERRORS.items()},
        },
    }


def stored_response_errors() -> dict[int | str, dict[str, Any]]:
    """The documented errors of the routes that read a stored response (OpenAPI only)."""
    errors = {"content": {"application/json": {"schema": _ERROR_SCHEMA}}}
    return {
        "401": {"description": _ERRORS["401"], **errors},
        "404": {"description": "No stored response with this id for this caller.", **errors},
    }


def validate_model(model: type[BodyT], body: dict[str, Any]) -> BodyT:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(f"Invalid '{param}': {first['msg']}.", param=param) from exc


def enforce_limits(
    parsed: ChatCompletionRequest | CompletionRequest | MessagesRequest, limits: LimitConfig
) -> None:
    """The configured hard limits (the engine's context is checked later, on a miss)."""
    if isinstance(parsed, MessagesRequest):
        chat = ChatCompletionRequest.model_construct(
            model=parsed.model, messages=parsed.messages, max_tokens=parsed.max_tokens
        )
        enforce_limits(chat, limits)
        if _text_length(parsed.system) > limits.max_prompt_chars:
            raise InvalidRequest("The system prompt is too long.", param="system")
        return
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


def enforce_response_limits(parsed: ResponsesRequest, limits: LimitConfig) -> None:
    """The configured hard limits for a Responses request (its input items count as messages;
    a follow-up's stored history is not counted here, the engine's context still bounds it)."""
    items = [parsed.input] if isinstance(parsed.input, str) else parsed.input
    if len(items) > limits.max_messages:
        raise InvalidRequest(
            f"Too many input items: {len(items)} > {limits.max_messages}.", param="input"
        )
    chars = len(parsed.instructions or "") + sum(
        len(item) if isinstance(item, str) else _text_length(item.get("content")) for item in items
    )
    if chars > limits.max_prompt_chars:
        raise InvalidRequest(
            f"The prompt is too long: {chars} characters > {limits.max_prompt_chars}.",
            param="input",
            code="prompt_too_long",
        )
    asked = parsed.max_output_tokens
    if asked is not None and asked > limits.max_tokens:
        raise InvalidRequest(
            f"max_output_tokens is too large: {asked} > {limits.max_tokens}.",
            param="max_output_tokens",
        )


def _text_length(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if not isinstance(content, list):
        return 0
    return sum(len(str(part.get("text", ""))) for part in content if isinstance(part, dict))
