"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models
(/v1/responses is in responses.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import normalize
from gateway.api.completions import complete
from gateway.api.deps import services
from gateway.api.formats import WireFormat
from gateway.api.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    enforce_limits,
    openapi_operation,
    read_json,
    validate_model,
)
from gateway.cache.policy import Kind

router = APIRouter()
CLIENT_CLOSED = 499  # nginx's "client closed request": logged and counted, never received


async def unless_client_leaves(request: Request, work: Coroutine[Any, Any, Response]) -> Response:
    """Runs ``work`` (queueing, the engine call, or a stream's start) unless the client hangs
    up first: then it is cancelled, which closes the engine request (vLLM aborts it) or leaves
    the admission queue. Starlette cancels nothing for a client that leaves before the response
    starts; a streaming response watches for the disconnect itself once it has started."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return Response(status_code=CLIENT_CLOSED)
    return task.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


@router.post("/v1/chat/completions", openapi_extra=openapi_operation(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    return await _completion(request, "chat", ChatCompletionRequest)


@router.post("/v1/completions", openapi_extra=openapi_operation(CompletionRequest))
async def completions(request: Request) -> Response:
    return await _completion(request, "completion", CompletionRequest)


async def _completion(
    request: Request, kind: Kind, schema: type[ChatCompletionRequest | CompletionRequest]
) -> Response:
    svc = services(request)
    caller = svc.auth.caller(request.headers.get("authorization"))
    body = await read_json(request, svc.settings.limits.max_body_bytes)
    parsed = validate_model(schema, body)
    enforce_limits(parsed, svc.settings.limits)
    request.state.model = parsed.model
    return await unless_client_leaves(
        request,
        complete(svc, WireFormat(kind, body), body, caller, request.headers.get("cache-control")),
    )


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    svc = services(request)
    svc.auth.caller(request.headers.get("authorization"))
    return {"object": "list", "data": [normalize.model_card(c) for c in svc.pool.model_cards()]}
