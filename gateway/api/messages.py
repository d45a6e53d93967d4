"""Anthropic's Messages API, ``POST /v1/messages``, through the one request path (cache, scope
rules, Cache-Control, headers, routing, limits, metrics), passed to the engines' own
``/v1/messages`` (vLLM serves it), so that Anthropic SDK clients can use the gateway too.

Anthropic clients send their key as ``x-api-key``; it is read like a bearer key. Errors keep the
gateway's OpenAI shape (the status codes are what Anthropic's SDK acts on).
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.completions import complete
from gateway.api.deps import services
from gateway.api.messages_format import MessagesFormat
from gateway.api.openai_routes import unless_client_leaves
from gateway.api.schemas import (
    MessagesRequest,
    enforce_limits,
    openapi_operation,
    read_json,
    validate_model,
)

router = APIRouter()


@router.post("/v1/messages", openapi_extra=openapi_operation(MessagesRequest))
async def create_message(request: Request) -> Response:
    svc = services(request)
    key = request.headers.get("x-api-key")
    authorization = request.headers.get("authorization") or (f"Bearer {key}" if key else None)
    caller = svc.auth.caller(authorization)
    body = await read_json(request, svc.settings.limits.max_body_bytes)
    parsed = validate_model(MessagesRequest, body)
    enforce_limits(parsed, svc.settings.limits)
    request.state.model = parsed.model
    work = complete(svc, MessagesFormat(body), body, caller, request.headers.get("cache-control"))
    return await unless_client_leaves(request, work)
