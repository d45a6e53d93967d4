"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.completions import complete
from gateway.api.deps import services
from gateway.api.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    enforce_limits,
    openapi_operation,
    read_json,
    validate_model,
)

router = APIRouter()


@router.post("/v1/chat/completions", openapi_extra=openapi_operation(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    svc = services(request)
    caller = svc.auth.caller(request.headers.get("authorization"))
    body = await read_json(request, svc.settings.limits.max_body_bytes)
    parsed = validate_model(ChatCompletionRequest, body)
    enforce_limits(parsed, svc.settings.limits)
    request.state.model = parsed.model
    return await complete(svc, "chat", body, caller, request.headers.get("cache-control"))


@router.post("/v1/completions", openapi_extra=openapi_operation(CompletionRequest))
async def completions(request: Request) -> Response:
    svc = services(request)
    caller = svc.auth.caller(request.headers.get("authorization"))
    body = await read_json(request, svc.settings.limits.max_body_bytes)
    parsed = validate_model(CompletionRequest, body)
    enforce_limits(parsed, svc.settings.limits)
    request.state.model = parsed.model
    return await complete(svc, "completion", body, caller, request.headers.get("cache-control"))


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    svc = services(request)
    svc.auth.caller(request.headers.get("authorization"))
    return {"object": "list", "data": svc.pool.model_cards()}
