"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.api import sse
from gateway.api.deps import Services, services
from gateway.api.schemas import ChatCompletionRequest, CompletionRequest, read_json, validate
from gateway.routing.upstream import StreamInterrupted, UpstreamStream

log = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, svc.settings.limits.max_body_bytes)
    parsed = validate(ChatCompletionRequest, body)
    return await _forward(svc, "/v1/chat/completions", body, parsed.model, parsed.stream)


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, svc.settings.limits.max_body_bytes)
    parsed = validate(CompletionRequest, body)
    return await _forward(svc, "/v1/completions", body, parsed.model, parsed.stream)


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": services(request).pool.model_cards()}


async def _forward(
    svc: Services, path: str, body: dict[str, Any], model: str, stream: bool
) -> Response:
    svc.pool.check_model(model)
    upstream_body = {k: v for k, v in body.items() if k != "cache"}
    if not stream:
        return JSONResponse(await svc.upstream.complete(path, upstream_body, model))
    opened = await svc.upstream.stream(path, upstream_body, model)
    return StreamingResponse(_relay(opened), media_type="text/event-stream", headers=sse.HEADERS)


async def _relay(stream: UpstreamStream) -> AsyncIterator[bytes]:
    """Relays chunk by chunk. If the client goes away the generator is cancelled and the
    upstream response is closed, which makes vLLM abort the request."""
    try:
        async for data in stream.events():
            yield sse.event(data)
    except StreamInterrupted as exc:
        log.warning("stream from %s cut mid-way: %s", stream.backend.url, exc)
        yield sse.error_event(str(exc))
    finally:
        await stream.aclose()
